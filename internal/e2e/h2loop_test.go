package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluice-lb/sluice/internal/config"
)

// HTTP/2 streams that the event loops forward themselves (engine loop:
// no request body, a pool of plain HTTP/1.1 backends): the same answers as
// any other stream gets, with no goroutine per stream.

// h2cOn starts sluice with an h2c listener on engine (the suite's when
// empty) in front of the pool's backends at urls.
func h2cOn(t *testing.T, engine string, urls ...string) *sluice {
	t.Helper()
	cfg := oneListener(poolAt("web", urls...))
	cfg.Listeners[0].H2C = true
	if engine != "" {
		cfg.Listeners[0].Engine = engine
	}
	return startSluice(t, cfg)
}

// stacksWith counts the goroutines whose stack holds fn.
func stacksWith(fn string) int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			n++
		}
	}
	return n
}

// TestHTTP2StreamsOnTheLoopRunNoHandler: while 20 streams of one
// connection wait for their backend, the loops run no handler goroutine
// for them (engine h1 runs one each).
func TestHTTP2StreamsOnTheLoopRunNoHandler(t *testing.T) {
	if !loopable("public") {
		t.Skip("e2e: the event loops serve only Linux listeners of engine loop")
	}
	const n = 20
	for _, tc := range []struct {
		engine   string
		handlers int
	}{{"loop", 0}, {"h1", n}} {
		t.Run(tc.engine, func(t *testing.T) {
			be := startBackend(t, "b1")
			s := h2cOn(t, tc.engine, be.URL())
			c := h2cClient(t)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := tryGet(c, fmt.Sprintf("%s/delay/1500ms?i=%d", s.URL("public"), i))
					if err != nil || r.Status != 200 {
						t.Errorf("stream %d: %v %d", i, err, r.Status)
					}
				}()
			}
			eventually(t, 10*time.Second, "every request waits at the backend", func() bool {
				return stacksWith("backend.handleDelay") >= n
			})
			if got := stacksWith("h2.(*conn).runHandler"); got != tc.handlers {
				t.Errorf("%d streams waiting for their backend have %d handler goroutines, want %d", n, got, tc.handlers)
			}
			wg.Wait()
		})
	}
}

// TestHTTP2OnTheLoopAnswers: what a client gets through a stream the loop
// forwards: fixed-length, chunked (with trailers), until-close and empty
// bodies, HEAD, the forwarding fields the backend sees, and sluice's own
// answer when the backend is down.
func TestHTTP2OnTheLoopAnswers(t *testing.T) {
	be := startBackend(t, "b1")
	s := h2cOn(t, "", be.URL())
	c := h2cClient(t)
	base := s.URL("public")

	r := get(t, c, base+"/bytes/1048576")
	if r.Status != 200 || len(r.Body) != 1<<20 || r.Body[:26] != "abcdefghijklmnopqrstuvwxyz" || r.Body[1<<20-1] != 'a'+byte((1<<20-1)%26) {
		t.Errorf("1 MiB: %d, %d bytes", r.Status, len(r.Body))
	}
	if id := r.Header.Get("X-Request-Id"); id == "" {
		t.Error("no X-Request-Id on the response")
	}

	resp, err := c.Get(base + "/stream?n=5")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || strings.Count(string(body), "chunk ") != 5 || resp.Header.Get("Transfer-Encoding") != "" {
		t.Errorf("chunked: %v %d %q", err, resp.StatusCode, body)
	}

	resp, err = c.Get(base + "/trailers")
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(resp.Trailer) == 0 {
		t.Errorf("trailers: %v %d %q, trailers %v", err, resp.StatusCode, body, resp.Trailer)
	}
	for k, vv := range resp.Trailer {
		if len(vv) == 0 || vv[0] == "" {
			t.Errorf("trailer %s has no value: %v", k, resp.Trailer)
		}
	}

	req, _ := http.NewRequest("HEAD", base+"/bytes/100", nil)
	if r := do(t, c, req); r.Status != 200 || r.Body != "" || r.Header.Get("Content-Length") != "100" {
		t.Errorf("HEAD: %d %q, Content-Length %q", r.Status, r.Body, r.Header.Get("Content-Length"))
	}
	if r := get(t, c, base+"/status/204"); r.Status != 204 || r.Body != "" {
		t.Errorf("204: %d %q", r.Status, r.Body)
	}

	req, _ = http.NewRequest("GET", base+"/echo?x=1", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	req.Header.Set("X-Request-Id", "mine-123")
	r = do(t, c, req)
	e := parseEcho(t, r.Body)
	if got := e.Headers.Get("Cookie"); got != "a=1; b=2" {
		t.Errorf("the backend saw Cookie %q, want the two joined", got)
	}
	if got := e.Headers.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	if got := e.Headers.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got := e.Headers.Get("X-Request-Id"); got != "mine-123" || r.Header.Get("X-Request-Id") != "mine-123" {
		t.Errorf("X-Request-Id: backend %q, client %q", got, r.Header.Get("X-Request-Id"))
	}
	if e.Raw["host"] != s.Addr("public") {
		t.Errorf("the backend saw Host %v, want the :authority %s", e.Raw["host"], s.Addr("public"))
	}

	be.Stop()
	r = get(t, c, base+"/")
	if r.Status != 502 && r.Status != 503 || r.Header.Get("X-Request-Id") == "" || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("backend down: %d %q %v", r.Status, r.Body, r.Header)
	}
}

