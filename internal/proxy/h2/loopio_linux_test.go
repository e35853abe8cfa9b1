package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
)

// What only a connection served on a loop (ServeLoop) does: whole frames
// from partial reads, its buffer's bound, writes that never wait for the
// socket, deadlines by timer, and h2guard as a scanner. These tests serve
// on the loops whatever SLUICE_H2_LOOP says.

// startLoopServer is startServer on the loops, with the flood guard g
// configures when g is not nil.
func startLoopServer(t *testing.T, srv *Server, h http.Handler, g *h2guard.Config) *testServer {
	t.Helper()
	ls, err := testLoops()
	if err != nil {
		t.Fatalf("event loops: %v", err)
	}
	return startLoopServerOn(t, ls, srv, h, g, nil)
}

// startLoopServerOn is startLoopServer on ls, with wrap (when not nil)
// given each socket before it is served.
func startLoopServerOn(t *testing.T, ls *h1.Loops, srv *Server, h http.Handler, g *h2guard.Config, wrap func(*h1.Socket) Socket) *testServer {
	t.Helper()
	return serveWith(t, srv, func(c net.Conn) {
		serveOnLoop(t, ls, srv, c, g, wrap, ServeConnOpts{Handler: h})
	})
}

// goAway is a GOAWAY frame as a test keeps it.
type goAway struct {
	ErrCode http2.ErrCode
	Debug   string
}

// readUntilClosed reads what the server sends until it closes the
// connection and returns the GOAWAY among it, if any.
func readUntilClosed(t *testing.T, c *rawClient, within time.Duration) *goAway {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(within))
	var ga *goAway
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection was still open after %v", within)
			}
			return ga
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			ga = &goAway{g.ErrCode, string(g.DebugData())}
		}
	}
}

// A client whose frames arrive a few bytes at a time, a header block
// split over CONTINUATION frames among them, is served: the loop reads a
// frame only once it is whole.
func TestLoopFramesArriveInPieces(t *testing.T) {
	ts := startLoopServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path+" "+r.Header.Get("X-Long"))
	}), nil)
	nc, err := net.Dial("tcp", ts.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	out.WriteString(http2.ClientPreface)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	encode := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	long := strings.Repeat("v", 300)
	block := encode(append(get("/one"), "x-long", long)...)
	third := len(block) / 3
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:third], EndStream: true})
	fr.WriteContinuation(1, false, block[third:2*third])
	fr.WriteContinuation(1, true, block[2*third:])
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: encode(get("/two")...), EndStream: true, EndHeaders: true})
	// A few bytes per write, with a pause now and then, so that the loop
	// reads parts of frames.
	b := out.Bytes()
	for i := 0; i < len(b); i += 5 {
		if _, err := nc.Write(b[i:min(i+5, len(b))]); err != nil {
			t.Fatal(err)
		}
		if i%40 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	got := map[uint32]string{}
	for len(got) < 2 {
		switch f := c.next().(type) {
		case *http2.DataFrame:
			got[f.StreamID] += string(f.Data())
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			t.Fatalf("got %v", f)
		}
	}
	if got[1] != "/one "+long || got[3] != "/two " {
		t.Fatalf("got %v", got)
	}
}

// A header block larger than the header list size and a frame more ends
// the connection (the loop does not buffer without bound); one within it
// but over the header list size gets 431, as on a goroutine.
func TestLoopHeaderBlockBeyondTheBuffer(t *testing.T) {
	srv := &Server{MaxHeaderListSize: 4096}
	ts := startLoopServer(t, srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)

	c := dial(t, ts)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for _, name := range []string{"x-a", "x-b", "x-c", "x-d", "x-e"} {
		enc.WriteField(hpack.HeaderField{Name: name, Value: strings.Repeat("b", 1500)})
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	if status, _, _ := c.response(1); status != "431" {
		t.Fatalf("a block over the header list size: %s, want 431", status)
	}

	c = dial(t, ts)
	chunk := bytes.Repeat([]byte{0}, maxFrameSize)
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: chunk[:100]})
	for sent := 0; sent < int(srv.MaxHeaderListSize)+loopBufSlack+2*maxFrameSize; sent += len(chunk) {
		if err := c.fr.WriteContinuation(1, false, chunk); err != nil {
			break // the server closed: read why
		}
	}
	ga := readUntilClosed(t, c, 5*time.Second)
	if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("got GOAWAY %v, want ENHANCE_YOUR_CALM", ga)
	}
}

