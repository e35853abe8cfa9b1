package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sluice-lb/sluice/internal/config"
)

// The tests of this file hold sluice to the parts of issue 9 that concern
// the contract of DESIGN.md: Expect: 100-continue is end to end (the backend
// decides), the request timeout holds while a request waits in the
// max_connections_per_backend queue, a WebSocket tunnel opened around a
// reload that removes its backend is retired by that reload, and the access
// log keeps the query string. Every wait is bounded; no assertion depends on
// a tight duration, only on the order of two events far apart.

// c9Head is a request head a scripted backend read.
type c9Head struct {
	Conn   int // which accepted connection (1, 2, ...)
	Target string
	Header http.Header
}

// c9Backend is a scripted backend: every request read (with
// http.ReadRequest) on any of its connections is recorded and handed to
// handle, which writes the answer and reads (or, deliberately, does not
// read) the body; the connection is served until handle returns false or
// the next read fails. Nothing but handle decides what is read, so bytes
// that a proxy writes after a request the backend treated as complete are
// read as the next request, as a careless backend would.
type c9Backend struct {
	t      testing.TB
	ln     net.Listener
	handle func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool
	wg     sync.WaitGroup

	mu    sync.Mutex // guards conns, heads and n
	conns map[net.Conn]struct{}
	heads []c9Head
	n     int
}

func startC9Backend(t testing.TB, handle func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool) *c9Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &c9Backend{t: t, ln: ln, handle: handle, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.stop)
	return b
}

// URL is the backend's address as a pool lists it.
func (b *c9Backend) URL() string { return "http://" + b.ln.Addr().String() }

func (b *c9Backend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.n++
		n := b.n
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(c, n)
	}
}

func (b *c9Backend) serve(c net.Conn, n int) {
	defer b.wg.Done()
	defer func() {
		c.Close()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
	}()
	br := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	for {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.heads = append(b.heads, c9Head{Conn: n, Target: req.RequestURI, Header: req.Header.Clone()})
		b.mu.Unlock()
		keep := b.handle(req, w, br)
		if w.Flush() != nil || !keep {
			return
		}
	}
}

// Heads returns every request head read so far.
func (b *c9Backend) Heads() []c9Head {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]c9Head(nil), b.heads...)
}

// stop closes the listener and every connection and waits (bounded) for
// the goroutines.
func (b *c9Backend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.t.Errorf("scripted backend: connections still served 10s after it was stopped")
	}
}

// c9Answer writes a 200 whose body names the request target ("for
// /after"), after reading the request's body.
func c9Answer(req *http.Request, w *bufio.Writer) bool {
	io.Copy(io.Discard, req.Body)
	body := "for " + req.RequestURI
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return true
}

// c9Expects reports whether req carries Expect: 100-continue.
func c9Expects(req *http.Request) bool {
	return strings.EqualFold(strings.TrimSpace(req.Header.Get("Expect")), "100-continue")
}

const c9UploadSize = 100000

// c9UploadHead is the head of a POST whose 100000-byte body the client
// holds back until it is told to go on.
var c9UploadHead = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(c9UploadSize) +
	"\r\nExpect: 100-continue\r\n\r\n"

// c9SmuggledBody is a 100000-byte upload body that is itself a complete
// request for /smuggled (its own body pads it to size): if the body ever
// reaches a backend as a request, or sluice reads it as the client's next
// request, that shows.
func c9SmuggledBody() string {
	head := "GET /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: "
	for digits := 1; digits < 7; digits++ {
		pad := c9UploadSize - len(head) - digits - 4
		if len(strconv.Itoa(pad)) == digits {
			return head + strconv.Itoa(pad) + "\r\n\r\n" + strings.Repeat("s", pad)
		}
	}
	panic("no padding fits")
}

