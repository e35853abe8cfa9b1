package h1

// Scenarios found in review of engine: loop, each run on the goroutine
// engine ("h1", the reference) and on the loops ("loop"): both must agree.

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/testenv"
)

func bothEngines(t *testing.T, f func(t *testing.T, onLoops bool)) {
	for _, on := range []bool{false, true} {
		if loopEngine && !on {
			continue // every engine of the package is on loops: the same run twice
		}
		name := "h1"
		if on {
			name = "loop"
		}
		t.Run(name, func(t *testing.T) { f(t, on) })
	}
}

// 1. A pipelined request whose head is incomplete gets no read_header (nor
// idle) deadline on a loop: the connection waits forever.
func TestBothEnginesPipelinedPartialHeadTimeout(t *testing.T) {
	bothEngines(t, func(t *testing.T, onLoops bool) {
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		s := defaultSetup()
		s.OnLoops = onLoops
		s.Listener.ReadHeader = 300 * time.Millisecond
		env := startEngine(t, s, srv.URL)
		c := dialClient(t, env.addr)
		c.write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n") // second head unfinished
		if resp, _ := c.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, err := c.br.ReadByte()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("no 408 and no close 3 s after a partial pipelined head (read_header 300 ms): the connection has no deadline")
		}
		t.Logf("after the partial head: byte %q err %v (408 or close expected)", b, err)
	})
}

// An answer cut by timeouts.write is counted and logged like any other.
func TestBothEnginesAbortNotAccounted(t *testing.T) {
	bothEngines(t, func(t *testing.T, onLoops bool) {
		big := strings.Repeat("x", 64<<20)
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			io.WriteString(w, big)
		})
		s := defaultSetup()
		s.OnLoops = onLoops
		s.Listener.Write = 300 * time.Millisecond
		env := startEngine(t, s, srv.URL)
		c := dialClient(t, env.addr)
		c.write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n") // never read
		waitFor(t, "the connection to close", func() bool {
			env.engine.mu.Lock()
			defer env.engine.mu.Unlock()
			return len(env.engine.conns) == 0
		})
		st := env.engine.o.View.Load().Stats
		counted := func() (n uint64) {
			for class := 1; class <= 5; class++ {
				n += uint64(st.Requests(proxy.HTTP11, class))
			}
			return n
		}
		waitFor(t, "the request whose answer timeouts.write cut to be counted", func() bool { return counted() == 1 })
	})
}

// 5. A response head over 16 KiB: 502 on a loop, relayed by the goroutine
// engine (which reads heads up to edge.MaxResponseHeaderBytes).
func TestBothEnginesLargeResponseHead(t *testing.T) {
	bothEngines(t, func(t *testing.T, onLoops bool) {
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Big", strings.Repeat("a", 20<<10))
			io.WriteString(w, "ok")
		})
		s := defaultSetup()
		s.OnLoops = onLoops
		s.Limits.MaxHeaderBytes = 1 << 20
		env := startEngine(t, s, srv.URL)
		c := dialClient(t, env.addr)
		if resp, body := c.get("/"); resp.StatusCode != 200 {
			t.Fatalf("a 20 KiB response head: %d %q, want 200", resp.StatusCode, body)
		}
	})
}

// 6. serves() caches per Target from the candidates of the first request:
// a backend named by host name added later (admin API, discovery) is dialled
// by the loop at an invalid address: 502, and a connect failure blamed on a
// healthy backend.
func TestBothEnginesServesCacheStale(t *testing.T) {
	bothEngines(t, func(t *testing.T, onLoops bool) {
		srv1, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "one") })
		srv2, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "two") })
		s := defaultSetup()
		s.OnLoops = onLoops
		env := startEngine(t, s, srv1.URL)
		c := dialClient(t, env.addr)
		if resp, _ := c.get("/"); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv2.URL, "http://"))
		addr := "http://localhost:" + port
		u, _ := url.Parse(addr)
		env.pool.Add(pool.NewBackend(addr, u, 1))
		env.pool.Remove(env.backend[0])
		resp, body := c.get("/") // same connection: same loop, cached decision
		if resp.StatusCode != 200 || string(body) != "two" {
			t.Fatalf("after a backend named by host name replaced the pool's: %d %q, want 200 \"two\"", resp.StatusCode, body)
		}
	})
}

