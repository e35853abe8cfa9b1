package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// grpcBackend is a grpc-go server with the standard health service on
// 127.0.0.1: h2c, or TLS when cert is given.
type grpcBackend struct {
	health *grpchealth.Server
	ln     *countingListener
	b      *pool.Backend
}

func startGRPC(t *testing.T, cert *tls.Certificate) *grpcBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	scheme := "http"
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})))
		scheme = "https"
	}
	srv := grpc.NewServer(opts...)
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	cl := &countingListener{Listener: ln}
	go srv.Serve(cl)
	t.Cleanup(srv.Stop)
	u := &url.URL{Scheme: scheme, Host: ln.Addr().String()}
	return &grpcBackend{health: hs, ln: cl, b: pool.NewBackend(u.String(), u, 1)}
}

// writeCA writes a PEM certificate as an upstream_tls.ca file.
func writeCA(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

func grpcHC(service string) *config.HealthCheck {
	return &config.HealthCheck{Type: "grpc", Service: service, Interval: 50 * time.Millisecond, Timeout: 5 * time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 2}
}

// probeOnce runs one check with the check's timeout, as the checker does.
func probeOnce(t *testing.T, p Prober, hc *config.HealthCheck, b *pool.Backend) error {
	ctx, cancel := context.WithTimeout(t.Context(), hc.Timeout)
	defer cancel()
	return p(ctx, b)
}

// wantErr fails unless err is non-nil and holds every one of subs.
func wantErr(t *testing.T, what string, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: passed, want a failure mentioning %q", what, subs)
		return
	}
	t.Logf("%s: %v", what, err)
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q does not mention %q", what, err, s)
		}
	}
}

func TestGRPCProbe(t *testing.T) {
	g := startGRPC(t, nil)
	long := strings.Repeat("x", 300) // a two-byte varint length
	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_SERVING)
	g.health.SetServingStatus(long, healthpb.HealthCheckResponse_SERVING)

	whole, cart := grpcHC(""), grpcHC("shop.v1.Cart")
	pWhole := newProber(whole, Options{UpstreamHTTP2: true})
	pCart := newProber(cart, Options{UpstreamHTTP2: true})

	if err := probeOnce(t, pWhole, whole, g.b); err != nil {
		t.Errorf(`service "" SERVING: %v`, err)
	}
	if err := probeOnce(t, pCart, cart, g.b); err != nil {
		t.Errorf("shop.v1.Cart SERVING: %v", err)
	}
	if err := probeOnce(t, newProber(grpcHC(long), Options{}), whole, g.b); err != nil {
		t.Errorf("300-byte service name SERVING: %v", err)
	}

	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_NOT_SERVING)
	wantErr(t, "shop.v1.Cart NOT_SERVING", probeOnce(t, pCart, cart, g.b), "NOT_SERVING", `"shop.v1.Cart"`)
	if err := probeOnce(t, pWhole, whole, g.b); err != nil {
		t.Errorf(`service "" still SERVING: %v`, err)
	}
	g.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	wantErr(t, `service "" NOT_SERVING`, probeOnce(t, pWhole, whole, g.b), "NOT_SERVING")

	unknown := grpcHC("no.such.Service")
	wantErr(t, "unknown service", probeOnce(t, newProber(unknown, Options{}), unknown, g.b),
		"SERVICE_UNKNOWN", `"no.such.Service"`, "grpc-status 5 NOT_FOUND", "unknown service")

	// HAProxy semantics: a fresh connection per check.
	if got, want := g.ln.n.Load(), int64(7); got != want {
		t.Errorf("connections accepted = %d for 7 checks, want %d", got, want)
	}
}

func TestGRPCProbeTLS(t *testing.T) {
	ca := testenv.NewCA(t, "Test CA")
	is := ca.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "health-test"}, Names: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	g := startGRPC(t, &is.Pair)
	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_SERVING)
	hc := grpcHC("shop.v1.Cart")
	p := newProber(hc, Options{UpstreamHTTP2: true, UpstreamTLS: config.UpstreamTLS{CA: ca.Write(t, t.TempDir(), "ca")}})
	if err := probeOnce(t, p, hc, g.b); err != nil {
		t.Fatalf("TLS, SERVING: %v", err)
	}
	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_NOT_SERVING)
	wantErr(t, "TLS, NOT_SERVING", probeOnce(t, p, hc, g.b), "NOT_SERVING")

	// Without the CA the certificate is not trusted.
	p = newProber(hc, Options{UpstreamHTTP2: true})
	wantErr(t, "TLS, unknown CA", probeOnce(t, p, hc, g.b), "TLS handshake")
}