// A client that does not read: a handler's writes wait once maxPending
// bytes are queued (memory stays bounded), and go on when it reads.
func TestLoopClientThatDoesNotRead(t *testing.T) {
	const size = 8 << 20
	done := make(chan error, 1)
	srv := &Server{}
	ts := startLoopServer(t, srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		var err error
		for n := 0; n < size && err == nil; n += len(chunk) {
			_, err = w.Write(chunk)
		}
		done <- err
	}), nil)
	c := dial(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	tcp := c.nc.(*net.TCPConn)
	tcp.SetReadBuffer(16 << 10)
	c.headers(1, true, get("/")...)
	// Wait until the queue stops growing: the socket is full.
	var queued, last int
	for i := 0; i < 200; i++ {
		time.Sleep(10 * time.Millisecond)
		queued = loopQueued(srv)
		if queued > 0 && queued == last && i > 20 {
			break
		}
		last = queued
	}
	select {
	case err := <-done:
		t.Fatalf("the handler wrote 8 MiB to a client that reads nothing (%v)", err)
	default:
	}
	if limit := maxPending + 64<<10 + 1<<10; queued > limit {
		t.Fatalf("%d bytes queued for a client that does not read, want at most %d", queued, limit)
	}
	n := 0
	for n < size {
		f := c.next()
		if d, ok := f.(*http2.DataFrame); ok {
			n += len(d.Data())
		}
	}
	if err := <-done; err != nil || n != size {
		t.Fatalf("the client got %d bytes of %d, the handler: %v", n, size, err)
	}
}

// loopQueued is how many bytes wait in the sockets of srv's connections.
func loopQueued(srv *Server) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	n := 0
	for c := range srv.conns {
		c.mu.Lock()
		if c.lw != nil && !c.lw.closed {
			n += c.pendingLocked()
		}
		c.mu.Unlock()
	}
	return n
}

// WriteTimeout ends a connection whose client stops reading: the
// handler's write fails.
func TestLoopWriteTimeout(t *testing.T) {
	done := make(chan error, 1)
	ts := startLoopServer(t, &Server{WriteTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		var err error
		for n := 0; n < 64<<20 && err == nil; n += len(chunk) {
			_, err = w.Write(chunk)
		}
		done <- err
	}), nil)
	c := dial(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	c.nc.(*net.TCPConn).SetReadBuffer(16 << 10)
	c.headers(1, true, get("/")...)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the handler wrote 64 MiB to a client that reads nothing")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write still waits 5 s after the write timeout (300 ms)")
	}
}

// A connection that does not open with the preface is closed with no
// GOAWAY (not read as frames), as on a goroutine; one that sends nothing is closed
// after PrefaceTimeout.
func TestLoopPreface(t *testing.T) {
	var mu sync.Mutex
	var counted []string
	srv := &Server{PrefaceTimeout: 200 * time.Millisecond, CountError: func(name string) {
		mu.Lock()
		counted = append(counted, name)
		mu.Unlock()
	}}
	ts := startLoopServer(t, srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	for _, send := range []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ""} {
		nc, err := net.Dial("tcp", ts.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, send)
		c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
		if ga := readUntilClosed(t, c, 5*time.Second); ga != nil {
			t.Errorf("after %q: GOAWAY %v, want a close", send, ga)
		}
		nc.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(counted, "bad_preface") {
		t.Errorf("errors counted: %q, want bad_preface", counted)
	}
}

// A flood that h2guard counts ends the connection with its GOAWAY, and the
// guard's statistics count it.
func TestLoopFloodGoAway(t *testing.T) {
	stats := new(h2guard.Stats)
	ts := startLoopServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		&h2guard.Config{Stats: stats})
	c := dial(t, ts)
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	for i := range 20000 {
		fr.WritePing(false, [8]byte{byte(i)})
	}
	go c.nc.Write(out.Bytes()) // the server may stop reading: do not wait
	ga := readUntilClosed(t, c, 5*time.Second)
	if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || ga.Debug != h2guard.GoAwayDebug(h2guard.PingFlood) {
		t.Fatalf("got GOAWAY %+v, want ENHANCE_YOUR_CALM %q", ga, h2guard.GoAwayDebug(h2guard.PingFlood))
	}
	if n := stats.Closed(h2guard.PingFlood); n != 1 {
		t.Fatalf("ping floods counted: %d, want 1", n)
	}
}

