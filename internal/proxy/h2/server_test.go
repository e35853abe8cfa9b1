package h2

import (
	"bytes"
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
)

// testServer serves h on a loopback listener with srv; Close waits for
// every connection's ServeConn to return.
type testServer struct {
	ln  net.Listener
	srv *Server
	wg  sync.WaitGroup
}

func startServer(t *testing.T, srv *Server, h http.Handler) *testServer {
	return serveOn(t, srv, h, nil)
}

// serveOn is startServer that also sends on served (when not nil) each
// time a ServeConn returns.
func serveOn(t *testing.T, srv *Server, h http.Handler, served chan<- struct{}) *testServer {
	t.Helper()
	return serveWith(t, srv, func(c net.Conn) {
		serveConn(t, srv, c, ServeConnOpts{Handler: h})
		if served != nil {
			served <- struct{}{}
		}
	})
}

// serveWith serves each connection to a loopback listener with serve, on
// a goroutine of its own; the test's cleanup waits for them.
func serveWith(t *testing.T, srv *Server, serve func(net.Conn)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{ln: ln, srv: srv}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		done := make(chan struct{})
		go func() { ts.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("a connection was still served 10 s after its client closed")
		}
	})
	return ts
}

// rawClient speaks HTTP/2 frames to the server.
type rawClient struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dial(t *testing.T, ts *testServer, settings ...http2.Setting) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", ts.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.buf)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, http2.ClientPreface)
	c.fr.WriteSettings(settings...)
	return c
}

func (c *rawClient) headers(id uint32, end bool, fields ...string) {
	c.t.Helper()
	c.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(),
		EndStream: end, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

func get(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":authority", "example.com", ":path", path}
}

// next returns the next frame that is not SETTINGS, WINDOW_UPDATE or PING.
func (c *rawClient) next() http2.Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading a frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
			continue
		case *http2.WindowUpdateFrame, *http2.PingFrame:
			continue
		}
		return f
	}
}

// response reads stream id's response: status, fields and body.
func (c *rawClient) response(id uint32) (status string, h http.Header, body string) {
	c.t.Helper()
	h = http.Header{}
	var b strings.Builder
	for {
		switch f := c.next().(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				c.t.Fatalf("HEADERS on stream %d, want %d", f.StreamID, id)
			}
			for _, hf := range f.Fields {
				if hf.Name == ":status" {
					status = hf.Value
				} else {
					h.Add(hf.Name, hf.Value)
				}
			}
			if f.StreamEnded() {
				return status, h, b.String()
			}
		case *http2.DataFrame:
			b.Write(f.Data())
			if f.StreamEnded() {
				return status, h, b.String()
			}
		case *http2.RSTStreamFrame:
			c.t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		case *http2.GoAwayFrame:
			c.t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
}

func TestServesAResponseInOneWrite(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	c := dial(t, ts)
	c.headers(1, true, get("/a")...)
	status, h, body := c.response(1)
	if status != "200" || body != "hello /a" || h.Get("content-type") != "text/plain" {
		t.Fatalf("got %s %v %q", status, h, body)
	}
}

// A handler that waits for a window the client never opens must end when
// the client goes away, and ServeConn must return.
func TestHandlerWaitingForWindowEndsWhenClientCloses(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		_, err := w.Write(make([]byte, 100<<10))
		ended <- err
	}))
	c := dial(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c.headers(1, true, get("/")...)
	<-started
	time.Sleep(50 * time.Millisecond)
	c.nc.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the write succeeded with no window")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler still waits for a window after its client closed")
	}
}

// workers counts the goroutines waiting in or running conn.work.
func workers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "h2.(*conn).work(")
}

// TestIdleWorkersLeave: the goroutines that ran a connection's streams stay
// for the next ones while the connection has no stream, for workerLinger,
// and then end though the connection stays open.
func TestIdleWorkersLeave(t *testing.T) {
	const n = 4
	var started sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			started.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))
	c := dial(t, ts)
	for i := range n {
		c.headers(uint32(1+2*i), true, get("/wait")...)
	}
	started.Wait() // n handlers at once: n workers
	close(release)
	// The n responses may interleave: each stream's head, then its body.
	headed := map[uint32]bool{}
	for ended := 0; ended < n; {
		switch f := c.next().(type) {
		case *http2.MetaHeadersFrame:
			if headed[f.StreamID] || f.StreamEnded() {
				t.Fatalf("stream %d: got %v, want one response head with a body to follow", f.StreamID, f)
			}
			headed[f.StreamID] = true
		case *http2.DataFrame:
			if !headed[f.StreamID] || !f.StreamEnded() {
				t.Fatalf("stream %d: got %v, want the whole body after its head", f.StreamID, f)
			}
			ended++
		default:
			t.Fatalf("got %v, want response heads and bodies", f)
		}
	}
	// A later request is served (by a waiting worker or a new one).
	c.headers(uint32(1+2*n), true, get("/")...)
	if status, _, body := c.response(uint32(1 + 2*n)); status != "200" || body != "ok" {
		t.Fatalf("got %s %q", status, body)
	}
	if w := workers(); w == 0 || w > n {
		t.Fatalf("%d workers right after the streams ended, want 1 to %d", w, n)
	}
	deadline := time.Now().Add(workerLinger + 5*time.Second)
	for workers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still there %v after the last stream ended", workers(), workerLinger+5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The connection still serves.
	c.headers(uint32(3+2*n), true, get("/")...)
	if status, _, body := c.response(uint32(3 + 2*n)); status != "200" || body != "ok" {
		t.Fatalf("after the workers left: %s %q", status, body)
	}
}

// TestEmptyEndWithNegativeWindow: a client that shrinks its initial window
// below what a stream already received leaves that stream's window
// negative (RFC 9113 §6.9.2); the empty DATA frame that ends the stream
// needs no window and goes out whole. A frame sized by the negative window
// broke the connection's framing.
func TestEmptyEndWithNegativeWindow(t *testing.T) {
	proceed := make(chan struct{})
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		<-proceed
	}))
	c := dial(t, ts)
	c.headers(1, true, get("/")...)
	if f, ok := c.next().(*http2.MetaHeadersFrame); !ok {
		t.Fatalf("got %v, want the response head", f)
	}
	if f, ok := c.next().(*http2.DataFrame); !ok || string(f.Data()) != "hello" {
		t.Fatalf("got %v, want the 5 bytes flushed", f)
	}
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	for acked := false; !acked; {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && s.IsAck() {
			acked = true // the stream's window is now -5
		}
	}
	close(proceed)
	f, ok := c.next().(*http2.DataFrame)
	if !ok || len(f.Data()) != 0 || !f.StreamEnded() {
		t.Fatalf("got %v, want an empty DATA frame that ends the stream", f)
	}
	// The framing holds: the connection still serves.
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	c.headers(3, true, get("/")...)
	if status, _, body := c.response(3); status != "200" || body != "hello" {
		t.Fatalf("the next stream: %s %q", status, body)
	}
}