func TestGRPCProbeFailures(t *testing.T) {
	hc := grpcHC("")
	hc.Timeout = 300 * time.Millisecond
	p := newProber(hc, Options{UpstreamHTTP2: true})
	backend := func(scheme, host string) *pool.Backend {
		u := &url.URL{Scheme: scheme, Host: host}
		return pool.NewBackend(u.String(), u, 1)
	}

	t.Run("connection refused", func(t *testing.T) {
		wantErr(t, "closed port", probeOnce(t, p, hc, backend("http", testenv.DeadAddr(t))), "refused")
	})

	t.Run("HTTP/1.1 only", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer srv.Close()
		err := probeOnce(t, p, hc, backend("http", srv.Listener.Addr().String()))
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			// net/http answered the preface with 400 and closed before the
			// probe's write ended: the reset took the answer with it. The
			// check fails all the same.
			return
		}
		wantErr(t, "HTTP/1.1 backend", err, "not HTTP/2", "HTTP/1.1")
	})

	t.Run("HTTP/1.1 only over TLS", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
		srv.StartTLS()
		defer srv.Close()
		p := newProber(hc, Options{UpstreamTLS: config.UpstreamTLS{CA: writeCA(t, srv.Certificate())}})
		wantErr(t, "HTTP/1.1 TLS backend", probeOnce(t, p, hc, backend("https", srv.Listener.Addr().String())),
			"not HTTP/2", "ALPN")
	})

	t.Run("not gRPC", func(t *testing.T) {
		srv := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("hello"))
		}), &http2.Server{}))
		defer srv.Close()
		wantErr(t, "plain HTTP/2 server", probeOnce(t, p, hc, backend("http", srv.Listener.Addr().String())),
			"not a gRPC server")
	})

	t.Run("oversized", func(t *testing.T) {
		srv := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Write(make([]byte, 100<<10))
		}), &http2.Server{}))
		defer srv.Close()
		wantErr(t, "100 KiB answer", probeOnce(t, p, hc, backend("http", srv.Listener.Addr().String())),
			"larger than 64 KiB")
	})

	t.Run("timeout", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var mu sync.Mutex
		var conns []net.Conn
		go func() {
			for {
				c, err := ln.Accept() // and never answer
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		}()
		wantErr(t, "silent backend", probeOnce(t, p, hc, backend("http", ln.Addr().String())), "timed out after 300ms")
	})
}

// TestGRPCVerdict covers answers a well-behaved server does not give.
func TestGRPCVerdict(t *testing.T) {
	msg := func(b ...byte) []byte { return grpcFrame(b) }
	resp := func(code int, hdr, trailer http.Header) *http.Response {
		if hdr == nil {
			hdr = http.Header{"Content-Type": {"application/grpc"}}
		}
		return &http.Response{StatusCode: code, Header: hdr, Trailer: trailer}
	}
	ok := http.Header{"Grpc-Status": {"0"}}
	tests := []struct {
		name string
		resp *http.Response
		body []byte
		want string // "" passes
	}{
		{"serving", resp(200, nil, ok), msg(0x08, 0x01), ""},
		{"serving after unknown fields", resp(200, nil, ok), msg(0x12, 0x02, 'h', 'i', 0x1d, 1, 2, 3, 4, 0x08, 0x01), ""},
		{"empty message is UNKNOWN", resp(200, nil, ok), msg(), "UNKNOWN, not SERVING"},
		{"SERVICE_UNKNOWN status", resp(200, nil, ok), msg(0x08, 0x03), "SERVICE_UNKNOWN, not SERVING"},
		{"status out of the enum", resp(200, nil, ok), msg(0x08, 0x09), "status 9, not SERVING"},
		{"trailers-only error", resp(200, http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"14"},
			"Grpc-Message": {"going%20away"}}, nil), nil, `grpc-status 14 UNAVAILABLE, grpc-message "going away"`},
		{"unimplemented", resp(200, nil, http.Header{"Grpc-Status": {"12"}}), nil, "does not implement grpc.health.v1"},
		{"no grpc-status", resp(200, nil, nil), msg(0x08, 0x01), "no grpc-status"},
		{"HTTP error", resp(503, nil, nil), nil, "HTTP status 503"},
		{"no message", resp(200, nil, ok), nil, "no response message"},
		{"truncated", resp(200, nil, ok), []byte{0, 0, 0, 0, 9, 0x08}, "truncated"},
		{"two messages", resp(200, nil, ok), append(msg(0x08, 0x01), msg(0x08, 0x01)...), "more than one"},
		{"compressed", resp(200, nil, ok), []byte{1, 0, 0, 0, 2, 0x08, 0x01}, "compressed"},
		{"malformed varint", resp(200, nil, ok), msg(0x08, 0x80), "malformed HealthCheckResponse"},
	}
	for _, tt := range tests {
		err := grpcVerdict("", tt.resp, tt.body)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v, want a pass", tt.name, err)
			}
			continue
		}
		wantErr(t, tt.name, err, tt.want)
	}
}

