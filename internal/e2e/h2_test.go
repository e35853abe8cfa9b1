package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"

	"github.com/sluice-lb/sluice/internal/config"
)

// h2cClient returns an HTTP/2 client that speaks h2c (prior knowledge).
func h2cClient(t testing.TB) *http.Client {
	tr := &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestH2CPriorKnowledge: a listener with h2c serves HTTP/2 clients by prior
// knowledge, many streams on one connection, through the same core
// (routing, forwarding fields), and HTTP/1.1 clients on the same port.
func TestH2CPriorKnowledge(t *testing.T) {
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	s := startSluice(t, cfg)
	c := h2cClient(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(fmt.Sprintf("%s/echo?i=%d", s.URL("public"), i))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("request %d: %s %d %q", i, resp.Proto, resp.StatusCode, body)
				return
			}
			e := parseEcho(t, string(body))
			if got := e.Headers.Get("X-Forwarded-Proto"); got != "http" {
				errs <- fmt.Errorf("request %d: X-Forwarded-Proto %q, want http", i, got)
			}
			if q := fmt.Sprint(e.Raw["query"]); !strings.Contains(q, fmt.Sprintf("i:[%d]", i)) {
				errs <- fmt.Errorf("request %d: backend saw query %v", i, e.Raw["query"])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// HTTP/1.1 on the same listener.
	if r := get(t, newClient(t), s.URL("public")+"/"); r.Status != 200 || !strings.HasPrefix(r.Body, "Hello from b1") {
		t.Errorf("HTTP/1.1 on the h2c listener: %d %q", r.Status, r.Body)
	}
}

// h2cBackend is an HTTP/2-only backend over cleartext (prior knowledge)
// that names the protocol it was reached with, echoes the body's length and
// sends a trailer.
func h2cBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2s := &http2.Server{}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Proto", r.Proto)
		fmt.Fprintf(w, "%s %s %d", r.Proto, r.URL.Path, n)
		w.Header().Set("X-Sum", strconv.FormatInt(n, 10))
	}), h2s)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestUpstreamHTTP2 sends requests from HTTP/1.1 clients (the engine's
// bridge, or net/http with engine std) and from HTTP/2 clients to a pool
// with upstream_http2 over h2c: the backend is reached over HTTP/2, bodies
// and trailers pass.
func TestUpstreamHTTP2(t *testing.T) {
	p := config.Pool{Name: "web", Balance: "round_robin", UpstreamHTTP2: true,
		Backends: []config.Backend{{Address: h2cBackend(t)}}}
	cfg := oneListener(p)
	cfg.Listeners[0].H2C = true
	s := startSluice(t, cfg)
	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"HTTP/1.1 client", newClient(t)}, {"HTTP/2 client", h2cClient(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{0, 100, 200 << 10} {
				req, _ := http.NewRequest("POST", s.URL("public")+"/up", strings.NewReader(strings.Repeat("x", size)))
				resp, err := tc.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := fmt.Sprintf("HTTP/2.0 /up %d", size)
				if resp.StatusCode != 200 || string(body) != want {
					t.Errorf("%d bytes: %d %q, want 200 %q", size, resp.StatusCode, body, want)
				}
				if got := resp.Trailer.Get("X-Sum"); got != strconv.Itoa(size) {
					t.Errorf("%d bytes: trailer X-Sum %q, want %d", size, got, size)
				}
			}
		})
	}
}

// TestH2CUpgrade: on an h2c listener, an HTTP/1.1 request with "Upgrade:
// h2c" gets 101 and its answer as HTTP/2 stream 1 (the engine); the
// connection then carries HTTP/2 requests.
func TestH2CUpgrade(t *testing.T) {
	if os.Getenv("SLUICE_E2E_ENGINE") == "std" {
		t.Skip("Upgrade: h2c is answered by the engine; with engine std only prior knowledge is offered (see docs/config.md)")
	}
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	s := startSluice(t, cfg)
	c, err := net.Dial("tcp", s.Addr("public"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: up.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 101") {
		t.Fatalf("answer to the upgrade: %q, want 101", line)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	fr := http2.NewFramer(c, br)
	fr.WriteSettings()
	var status string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for status == "" {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading HTTP/2 frames after the upgrade: %v", err)
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 1 {
			dec.Write(h.HeaderBlockFragment())
		}
	}
	if status != "200" {
		t.Errorf("stream 1 (the upgraded request): status %s, want 200", status)
	}
}

// TestIdleHTTP2ConnectionsHoldNoGoroutine: on the event loops (engine:
// loop, the default) an idle HTTP/2 connection has no goroutine of its own
// (its memory is its state, not a stack); on engine h1 it has one.
func TestIdleHTTP2ConnectionsHoldNoGoroutine(t *testing.T) {
	const n = 40
	for _, tc := range []struct {
		engine string
		most   int // goroutines the n idle connections may add
	}{{"loop", n / 4}, {"h1", 2 * n}} {
		t.Run(tc.engine, func(t *testing.T) {
			be := startBackend(t, "b1")
			cfg := oneListener(poolOf("web", be))
			cfg.Listeners[0].H2C = true
			cfg.Listeners[0].Engine = tc.engine
			s := startSluice(t, cfg)
			before := runtime.NumGoroutine()
			var frs []*http2.Framer
			for i := range n {
				// A raw client: no goroutine of its own in this process.
				nc, err := net.Dial("tcp", s.Addr("public"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { nc.Close() })
				nc.SetDeadline(time.Now().Add(30 * time.Second))
				fr := http2.NewFramer(nc, nc)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				io.WriteString(nc, http2.ClientPreface)
				fr.WriteSettings()
				var hb strings.Builder
				enc := hpack.NewEncoder(&hb)
				for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
					enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
				}
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte(hb.String()), EndStream: true, EndHeaders: true})
				for done := false; !done; {
					f, err := fr.ReadFrame()
					if err != nil {
						t.Fatalf("connection %d: %v", i, err)
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							fr.WriteSettingsAck()
						}
					case *http2.DataFrame:
						done = f.StreamEnded()
					case *http2.MetaHeadersFrame:
						done = f.StreamEnded()
					}
				}
				frs = append(frs, fr)
			}
			defer func() {
				// Every connection is still open and served: a PING is
				// answered on each.
				for i, fr := range frs {
					fr.WritePing(false, [8]byte{byte(i)})
					for {
						f, err := fr.ReadFrame()
						if err != nil {
							t.Fatalf("connection %d, idle: %v", i, err)
						}
						if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
							break
						}
					}
				}
			}()
			// A stream's goroutine stays a second after its last stream
			// (workerLinger); then only what the connections hold is left.
			if tc.engine == "loop" {
				eventually(t, 10*time.Second, "the idle connections hold no goroutines", func() bool {
					return runtime.NumGoroutine()-before <= tc.most
				})
				return
			}
			time.Sleep(2 * time.Second)
			if added := runtime.NumGoroutine() - before; added < n/2 || added > tc.most {
				t.Fatalf("%d idle connections added %d goroutines on engine h1, want one each", n, added)
			}
		})
	}
}

// TestH2UpstreamDownAnswersPOST: a request with a body to an
// upstream_http2 pool whose backends refuse connections gets its 502 at
// once, from every engine. (x/net's Transport leaves the body open when no
// connection could be made; the engine waited for its close, and the
// client waited for ever.)
func TestH2UpstreamDownAnswersPOST(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
		Backends: []config.Backend{{Address: "http://" + addr}}}
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, s.URL("public")+"/x", strings.NewReader("a body"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %d: %v, want 502", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("POST %d: %d, want 502", i, resp.StatusCode)
		}
	}
}
