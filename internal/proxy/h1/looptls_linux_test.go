package h1

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestLoopTLSWouldBlockKeepsTheRecord pins what TLS on the loops leans on
// in crypto/tls: a read that finds the socket empty in the middle of a
// record (tlsBase's wouldBlock, Temporary) leaves the connection usable,
// and the next read, once the rest has come, returns the record whole.
// Were crypto/tls to make the error sticky, every TLS connection on a loop
// would break at its first split record.
func TestLoopTLSWouldBlockKeepsTheRecord(t *testing.T) {
	p := newTLSPair(t, nil)
	raw, held, client, server := p.raw, p.held, p.client, p.server
	if err := p.handshake(); err != nil {
		t.Fatal(err)
	}
	p.toLoop()

	// One record, sealed by the client and held, then written to the
	// socket in three parts.
	held.hold(true)
	msg := "GET /split HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(client, msg); err != nil {
		t.Fatal(err)
	}
	sealed := held.take()
	if len(sealed) < 10 {
		t.Fatalf("a sealed record of %d bytes", len(sealed))
	}
	buf := make([]byte, 1024)
	for _, part := range [][]byte{sealed[:3], sealed[3 : len(sealed)-1], sealed[len(sealed)-1:]} {
		if _, err := raw.Write(part); err != nil {
			t.Fatal(err)
		}
		// Until the whole record has come, every read would block.
		var n int
		var err error
		for range 100 {
			n, err = server.Read(buf)
			if n > 0 || !errors.As(err, new(wouldBlock)) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if &part[0] != &sealed[len(sealed)-1] {
			if n != 0 || !errors.As(err, new(wouldBlock)) {
				t.Fatalf("a read with part of a record: %d bytes, %v; want 0 and wouldBlock", n, err)
			}
			continue
		}
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("the read once the record is whole: %q, %v; want %q", buf[:n], err, msg)
		}
	}
}

// holdingConn keeps what is written to it, instead of sending it, while
// told to hold.
type holdingConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (c *holdingConn) hold(on bool) {
	c.mu.Lock()
	c.holding = on
	c.mu.Unlock()
}

func (c *holdingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *holdingConn) take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buf
	c.buf = nil
	return b
}

// loopTLSConn returns the engine's one client connection on a loop, and
// whether it is TLS there.
func loopTLSConn(t *testing.T, env *engineEnv) (on, overTLS bool) {
	t.Helper()
	lc := onLoop(env)
	if lc == nil {
		return false, false
	}
	got := make(chan bool, 1)
	lc.w.ev.Post(func() { got <- lc.tb != nil })
	return true, recv(t, got, "the loop's answer")
}