// c9ReadResponse reads one response off br within d; it returns the error
// as is (a timeout, EOF or reset).
func c9ReadResponse(c net.Conn, br *bufio.Reader, method string, d time.Duration) (*http.Response, string, error) {
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

func c9IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// c9CheckExpectForwarded fails t unless the backend read the /upload head
// with its Expect: 100-continue field (DESIGN.md: sluice forwards the head
// with the expectation).
func c9CheckExpectForwarded(t *testing.T, be *c9Backend) {
	t.Helper()
	for _, h := range be.Heads() {
		if h.Target == "/upload" {
			if got := h.Header.Values("Expect"); len(got) != 1 || !strings.EqualFold(got[0], "100-continue") {
				t.Errorf("the backend read the /upload head with Expect %q, want exactly [100-continue]", got)
			}
			return
		}
	}
	t.Errorf("the backend never read the /upload head; it read %v", be.Heads())
}

// TestContract9ExpectContinueBackendRefuses: a backend that answers 401 (or
// 413) to an Expect: 100-continue head without reading the body gets that
// answer to the client although the client never sent its body, and nothing
// desyncs afterwards: the client connection is closed, or the body the
// client then sends anyway is accounted for and its next request gets its
// own answer; the held-back body never reaches a backend as a request.
func TestContract9ExpectContinueBackendRefuses(t *testing.T) {
	t.Parallel()
	for _, code := range []int{401, 413} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			refusal := fmt.Sprintf("refused by the backend with %d", code)
			be := startC9Backend(t, func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool {
				if !c9Expects(req) {
					return c9Answer(req, w)
				}
				// The body is neither read nor discarded: the next bytes on
				// this connection are read as the next request.
				fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
					code, http.StatusText(code), len(refusal), refusal)
				return true
			})
			s := startSluice(t, oneListener(poolAt("web", be.URL())))
			addr := s.Addr("public")

			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, c9UploadHead); err != nil {
				t.Fatalf("write the head: %v", err)
			}
			br := bufio.NewReader(c)
			resp, body, err := c9ReadResponse(c, br, http.MethodPost, 5*time.Second)
			if err != nil {
				t.Fatalf("no answer within 5s to a POST with Expect: 100-continue whose body is held back "+
					"(the backend answered %d at once): %v", code, err)
			}
			if resp.StatusCode == http.StatusContinue {
				t.Fatalf("the client got 100 Continue before the backend's %d: sluice must not invite the body "+
					"the backend refuses (DESIGN.md: the backend decides)", code)
			}
			if resp.StatusCode != code || body != refusal {
				t.Fatalf("the client got %d %q, want the backend's %d %q", resp.StatusCode, body, code, refusal)
			}
			c9CheckExpectForwarded(t, be)

			// The client sends the body anyway, then a GET on the same
			// connection: whatever sluice does, the GET gets its own answer
			// or the connection ends.
			t.Logf("the %d came with Connection: close = %v", code, resp.Close)
			wrote := make(chan error, 1)
			go func() {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, err := io.WriteString(c, c9SmuggledBody()+"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
				wrote <- err
			}()
			resp, body, err = c9ReadResponse(c, br, http.MethodGet, 5*time.Second)
			switch {
			case err == nil:
				if resp.StatusCode != 200 || body != "for /after" {
					t.Errorf("after the %d, the body sent anyway and a GET /after on the same connection: "+
						"the GET got %d %q, want 200 \"for /after\" (or the connection closed)", code, resp.StatusCode, body)
				}
			case c9IsTimeout(err):
				t.Errorf("after the %d, the body sent anyway and a GET /after: no answer and no close within 5s", code)
			default:
				t.Logf("after the %d sluice closed the client connection (%v)", code, err)
			}
			c.Close()
			<-wrote

			// Fresh clients get their own answers.
			hc := newClient(t)
			for i := range 3 {
				path := fmt.Sprintf("/victim%d", i)
				r := get(t, hc, s.URL("public")+path)
				if r.Status != 200 || r.Body != "for "+path {
					t.Errorf("GET %s after the refused upload: %d %q, want 200 %q", path, r.Status, r.Body, "for "+path)
				}
			}
			for _, h := range be.Heads() {
				if h.Target == "/smuggled" {
					t.Errorf("a backend read the upload's body as a request (/smuggled, connection %d): "+
						"a body the backend refused must never follow the head on that connection", h.Conn)
				}
			}
		})
	}
}