// TestHTTP2OnTheLoopBackendEndings: a body that ends with the backend's
// connection reaches the client whole; one cut short resets the stream,
// and the connection's other streams go on.
func TestHTTP2OnTheLoopBackendEndings(t *testing.T) {
	sb := startScriptBackend(t, func(bc *scriptConn, req *http.Request) {
		switch req.URL.Path {
		case "/close":
			bc.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
			bc.c.Close()
		case "/short":
			bc.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
			bc.c.Close()
		default:
			bc.write(responseFor(req.URL.Path, 0))
		}
	})
	s := h2cOn(t, "", sb.URL)
	c := h2cClient(t)
	base := s.URL("public")
	if r := get(t, c, base+"/close"); r.Status != 200 || r.Body != "until the end" {
		t.Errorf("until close: %d %q", r.Status, r.Body)
	}
	resp, err := c.Get(base + "/short")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a body cut short by the backend read as whole")
	}
	if r := get(t, c, base+"/after"); r.Status != 200 || r.Body != answerFor("/after", 0) {
		t.Errorf("the next stream: %d %q", r.Status, r.Body)
	}
}

// TestHTTP2OnTheLoopKeepsTheWindows: a client that gives a stream a
// 1,000-byte window and grants more only as it reads gets a 64 KiB answer
// whole, in DATA frames that never overrun what it granted.
func TestHTTP2OnTheLoopKeepsTheWindows(t *testing.T) {
	be := startBackend(t, "b1")
	s := h2cOn(t, "", be.URL())
	nc, err := net.Dial("tcp", s.Addr("public"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	io.WriteString(nc, http2.ClientPreface)
	const window = 1000
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/bytes/65536"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	streamWin, connWin := int64(window), int64(65535)
	got, status := 0, ""
	for done := false; !done; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
			done = f.StreamEnded()
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		case *http2.DataFrame:
			n := int64(len(f.Data()))
			if streamWin -= n; streamWin < 0 {
				t.Fatalf("a DATA frame of %d bytes overran the stream's window by %d", n, -streamWin)
			}
			if connWin -= n; connWin < 0 {
				t.Fatalf("a DATA frame overran the connection's window by %d", -connWin)
			}
			got += int(n)
			done = f.StreamEnded()
			if n > 0 && !done {
				// Granted only as read: a little less than taken.
				grant := uint32(n)
				fr.WriteWindowUpdate(1, grant)
				fr.WriteWindowUpdate(0, grant)
				streamWin += int64(grant)
				connWin += int64(grant)
			}
		}
	}
	if status != "200" || got != 65536 {
		t.Errorf("status %q, %d bytes, want 200 and 65536", status, got)
	}
}