// failing is a socket whose reads fail, once told to, with an error of
// the socket's own that also says Timeout (ETIMEDOUT: a client gone
// without a word, found by keep-alive probes or retransmissions).
type failing struct {
	*h1.Socket
	fail atomic.Bool
}

func (s *failing) Read(p []byte) (int, error) {
	if s.fail.Load() {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", unix.ETIMEDOUT)}
	}
	return s.Socket.Read(p)
}

// A read that fails ends the connection, even with an error that says
// Timeout: only "nothing more for now" waits for the next event.
func TestLoopReadErrorEndsConnection(t *testing.T) {
	ls, err := testLoops()
	if err != nil {
		t.Fatal(err)
	}
	sockets := make(chan *failing, 1)
	served := make(chan struct{})
	ts := startLoopServerOn(t, ls, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(served)
		<-r.Context().Done() // a stream open: nothing else ends the connection
	}), nil, func(sk *h1.Socket) Socket {
		s := &failing{Socket: sk}
		sockets <- s
		return s
	})
	c := dial(t, ts)
	c.headers(1, true, get("/")...)
	<-served
	(<-sockets).fail.Store(true)
	c.fr.WritePing(false, [8]byte{}) // an event: the read that fails
	readUntilClosed(t, c, 5*time.Second)
}

// WriteTimeout bounds a write that makes no progress, as a goroutine's
// write deadline does: a client that reads steadily, if slower than the
// handler writes, gets the whole answer however long it takes.
func TestLoopWriteTimeoutMovesOnWithProgress(t *testing.T) {
	const size = 6 << 20
	ls, err := testLoops()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ts := startLoopServerOn(t, ls, &Server{WriteTimeout: 1500 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		var err error
		for n := 0; n < size && err == nil; n += len(chunk) {
			_, err = w.Write(chunk)
		}
		done <- err
	}), nil, func(sk *h1.Socket) Socket {
		unix.SetsockoptInt(sk.FD(), unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10) // a writable edge frees little
		return sk
	})
	c := dial(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.nc.(*net.TCPConn).SetReadBuffer(16 << 10)
	c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	c.headers(1, true, get("/")...)
	start := time.Now()
	n := 0
	for n < size {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d of %d bytes in %v: %v", n, size, time.Since(start), err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			n += len(f.Data())
			time.Sleep(6 * time.Millisecond) // steady, slower than the handler
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %d bytes", f.ErrCode, n)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the handler: %v", err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Logf("read in %v, within the write timeout: the test proved nothing this time", d)
	}
}

// A client that keeps sending after a GOAWAY (here: a frame over the
// largest size) cannot hold its loop: the connection ends when its linger
// does, and another connection on the same loop is served meanwhile.
func TestLoopClientThatKeepsSendingDoesNotHoldItsLoop(t *testing.T) {
	ls, err := h1.NewLoops(1, nil) // one loop: both connections on it
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { ls.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran; ls.Close() })
	ts := startLoopServerOn(t, ls, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), nil, nil)
	c := dial(t, ts)
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, maxFrameSize+1))
	var stop atomic.Bool
	defer stop.Store(true)
	blast := make([]byte, 1<<20)
	for range 4 {
		go func() {
			for !stop.Load() {
				if _, err := c.nc.Write(blast); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	other := dial(t, ts)
	other.headers(1, true, get("/")...)
	if status, _, body := other.response(1); status != "200" || body != "ok" {
		t.Fatalf("the other connection: %s %q", status, body)
	}
	readUntilClosed(t, c, 5*time.Second) // linger is 1 s
}