// TestLoopTLS: an HTTP/1.1 connection over TLS is served on a loop past
// its handshake: a head that comes a byte per record, two requests
// pipelined in one record, a response larger than the socket's buffers,
// a request with a body (handed over to a goroutine, with the TLS
// connection, midway), and after a "Connection: close" answer the loop's
// close_notify (TLS 1.2, where an alert is a record of its own type).
func TestLoopTLS(t *testing.T) {
	big := randomBytes(3<<20, 5)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(len(big))) // fixed: what splice would take
			w.Write(big)
		case "/chunked":
			w.Write(big[:100<<10])
			w.(http.Flusher).Flush()
			w.Write(big[100<<10:])
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		default:
			io.WriteString(w, "ok "+r.URL.Path+" "+r.Header.Get("X-Forwarded-Proto"))
		}
	})
	s := defaultSetup()
	s.TLS, s.OnLoops = true, true
	env := startEngine(t, s, srv.URL)
	c := dialClientTLS(t, env.addr, true)

	// A byte per record: each Write of a tls.Conn is a record of its own.
	head := "GET /bytes HTTP/1.1\r\nHost: x\r\n\r\n"
	for i := range len(head) {
		c.write(head[i : i+1])
	}
	if resp, body := c.read("GET"); resp.StatusCode != 200 || string(body) != "ok /bytes https" {
		t.Fatalf("a head a byte per record: %d %q, want 200 \"ok /bytes https\"", resp.StatusCode, body)
	}
	if on, tlsOn := loopTLSConn(t, env); !on || !tlsOn {
		t.Fatalf("the connection is on a loop: %v, with its TLS: %v; want both", on, tlsOn)
	}

	c.write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, p := range []string{"/a", "/b"} {
		if resp, body := c.read("GET"); resp.StatusCode != 200 || string(body) != "ok "+p+" https" {
			t.Fatalf("pipelined %s: %d %q", p, resp.StatusCode, body)
		}
	}

	c.write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(20 * time.Millisecond) // the loop fills the socket and waits for it
	if resp, body := c.read("GET"); resp.StatusCode != 200 || string(body) != string(big) {
		t.Fatalf("a %d-byte response: %d, %d bytes", len(big), resp.StatusCode, len(body))
	}

	c.write("GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || string(body) != string(big) || len(resp.TransferEncoding) == 0 {
		t.Fatalf("a chunked %d-byte response: %d, %d bytes, %v", len(big), resp.StatusCode, len(body), resp.TransferEncoding)
	}

	c.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if resp, body := c.read("POST"); resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("a request with a body: %d %q", resp.StatusCode, body)
	}
	if resp, body := c.get("/after"); resp.StatusCode != 200 || string(body) != "ok /after https" {
		t.Fatalf("a request after the hand-over: %d %q", resp.StatusCode, body)
	}

	// close_notify before the socket closes: after an answer with
	// "Connection: close", when the idle timeout closes a connection, and
	// after a refusal (before the write side is shut).
	s.Listener.Idle = 300 * time.Millisecond
	idleEnv := startEngine(t, s, srv.URL)
	for _, req := range []string{"GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /refused HTTP/1.1\r\nHost: x\r\nBad Field\r\n\r\n"} {
		raw, err := net.DialTimeout("tcp", idleEnv.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(ioDeadline(t))
		tap := &tapConn{Conn: raw}
		cfg := clientTLS(t).Clone()
		cfg.MaxVersion = tls.VersionTLS12
		tc := tls.Client(tap, cfg)
		if _, err := io.WriteString(tc, req); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(tc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		path := strings.Fields(req)[1]
		b, _ := io.ReadAll(resp.Body)
		if path == "/refused" && resp.StatusCode != 400 || path != "/refused" && (resp.StatusCode != 200 || string(b) != "ok "+path+" https") {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, b)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("GET %s: a read after the answer: %v, want EOF", path, err)
		}
		if typ := tap.lastRecord(); typ != 21 {
			t.Fatalf("GET %s: the last record from the engine is of type %d, want 21 (an alert: close_notify)", path, typ)
		}
	}
}

// tapConn notes the type of each TLS record read through it.
type tapConn struct {
	net.Conn
	in   []byte
	last byte
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in = append(c.in, p[:n]...)
	for len(c.in) >= 5 {
		l := 5 + (int(c.in[3])<<8 | int(c.in[4]))
		if len(c.in) < l {
			break
		}
		c.last = c.in[0]
		c.in = c.in[l:]
	}
	return n, err
}

func (c *tapConn) lastRecord() byte { return c.last }

// dialHeld connects to the engine at addr (over TLS, its handshake done,
// when overTLS is set) through a holdingConn, so that a test can hold what
// the client writes and send it in pieces of its choosing on raw.
func dialHeld(t *testing.T, addr string, overTLS bool) (raw net.Conn, held *holdingConn, nc net.Conn) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(ioDeadline(t))
	held = &holdingConn{Conn: raw}
	nc = held
	if overTLS {
		tc := tls.Client(held, clientTLS(t))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		nc = tc
	}
	return raw, held, nc
}