func TestHealthCheckRequest(t *testing.T) {
	if got := healthCheckRequest(""); len(got) != 0 {
		t.Errorf(`request for "" = %x, want empty`, got)
	}
	if got, want := healthCheckRequest("shop"), []byte{0x0a, 4, 's', 'h', 'o', 'p'}; !bytes.Equal(got, want) {
		t.Errorf(`request for "shop" = %x, want %x`, got, want)
	}
	if got, want := grpcFrame([]byte{1, 2}), []byte{0, 0, 0, 0, 2, 1, 2}; !bytes.Equal(got, want) {
		t.Errorf("frame = %x, want %x", got, want)
	}
	if got, want := grpcTimeout(1500*time.Millisecond), "1500m"; got != want {
		t.Errorf("grpc-timeout = %q, want %q", got, want)
	}
}

// TestHTTPProbeH2C: in an upstream_http2 pool an HTTP check speaks h2c to
// an http:// backend that accepts nothing else.
func TestHTTPProbeH2C(t *testing.T) {
	var mu sync.Mutex
	status, gotHost := http.StatusOK, ""
	h2only := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			w.WriteHeader(http.StatusHTTPVersionNotSupported)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		gotHost = r.Host
		w.WriteHeader(status)
		w.Write(make([]byte, 100<<10)) // read in part: the status decides
	})
	srv := httptest.NewServer(h2c.NewHandler(h2only, &http2.Server{}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	b := pool.NewBackend(srv.URL, u, 1)
	h := hc()
	h.Host = "health.example"
	probe := newProber(h, Options{UpstreamHTTP2: true})
	for _, tt := range []struct {
		status int
		ok     bool
	}{{200, true}, {302, true}, {503, false}} {
		mu.Lock()
		status = tt.status
		mu.Unlock()
		if err := probeOnce(t, probe, h, b); (err == nil) != tt.ok {
			t.Errorf("status %d over h2c: err = %v, want ok=%v", tt.status, err, tt.ok)
		}
	}
	mu.Lock()
	if gotHost != "health.example" {
		t.Errorf(":authority = %q, want %q", gotHost, "health.example")
	}
	mu.Unlock()
	// Without upstream_http2 the check is HTTP/1.1, which this backend refuses.
	wantErr(t, "HTTP/1.1 check of an h2c-only backend", probeOnce(t, newProber(h, Options{}), h, b), "answered 505")
}

// TestHTTPProbeH2TLS: over TLS the check negotiates h2 by ALPN.
func TestHTTPProbeH2TLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			w.WriteHeader(http.StatusHTTPVersionNotSupported)
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	b := pool.NewBackend(srv.URL, u, 1)
	h := hc()
	probe := newProber(h, Options{UpstreamHTTP2: true, UpstreamTLS: config.UpstreamTLS{CA: writeCA(t, srv.Certificate())}})
	if err := probeOnce(t, probe, h, b); err != nil {
		t.Errorf("HTTP/2 over TLS: %v", err)
	}
}

// TestGRPCCheckerRiseFall runs the checker against a real gRPC health
// server: NOT_SERVING takes the backend down after unhealthy_threshold
// checks, SERVING brings it back after healthy_threshold.
func TestGRPCCheckerRiseFall(t *testing.T) {
	g := startGRPC(t, nil)
	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_SERVING)
	p := pool.New("grpc", balance.RoundRobin{}, []*pool.Backend{g.b})
	c := New(p, grpcHC("shop.v1.Cart"), discard, Options{UpstreamHTTP2: true})
	stop := start(t, c)
	defer stop()

	waitHealth := func(want pool.Health) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for g.b.Health() != want {
			if time.Now().After(deadline) {
				t.Fatalf("health = %v after 10s, want %v (checks passed %d, failed %d)", g.b.Health(), want,
					g.b.Stats.ChecksPassed.Load(), g.b.Stats.ChecksFailed.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Backends start healthy; the first check decides at once, so wait for it.
	for deadline := time.Now().Add(10 * time.Second); g.b.Stats.ChecksPassed.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no passing check after 10s (failed %d)", g.b.Stats.ChecksFailed.Load())
		}
	}
	waitHealth(pool.Healthy)
	if p.Ready() != 1 {
		t.Fatalf("ready = %d, want 1", p.Ready())
	}

	failed := g.b.Stats.ChecksFailed.Load()
	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(pool.Unhealthy)
	if got := g.b.Stats.ChecksFailed.Load() - failed; got < 2 {
		t.Errorf("down after %d failed checks, want unhealthy_threshold (2)", got)
	}
	if p.Ready() != 0 {
		t.Errorf("ready = %d with the backend down, want 0", p.Ready())
	}

	passed := g.b.Stats.ChecksPassed.Load()
	g.health.SetServingStatus("shop.v1.Cart", healthpb.HealthCheckResponse_SERVING)
	waitHealth(pool.Healthy)
	if got := g.b.Stats.ChecksPassed.Load() - passed; got < 2 {
		t.Errorf("up after %d passed checks, want healthy_threshold (2)", got)
	}
}