// TestHTTP2OnTheLoopAnswersAtOnce: a stream that sluice answers itself
// as it starts (no route: 404) gets its answer, and the connection goes
// on; streams are counted as HTTP/2.0.
func TestHTTP2OnTheLoopAnswersAtOnce(t *testing.T) {
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	cfg.Listeners[0].Pool = ""
	cfg.Listeners[0].Routes = []config.Route{{Host: "app.example", Pool: "web"}}
	s := startSluice(t, cfg)
	c := h2cClient(t)
	for i := range 3 {
		r := get(t, c, s.URL("public")+"/nowhere")
		if r.Status != 404 || r.Body != "no route for this request\n" || r.Header.Get("X-Request-Id") == "" {
			t.Errorf("request %d with no route: %d %q %v", i, r.Status, r.Body, r.Header)
		}
	}
	req, _ := http.NewRequest("GET", s.URL("public")+"/", nil)
	req.Host = "app.example"
	if r := do(t, c, req); r.Status != 200 || !strings.HasPrefix(r.Body, "Hello from b1") {
		t.Errorf("routed: %d %q", r.Status, r.Body)
	}
	if got := s.metric(`sluice_listener_requests_total{code_class="4xx",listener="public",protocol="HTTP/2.0"}`); got != 3 {
		t.Errorf("HTTP/2 404s counted: %v, want 3", got)
	}
	if got := s.metric(`sluice_listener_requests_total{code_class="2xx",listener="public",protocol="HTTP/2.0"}`); got != 1 {
		t.Errorf("HTTP/2 2xx counted: %v, want 1", got)
	}
}

// TestHTTP2OnTheLoopShutdownLetsStreamsFinish: a shutdown sends GOAWAY
// and lets a stream the loop forwards finish its answer.
func TestHTTP2OnTheLoopShutdownLetsStreamsFinish(t *testing.T) {
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	cfg.ShutdownTimeout = 10 * time.Second
	s := startSluice(t, cfg)
	c := h2cClient(t)
	got := make(chan reply, 1)
	go func() {
		r, err := tryGet(c, s.URL("public")+"/delay/700ms")
		if err != nil {
			t.Errorf("the stream in flight at the shutdown: %v", err)
		}
		got <- r
	}()
	eventually(t, 10*time.Second, "the request waits at the backend", func() bool {
		return stacksWith("backend.handleDelay") >= 1
	})
	s.Stop()
	if r := <-got; r.Status != 200 {
		t.Errorf("the stream in flight at the shutdown: %d %q", r.Status, r.Body)
	}
}

// TestHTTP2OnTheLoopClientReset: a client that resets a stream in the
// middle of its answer ends it there (the backend's connection is not used
// again with the rest of that answer on it); the connection's next streams
// get their own answers.
func TestHTTP2OnTheLoopClientReset(t *testing.T) {
	be := startBackend(t, "b1")
	s := h2cOn(t, "", be.URL())
	c := h2cClient(t)
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL("public")+"/stream?n=5000&interval=10ms", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 8)
		if _, err := io.ReadFull(resp.Body, line); err != nil || string(line) != "chunk 1\n" {
			t.Fatalf("round %d: first line %q, %v", i, line, err)
		}
		cancel() // RST_STREAM CANCEL
		resp.Body.Close()
		for j := range 5 {
			r := get(t, c, fmt.Sprintf("%s/echo?round=%d&j=%d", s.URL("public"), i, j))
			if e := parseEcho(t, r.Body); r.Status != 200 || !strings.Contains(fmt.Sprint(e.Raw["query"]), fmt.Sprintf("j:[%d]", j)) {
				t.Fatalf("round %d, request %d after the reset: %d %q", i, j, r.Status, r.Body)
			}
		}
	}
	// Nothing of the reset streams is left on the loops.
	eventually(t, 10*time.Second, "the backend's streams end", func() bool {
		return stacksWith("backend.handleStream") == 0
	})
}

// TestHTTP2BodyCutByABackendReset: a body framed by the backend's close
// (no Content-Length, not chunked) whose connection the backend resets
// part way does not reach an HTTP/2 client as whole: the stream is reset,
// on the loop as on a worker.
func TestHTTP2BodyCutByABackendReset(t *testing.T) {
	for _, engine := range []string{"loop", "h1"} {
		t.Run(engine, func(t *testing.T) {
			sb := startScriptBackend(t, func(bc *scriptConn, req *http.Request) {
				bc.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart of the body")
				time.Sleep(300 * time.Millisecond)
				bc.c.(*net.TCPConn).SetLinger(0) // close with RST
				bc.c.Close()
			})
			s := h2cOn(t, engine, sb.URL)
			c := h2cClient(t)
			resp, err := c.Get(s.URL("public") + "/x")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("engine %s: a body cut by the backend's reset read as whole: %q", engine, body)
			} else {
				t.Logf("engine %s: %q, %v", engine, body, err)
			}
		})
	}
}