// Large fixed-length bodies go by splice on both engines. A backend that
// stops short ends the client's connection short, with only the backend's
// bytes in it; a client that leaves mid-body ends the backend's connection;
// neither leaves pipes open, and a pipe that still held bytes is not used
// again (the whole bodies after each are checked byte for byte).
func TestBothEnginesSpliceBrokenOff(t *testing.T) {
	skipOverTLS(t, "nothing goes by splice beneath TLS")
	bothEngines(t, func(t *testing.T, onLoops bool) {
		const size = 4 << 20
		body := randomBytes(size, 7)
		cut := make(chan error, 1)
		rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
			switch r.URL.Path {
			case "/short":
				c.Write(body[:size/3]) // and the connection closes
				return
			case "/full":
				c.Write(body)
				return
			}
			for off := 0; off < size; off += 16 << 10 {
				if _, err := c.Write(body[off : off+16<<10]); err != nil {
					cut <- err
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			cut <- nil
		})
		s := defaultSetup()
		s.OnLoops = onLoops
		env := startEngine(t, s, rb.URL)
		settled := func() {
			waitFor(t, "every connection to close", func() bool {
				env.engine.mu.Lock()
				n := len(env.engine.conns)
				env.engine.mu.Unlock()
				rb.mu.Lock()
				defer rb.mu.Unlock()
				return n == 0 && len(rb.open) == 0
			})
		}
		openFDs := func() int {
			des, err := os.ReadDir("/proc/self/fd")
			if err != nil {
				t.Fatal(err)
			}
			return len(des)
		}
		base := 0
		for i := range 12 {
			c := dialClient(t, env.addr)
			c.write("GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatalf("short body: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			if err == nil || len(got) >= size || !bytes.Equal(got, body[:len(got)]) {
				t.Fatalf("a body cut at %d of %d bytes by the backend: read %d bytes, error %v; want fewer bytes, all the backend's, and an error", size/3, size, len(got), err)
			}
			c.nc.Close()

			c = dialClient(t, env.addr)
			c.write("GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
			if _, err := http.ReadResponse(c.br, nil); err != nil {
				t.Fatalf("long body: %v", err)
			}
			if _, err := io.ReadFull(c.br, make([]byte, 256<<10)); err != nil {
				t.Fatalf("long body: %v", err)
			}
			// Reading no more for a while fills the sockets and the pipe
			// between them; then the close, with bytes unread: a reset.
			time.Sleep(200 * time.Millisecond)
			c.nc.Close()
			if err := recv(t, cut, "the backend's writes to fail once the client left"); err == nil {
				t.Fatalf("the backend wrote the whole body after its client left")
			}
			settled()
			for range 2 { // a new connection each: every loop
				fc := dialClient(t, env.addr)
				resp, got := fc.get("/full")
				fc.nc.Close()
				if resp.StatusCode != 200 || !bytes.Equal(got, body) {
					t.Fatalf("a whole body after broken-off ones: status %d, %d bytes of %d, equal %v", resp.StatusCode, len(got), size, bytes.Equal(got, body))
				}
			}
			settled()
			if i == 1 {
				runtime.GC() // Go's pipe pool closes the pipes it drops
				base = openFDs()
			}
		}
		if onLoops && env.loops.freePipes() == 0 {
			t.Errorf("no pipe kept on the loops after %d spliced bodies: nothing went by splice", 24)
		}
		runtime.GC()
		if n := openFDs(); n > base+8 {
			t.Errorf("%d descriptors open after 10 more broken-off bodies, %d before: pipes or sockets leak", n, base)
		}
	})
}

// A reload that retires a pool (Upstream.Close) closes its idle backend
// connections on both engines, on every loop, and a connection in use then
// is closed when its exchange ends instead of being kept.
func TestBothEnginesUpstreamCloseClosesIdle(t *testing.T) {
	bothEngines(t, func(t *testing.T, onLoops bool) {
		rb := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
			if r.URL.Path == "/slow" {
				time.Sleep(300 * time.Millisecond)
			}
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		}))
		s := defaultSetup()
		s.OnLoops = onLoops
		env := startEngine(t, s, rb.URL)
		open := func() int {
			rb.mu.Lock()
			defer rb.mu.Unlock()
			return len(rb.open)
		}
		for range 4 {
			if resp, _ := dialClient(t, env.addr).get("/"); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		// The goroutine engine gives the backend connection back just
		// after it relayed the answer: wait for it.
		waitFor(t, "an idle backend connection after four requests", func() bool { return env.idleUpstream(env.backend[0]) > 0 })
		slow := make(chan int, 1)
		go func() {
			c := dialClient(t, env.addr)
			c.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, _ := c.read("GET")
			slow <- resp.StatusCode
		}()
		waitFor(t, "the slow request to reach the backend", func() bool { return rb.conns.Load() >= 1 && open() >= 1 })
		time.Sleep(50 * time.Millisecond)
		env.target.Upstream.Close()
		if code := recv(t, slow, "the slow answer"); code != 200 {
			t.Fatalf("a request in flight across Upstream.Close: %d, want 200", code)
		}
		waitFor(t, "every backend connection to close after Upstream.Close", func() bool { return open() == 0 })
		if n := env.idleUpstream(env.backend[0]); n != 0 {
			t.Fatalf("%d idle connections kept after Upstream.Close", n)
		}
	})
}