// tlsPair is a TLS connection over loopback: the client through a
// holdingConn, the server over LoopTLS as a TLS listener's front makes it,
// with its reads passed through gate when one is given.
type tlsPair struct {
	t      *testing.T
	raw    net.Conn // the client's socket
	held   *holdingConn
	client *tls.Conn
	sc     net.Conn // the server's socket
	base   *tlsBase
	server *tls.Conn
}

func newTLSPair(t *testing.T, gate func(net.Conn) net.Conn) *tlsPair {
	t.Helper()
	raw, sc := testenv.TCPPair(t)
	raw.SetDeadline(ioDeadline(t))
	sc.SetDeadline(ioDeadline(t))
	under := sc
	if gate != nil {
		under = gate(sc)
	}
	base := LoopTLS(under).(*tlsBase)
	held := &holdingConn{Conn: raw}
	return &tlsPair{t: t, raw: raw, held: held, client: tls.Client(held, clientTLS(t)), sc: sc, base: base,
		server: tls.Server(base, serverTLS(t))}
}

// handshake runs both sides' handshakes; the server's error.
func (p *tlsPair) handshake() error {
	p.t.Helper()
	hs := make(chan error, 1)
	go func() { hs <- p.server.Handshake() }()
	if err := p.client.Handshake(); err != nil {
		p.t.Fatal(err)
	}
	return recv(p.t, hs, "the server's handshake")
}

// toLoop moves the server side onto a non-blocking duplicate of its
// socket, as take does.
func (p *tlsPair) toLoop() {
	t := p.t
	t.Helper()
	rc, err := p.sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	p.base.fd = fd
}

// gatedConn holds its reads after its first write until open is closed:
// the server's handshake, its flight sent, reads the client's Finished
// only then.
type gatedConn struct {
	net.Conn
	open  chan struct{}
	wrote bool // read and written by the handshake's goroutine only
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.wrote = true
	return g.Conn.Write(p)
}

func (g *gatedConn) Read(p []byte) (int, error) {
	if g.wrote {
		<-g.open
	}
	return g.Conn.Read(p)
}

// TestLoopTLSFollowsRecordsFromTheHandshake: the handshake's last read can
// take the beginning of the first request's record with the client's
// Finished (a client that writes both at once, a server that reads late).
// tlsBase follows the record lengths from the first byte, so that once on
// the loop it knows that the rest of that record is not a new record's
// header: with the request whole, it says that crypto/tls holds no part
// of a record (Shutdown would otherwise keep the connection, or close one
// with half a request).
func TestLoopTLSFollowsRecordsFromTheHandshake(t *testing.T) {
	open := make(chan struct{})
	var g *gatedConn
	p := newTLSPair(t, func(c net.Conn) net.Conn { g = &gatedConn{Conn: c, open: open}; return g })
	hs := make(chan error, 1)
	go func() { hs <- p.server.Handshake() }()
	if err := p.client.Handshake(); err != nil { // TLS 1.3: the client is done once its Finished is out
		t.Fatal(err)
	}
	p.held.hold(true)
	req := "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("c", 8000) + "\r\n\r\n"
	io.WriteString(p.client, req)
	sealed := p.held.take()
	p.held.hold(false)
	p.raw.Write(sealed[:100]) // with the Finished, before the server reads it
	time.Sleep(20 * time.Millisecond)
	close(open)
	if err := recv(t, hs, "the server's handshake"); err != nil {
		t.Fatal(err)
	}
	p.toLoop()
	p.raw.Write(sealed[100:])
	var got []byte
	buf := make([]byte, 16<<10)
	for end := time.Now().Add(5 * time.Second); len(got) < len(req) && time.Now().Before(end); {
		n, err := p.server.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil && !errors.As(err, new(wouldBlock)) {
			t.Fatal(err)
		}
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if string(got) != req {
		t.Fatalf("read %d bytes of the %d-byte request", len(got), len(req))
	}
	if p.base.partial() {
		t.Fatalf("with the request whole, tlsBase says crypto/tls holds part of a record (%d header bytes, %d body bytes to come)",
			p.base.hn, p.base.left)
	}
}