// TestContract9ExpectContinueBackendAccepts: a backend that answers 100
// Continue and then reads the body: the client gets that 100 Continue (and
// nothing before the backend has sent it), sends its body, and gets the
// backend's 200 over exactly that body.
func TestContract9ExpectContinueBackendAccepts(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	gate := make(chan struct{})
	be := startC9Backend(t, func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool {
		if !c9Expects(req) {
			return c9Answer(req, w)
		}
		select {
		case arrived <- struct{}{}:
		default:
		}
		select { // the test lets the backend answer
		case <-gate:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, "HTTP/1.1 100 Continue\r\n\r\n")
		if w.Flush() != nil {
			return false
		}
		return rbSum(req, w)
	})
	s := startSluice(t, oneListener(poolAt("web", be.URL())))

	upload := make([]byte, c9UploadSize)
	for i := range upload {
		upload[i] = byte(i*7 + i/251)
	}
	sum := sha256.Sum256(upload)
	want := fmt.Sprintf("len=%d sha256=%s", c9UploadSize, hex.EncodeToString(sum[:]))

	c, err := net.DialTimeout("tcp", s.Addr("public"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, c9UploadHead); err != nil {
		t.Fatalf("write the head: %v", err)
	}
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("the backend did not get the head within 5s while the client holds its body back " +
			"(DESIGN.md: sluice forwards the head with the expectation)")
	}
	// The backend has not answered yet: nothing may reach the client.
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	early := false
	if _, err := br.Peek(1); err == nil {
		early = true
		resp, _, err := c9ReadResponse(c, br, http.MethodPost, time.Second)
		if err != nil {
			t.Errorf("before the backend answered, the client got bytes that are not a response: %v", err)
		} else {
			t.Errorf("before the backend answered, the client got %d %s: sluice must relay the backend's "+
				"100 Continue, not send its own (DESIGN.md: the backend decides)", resp.StatusCode, resp.Status)
		}
	} else if !c9IsTimeout(err) {
		close(gate)
		t.Fatalf("before the backend answered, the client connection failed: %v", err)
	}
	close(gate)
	if !early {
		resp, _, err := c9ReadResponse(c, br, http.MethodPost, 5*time.Second)
		switch {
		case err != nil:
			t.Errorf("the backend's 100 Continue did not reach the client within 5s: %v", err)
		case resp.StatusCode != http.StatusContinue:
			t.Fatalf("the client got %d %s, want the backend's 100 Continue", resp.StatusCode, resp.Status)
		}
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(upload); err != nil {
		t.Fatalf("write the body: %v", err)
	}
	resp, body, err := c9ReadResponse(c, br, http.MethodPost, 10*time.Second)
	if err != nil {
		t.Fatalf("no final answer within 10s after the body: %v", err)
	}
	if resp.StatusCode != 200 || body != want {
		t.Errorf("final answer %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	c9CheckExpectForwarded(t, be)
}

// TestContract9RequestTimeoutWhileQueued: with max_connections_per_backend 1
// and timeouts.request 300ms, a request queued behind the one that holds
// the backend's only slot gets 504 once its own request timeout expires,
// not a 502 after the slot frees. The slot is held by a request the backend
// takes 2s to answer (the first request's own timeout may free the slot
// earlier: the second then still has no time left, 504 either way), and by
// a WebSocket tunnel, which no request timeout ends. In both cases the 504
// must come well before the slot holder's end (the backend's 2s, the
// tunnel's close by the test).
func TestContract9RequestTimeoutWhileQueued(t *testing.T) {
	t.Parallel()
	var (
		mu       sync.Mutex
		arrivals = map[string]chan struct{}{}
		slowEnd  = make(chan struct{}) // closed when the backend's /slow answer is written
	)
	signal := func(path string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if arrivals[path] == nil {
			arrivals[path] = make(chan struct{})
		}
		return arrivals[path]
	}
	var slowOnce, wsOnce sync.Once
	bctx, bcancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			first := false
			slowOnce.Do(func() { first = true; close(signal("/slow")) })
			select { // not tied to the request: the 2s are the backend's own
			case <-time.After(2 * time.Second):
			case <-bctx.Done():
			}
			if first {
				close(slowEnd)
			}
			io.WriteString(w, "slow")
		case "/ws":
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
			if err != nil {
				return
			}
			defer c.CloseNow()
			wsOnce.Do(func() { close(signal("/ws")) })
			c.Read(bctx) // until the client (or the test's end) closes it
		default:
			io.WriteString(w, "for "+r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(bcancel) // runs before srv.Close

	p := poolAt("web", srv.URL)
	p.MaxConnectionsPerBackend = 1
	p.Timeouts.Request = 300 * time.Millisecond
	s := startSluice(t, oneListener(p))
	url := s.URL("public")

	type result struct {
		status int
		body   string
		err    error
		at     time.Time
	}
	fetch := func(path string) chan result {
		ch := make(chan result, 1)
		go func() {
			r, err := tryGet(newClient(t), url+path)
			ch <- result{r.Status, r.Body, err, time.Now()}
		}()
		return ch
	}

	t.Run("slow response holds the slot", func(t *testing.T) {
		first := fetch("/slow")
		select {
		case <-signal("/slow"):
		case <-time.After(5 * time.Second):
			t.Fatal("the first /slow did not reach the backend within 5s")
		}
		sent := time.Now()
		second := fetch("/slow?queued")
		var r result
		select {
		case r = <-second:
		case <-time.After(10 * time.Second):
			t.Fatal("the queued request got no answer within 10s")
		}
		select {
		case <-slowEnd:
			t.Errorf("the queued request's answer (%d after %v) came only after the slot holder's backend "+
				"answered (2s): the request timeout (300ms) must hold while queued", r.status, r.at.Sub(sent).Round(time.Millisecond))
		default:
		}
		if r.err != nil || r.status != 504 {
			t.Errorf("queued request: %d %q (err %v) after %v, want 504 (timeouts.request 300ms while queued)",
				r.status, r.body, r.err, r.at.Sub(sent).Round(time.Millisecond))
		}
		f := <-first
		t.Logf("the slot holder got %d after the queued request's %d", f.status, r.status)
	})

	t.Run("WebSocket holds the slot", func(t *testing.T) {
		eventually(t, 10*time.Second, "the backend's slot is free again", func() bool {
			r, err := tryGet(newClient(t), url+"/free")
			return err == nil && r.Status == 200
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws", &websocket.DialOptions{HTTPClient: newClient(t)})
		if err != nil {
			t.Fatalf("WebSocket through sluice: %v (response %v)", err, resp)
		}
		defer ws.CloseNow()
		select {
		case <-signal("/ws"):
		case <-time.After(5 * time.Second):
			t.Fatal("the WebSocket did not reach the backend within 5s")
		}
		sent := time.Now()
		second := fetch("/queued")
		var r result
		select {
		case r = <-second:
		case <-time.After(10 * time.Second):
			t.Fatal("the queued request got no answer within 10s")
		}
		if r.err == nil && r.status == 200 {
			t.Skipf("the request went through (%q) while a WebSocket was open on the only slot: "+
				"tunnels do not hold a max_connections_per_backend slot, nothing is queued", r.body)
		}
		if r.err != nil || r.status != 504 {
			t.Errorf("request queued behind a WebSocket: %d %q (err %v) after %v, want 504 (timeouts.request 300ms while queued)",
				r.status, r.body, r.err, r.at.Sub(sent).Round(time.Millisecond))
		}
		ws.Close(websocket.StatusNormalClosure, "done")
	})
}

// c9WSYAML is a config whose pool ws has the one backend given.
func c9WSYAML(backendURL string, grace time.Duration) string {
	return withEngineYAML(fmt.Sprintf("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: ws\n"+
		"pools:\n  - name: ws\n    backends:\n      - {address: %q}\n"+
		"admin: {address: \"127.0.0.1:0\"}\nshutdown_timeout: %s\n", backendURL, grace))
}

// c9WaitTunnelEnd reads from ws until it ends (a close frame or the
// connection's end) and reports whether it did within d.
func c9WaitTunnelEnd(ws *websocket.Conn, d time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return false, err
		}
		return true, err
	}
}

// TestContract9ReloadRetiresTunnelOpenedAroundIt: a WebSocket opened just
// before (or while) a reload removes its backend is closed by that reload
// after the grace period, like every tunnel on a removed backend, whatever
// the moment the 101 reached the client. Twenty upgrades race twenty
// reloads on the demo backend's /ws; then the widest window is held open on
// purpose: the backend accepts the upgrade only after the reload.
func TestContract9ReloadRetiresTunnelOpenedAroundIt(t *testing.T) {
	t.Parallel()
	const grace = 200 * time.Millisecond
	const bound = grace + 3*time.Second
	bs := startBackends(t, "gone", "kept")
	gone, kept := bs[0], bs[1]
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	write := func(backendURL string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(c9WSYAML(backendURL, grace)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(gone.URL())
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	s := startSluice(t, cfg)
	wsURL := "ws://" + s.Addr("public") + "/ws"
	reload := func(backendURL string) {
		t.Helper()
		write(backendURL)
		if err := s.srv.Reload(); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	type dialed struct {
		ws      *websocket.Conn
		backend string
		err     error
	}
	dial := func(ctx context.Context) chan dialed {
		ch := make(chan dialed, 1)
		go func() {
			ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: newClient(t)})
			d := dialed{ws: ws, err: err}
			if resp != nil {
				d.backend = resp.Header.Get("X-Backend")
			}
			ch <- d
		}()
		return ch
	}

	t.Run("racing", func(t *testing.T) {
		const rounds = 20
		onGone, onKept, failed := 0, 0, 0
		for i := range rounds {
			reload(gone.URL())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ch := dial(ctx)
			time.Sleep(time.Duration(i%5) * 300 * time.Microsecond)
			reload(kept.URL())
			d := <-ch
			cancel()
			switch {
			case d.err != nil:
				failed++
				continue
			case d.backend != "gone":
				onKept++
				d.ws.CloseNow()
				continue
			}
			onGone++
			ended, err := c9WaitTunnelEnd(d.ws, bound)
			d.ws.CloseNow()
			if !ended {
				t.Errorf("round %d: a WebSocket on the removed backend is still open %v after the reload that "+
					"removed it (grace %v): the reload did not retire it", i, bound, grace)
			} else if st := websocket.CloseStatus(err); st != -1 && st != websocket.StatusGoingAway {
				t.Errorf("round %d: the retired WebSocket closed with status %d, want 1001 going away or the connection's end", i, st)
			}
		}
		t.Logf("%d rounds: %d tunnels on the removed backend, %d on the kept one, %d upgrades refused", rounds, onGone, onKept, failed)
	})

	t.Run("upgrade answered after the reload", func(t *testing.T) {
		arrived := make(chan struct{}, 1)
		gate := make(chan struct{})
		bctx, bcancel := context.WithCancel(context.Background())
		defer bcancel()
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", "slow-upgrade")
			select {
			case arrived <- struct{}{}:
			default:
			}
			select {
			case <-gate:
			case <-bctx.Done():
				return
			}
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(bctx)
				if err != nil || c.Write(bctx, typ, msg) != nil {
					return
				}
			}
		}))
		defer slow.Close()
		defer bcancel() // before slow.Close

		reload(slow.URL)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ch := dial(ctx)
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the upgrade did not reach the backend within 5s")
		}
		reload(kept.URL()) // removes the backend that holds the upgrade
		close(gate)
		d := <-ch
		if d.err != nil {
			t.Logf("the upgrade answered after its backend was removed was refused: %v", d.err)
			return
		}
		defer d.ws.CloseNow()
		if d.backend != "slow-upgrade" {
			t.Fatalf("the upgrade was answered by %q, want slow-upgrade", d.backend)
		}
		ended, err := c9WaitTunnelEnd(d.ws, bound)
		if !ended {
			t.Errorf("a WebSocket whose 101 came after the reload that removed its backend is still open %v "+
				"later (grace %v): the reload did not retire it", bound, grace)
		} else if st := websocket.CloseStatus(err); st != -1 && st != websocket.StatusGoingAway {
			t.Errorf("the retired WebSocket closed with status %d, want 1001 going away or the connection's end", st)
		}
	})
}

