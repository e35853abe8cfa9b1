package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func newPool(t *testing.T, n int) (*pool.Pool, []*pool.Backend) {
	t.Helper()
	var bs []*pool.Backend
	for i := range n {
		u := &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", string(rune('1'+i))+"000")}
		bs = append(bs, pool.NewBackend(u.String(), u, 1))
	}
	return pool.New("web", balance.RoundRobin{}, bs), bs
}

// fakeProbe answers checks from a map that tests flip.
type fakeProbe struct {
	mu   sync.Mutex
	fail map[*pool.Backend]bool
}

func (f *fakeProbe) probe(_ context.Context, b *pool.Backend) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[b] {
		return errors.New("refused")
	}
	return nil
}

func (f *fakeProbe) set(b *pool.Backend, fail bool) {
	f.mu.Lock()
	f.fail[b] = fail
	f.mu.Unlock()
}

// start runs c's loop; stop ends it and waits for it.
func start(t *testing.T, c *Checker) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func hc() *config.HealthCheck {
	return &config.HealthCheck{Type: "http", Path: "/health", Interval: 2 * time.Second, Timeout: time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 3, ExpectStatus: "200-399", ExpectMin: 200, ExpectMax: 399}
}

func TestRiseFall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		fp := &fakeProbe{fail: map[*pool.Backend]bool{bs[1]: true}}
		c := New(p, hc(), discard, Options{Prober: fp.probe, Rand: func() uint64 { return 0 }})
		stop := start(t, c)

		// The first check runs at start-up and decides at once.
		synctest.Wait()
		if got, want := bs[1].Health(), pool.Unhealthy; got != want {
			t.Fatalf("after first failing check: health = %v, want %v", got, want)
		}
		if got, want := p.Ready(), 1; got != want {
			t.Fatalf("ready = %d, want %d", got, want)
		}

		// Recovery needs healthy_threshold (2) passes: one interval is not enough.
		fp.set(bs[1], false)
		time.Sleep(2 * time.Second) // interval with zero jitter offset = 1.8s
		synctest.Wait()
		if got, want := bs[1].Health(), pool.Unhealthy; got != want {
			t.Fatalf("after 1 pass: health = %v, want %v", got, want)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got, want := bs[1].Health(), pool.Healthy; got != want {
			t.Fatalf("after 2 passes: health = %v, want %v", got, want)
		}

		// Going down needs unhealthy_threshold (3) consecutive failures.
		fp.set(bs[0], true)
		for i, want := range []pool.Health{pool.Healthy, pool.Healthy, pool.Unhealthy} {
			time.Sleep(2 * time.Second)
			synctest.Wait()
			if got := bs[0].Health(); got != want {
				t.Fatalf("after %d failures: health = %v, want %v", i+1, got, want)
			}
		}
		if got, want := bs[0].Stats.ChecksFailed.Load(), uint64(3); got != want {
			t.Errorf("checks failed = %d, want %d", got, want)
		}
		stop()
	})
}

func TestPassiveDownReturnsOnPassingCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		fp := &fakeProbe{fail: map[*pool.Backend]bool{}}
		c := New(p, hc(), discard, Options{Prober: fp.probe, Rand: func() uint64 { return 0 }})
		stop := start(t, c)
		synctest.Wait()

		c.ConnectFailed(bs[0], errors.New("connection refused"))
		if got, want := bs[0].State(), "ejected"; got != want {
			t.Fatalf("after connect failure: state = %q, want %q", got, want)
		}
		if got, want := p.Ready(), 1; got != want {
			t.Fatalf("ready = %d, want %d", got, want)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got, want := bs[0].State(), "healthy"; got != want {
			t.Fatalf("after one passing check: state = %q, want %q", got, want)
		}
		stop()
	})
}

func TestPassiveDownWithoutActiveChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		c := New(p, nil, discard, Options{Passive: config.PassiveHealth{EjectionTime: 30 * time.Second}})
		stop := start(t, c)
		synctest.Wait()
		c.ConnectFailed(bs[0], errors.New("refused"))
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if got, want := bs[0].State(), "ejected"; got != want {
			t.Fatalf("before ejection time: state = %q, want %q", got, want)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got, want := bs[0].State(), "healthy"; got != want {
			t.Fatalf("after ejection time: state = %q, want %q", got, want)
		}
		stop()
	})
}

func TestConnectFailureHonoursMaxEjectionPercent(t *testing.T) {
	// A lone backend that refuses a connection stays in: ejecting it would
	// turn a one-second restart into ejection_time of 503s.
	p, bs := newPool(t, 1)
	c := New(p, nil, discard, Options{})
	c.ConnectFailed(bs[0], errors.New("refused"))
	if got := bs[0].State(); got != "healthy" {
		t.Errorf("lone backend: state = %q, want healthy", got)
	}
	// Of three, one may go (33%), a second may not (67% > 50%).
	p, bs = newPool(t, 3)
	c = New(p, nil, discard, Options{})
	c.ConnectFailed(bs[0], errors.New("refused"))
	c.ConnectFailed(bs[1], errors.New("refused"))
	if got := []string{bs[0].State(), bs[1].State()}; got[0] != "ejected" || got[1] != "healthy" {
		t.Errorf("states = %v, want [ejected healthy]", got)
	}
}

func TestHTTPProber(t *testing.T) {
	status := http.StatusOK
	var mu sync.Mutex
	var gotHost string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		gotHost = r.Host
		w.WriteHeader(status)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	b := pool.NewBackend(srv.URL, u, 1)
	h := hc()
	h.Host = "health.example"
	probe := newProber(h, Options{})
	tests := []struct {
		status int
		ok     bool
	}{{200, true}, {302, true}, {404, false}, {503, false}}
	for _, tt := range tests {
		mu.Lock()
		status = tt.status
		mu.Unlock()
		err := probe(t.Context(), b)
		if (err == nil) != tt.ok {
			t.Errorf("status %d: err = %v, want ok=%v", tt.status, err, tt.ok)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if gotHost != "health.example" {
		t.Errorf("Host header = %q, want %q", gotHost, "health.example")
	}

	srv.Close()
	if err := probe(t.Context(), b); err == nil {
		t.Errorf("probe of a closed server passed, want an error")
	}
	if err := newProber(&config.HealthCheck{Type: "tcp"}, Options{})(t.Context(), b); err == nil {
		t.Errorf("tcp probe of a closed server passed, want an error")
	}
}

// TestInheritKeepsRiseFall: a reload hands the check history to the new
// loop, so fall counts go on instead of the first result deciding.
func TestInheritKeepsRiseFall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		fp := &fakeProbe{fail: map[*pool.Backend]bool{}}
		opts := Options{Prober: fp.probe, Rand: func() uint64 { return 0 }}
		old := New(p, hc(), discard, opts)
		stop := start(t, old)
		synctest.Wait() // first checks pass
		fp.set(bs[0], true)
		for range 2 {
			time.Sleep(2 * time.Second)
			synctest.Wait()
		}
		stop()
		if got := bs[0].Health(); got != pool.Healthy {
			t.Fatalf("after 2 of 3 failures: %v, want healthy", got)
		}
		next := New(p, hc(), discard, opts)
		next.Inherit(old)
		stop = start(t, next)
		synctest.Wait()
		if got := bs[0].Health(); got != pool.Healthy {
			t.Fatalf("right after the hand-over: %v, want still healthy (no decisive first check)", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := bs[0].Health(); got != pool.Unhealthy {
			t.Fatalf("after the third failure, across the hand-over: %v, want unhealthy", got)
		}
		stop()
	})
}
