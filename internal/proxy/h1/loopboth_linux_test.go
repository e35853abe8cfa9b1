package h1

// Scenarios found in review of engine: loop, each run on the goroutine
// engine ("h1", the reference) and on the loops ("loop"): both must agree.

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
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

// 7. timeouts.write ("time to write a whole response") does not bound a
// response on a loop as long as the client keeps up: a backend that streams
// for 1.5 s is relayed whole past a 300 ms write timeout; the goroutine
// engine cuts it.