// An IPv4 client of a dual-stack listener is named by its IPv4 address in
// X-Forwarded-For and in the access log on both engines (its address and
// port for a request refused before routing), not as an IPv4-mapped IPv6
// one.
func TestBothEnginesMappedClientAddress(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::]:0"); err != nil {
		t.Skipf("h1: no dual-stack listener here: %v", err)
	} else {
		ln.Close()
	}
	bothEngines(t, func(t *testing.T, onLoops bool) {
		srv, seen := recordingServer(t)
		var logged testenv.Buffer
		s := defaultSetup()
		s.OnLoops = onLoops
		s.Listen = "[::]:0"
		s.Access = accesslog.New(&logged, "json")
		ctx, cancel := context.WithCancel(context.Background())
		go s.Access.Run(ctx)
		t.Cleanup(func() { cancel(); s.Access.Wait() })
		env := startEngine(t, s, srv.URL)
		_, port, _ := net.SplitHostPort(env.addr)
		if resp, _ := dialClient(t, "127.0.0.1:"+port).get("/"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := recv(t, seen, "the request").Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Fatalf("X-Forwarded-For %q for an IPv4 client of a dual-stack listener, want 127.0.0.1", got)
		}
		waitFor(t, "the access log entry", func() bool { return strings.Contains(logged.String(), `"client":"`) })
		if got := logged.String(); !strings.Contains(got, `"client":"127.0.0.1"`) {
			t.Fatalf("access log %s: want the client as 127.0.0.1", got)
		}
		// A request refused before routing is logged with the peer's
		// address and port.
		bad := dialClient(t, "127.0.0.1:"+port)
		bad.write("GET / HTTP/1.1\r\nHost: x\r\nBad Field\r\n\r\n")
		if resp, _ := bad.read("GET"); resp.StatusCode != 400 {
			t.Fatalf("a malformed field: status %d, want 400", resp.StatusCode)
		}
		waitFor(t, "the refusal's access log entry", func() bool { return strings.Count(logged.String(), `"client":"`) == 2 })
		if got := logged.String(); !strings.Contains(got, `"client":"127.0.0.1:`) {
			t.Fatalf("access log %s: want the refused client as 127.0.0.1:port", got)
		}
	})
}

// A client whose socket takes a response head and its first bytes only
// in part (a small window and a slow reader, as a distant client is) still
// gets a large body whole and in order: what the engine read before it
// began to splice goes first, and nothing read goes missing.
func TestBothEnginesSpliceSlowClient(t *testing.T) {
	bothEngines(t, func(t *testing.T, onLoops bool) {
		body := randomBytes(1<<20, 11)
		rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
			for {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				// Head and body in one write: the proxy has them all to read.
				msg := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"), body...)
				if _, err := c.Write(msg); err != nil {
					return
				}
			}
		})
		s := defaultSetup()
		s.OnLoops = onLoops
		s.Wrap = func(ln net.Listener) net.Listener { return smallSendBuffer{ln} }
		env := startEngine(t, s, rb.URL)
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		for i := range 3 {
			nc := dialEngineWith(t, &d, env.addr, overTLS)
			nc.SetDeadline(ioDeadline(t))
			io.WriteString(nc, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
			time.Sleep(50 * time.Millisecond) // the engine writes what the client's window takes
			br := bufio.NewReader(nc)
			for j := range 2 {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("connection %d, response %d: %v", i, j, err)
				}
				var got []byte
				buf := make([]byte, 16<<10)
				for {
					n, err := resp.Body.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						break
					}
					time.Sleep(time.Millisecond) // a slow reader
				}
				if !bytes.Equal(got, body) {
					at := 0
					for at < len(got) && at < len(body) && got[at] == body[at] {
						at++
					}
					t.Fatalf("connection %d, response %d: %d bytes of %d, the first difference at %d", i, j, len(got), len(body), at)
				}
			}
			nc.Close()
		}
	})
}

// smallSendBuffer gives each accepted connection an 8 KiB send buffer.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8192)
	}
	return c, err
}