// TestContract9AccessLogKeepsTheQuery: the combined access log writes the
// request line with its query ("GET /p?q=1 HTTP/1.1"), and a JSON entry
// carries the query in its "query" field (accesslog.Entry.Query).
func TestContract9AccessLogKeepsTheQuery(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "a")
	targets := []struct{ target, path, query string }{
		{"/p?q=1", "/p", "q=1"},
		{"/p?q=a%20b&r=2", "/p", "q=a%20b&r=2"},
		{"/plain", "/plain", ""},
	}
	for _, format := range []string{"combined", "json"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "access.log")
			cfg := oneListener(poolOf("web", be))
			cfg.AccessLog = config.AccessLog{Path: path, Format: format}
			s := startSluice(t, cfg)
			c := newClient(t)
			for _, tc := range targets {
				if _, err := tryGet(c, s.URL("public")+tc.target); err != nil {
					t.Fatalf("GET %s: %v", tc.target, err)
				}
			}
			var lines []string
			eventually(t, 5*time.Second, fmt.Sprintf("%d lines in the access log", len(targets)), func() bool {
				b, _ := os.ReadFile(path)
				lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				return len(b) > 0 && len(lines) >= len(targets)
			})
			for i, tc := range targets {
				line := lines[i]
				if format == "combined" {
					if want := `"GET ` + tc.target + ` HTTP/1.1"`; !strings.Contains(line, want) {
						t.Errorf("GET %s: combined line %q does not hold the request line %s", tc.target, line, want)
					}
					continue
				}
				var e map[string]any
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Errorf("GET %s: line %q is not JSON: %v", tc.target, line, err)
					continue
				}
				if e["path"] != tc.path {
					t.Errorf("GET %s: JSON path %v, want %q (line %s)", tc.target, e["path"], tc.path, line)
				}
				if q, ok := e["query"]; !ok || q != tc.query {
					t.Errorf("GET %s: JSON query %v (present %v), want %q (line %s)", tc.target, q, ok, tc.query, line)
				}
			}
		})
	}
}
