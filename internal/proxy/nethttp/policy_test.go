package nethttp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// TestLoadAwarePoliciesAvoidSlowBackend runs real loopback backends, one
// made slow, behind the handler: the load-aware policies send it clearly
// less than its third, and give it its share back once it is fast again.
func TestLoadAwarePoliciesAvoidSlowBackend(t *testing.T) {
	for _, name := range []string{"least_requests", "p2c"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pol, err := balance.New(name, balance.Options{})
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t, 3, pol, nil)
			var slow atomic.Bool
			slow.Store(true)
			// Replace backend c with one that is slow while slow is set.
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if slow.Load() {
					time.Sleep(40 * time.Millisecond)
				}
				w.Header().Set("X-Backend", "c")
			}))
			t.Cleanup(srv.Close)
			u, _ := url.Parse(srv.URL)
			old := f.pool.Backends()[2]
			f.pool.Remove(old)
			f.pool.Add(pool.NewBackend(srv.URL, u, 1))

			share := func(n int) float64 {
				var mu sync.Mutex
				counts := map[string]int{}
				var wg sync.WaitGroup
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range n / 8 {
							resp, err := f.proxy.Client().Get(f.proxy.URL + "/")
							if err != nil {
								t.Error(err)
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							mu.Lock()
							counts[resp.Header.Get("X-Backend")]++
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				return float64(counts["c"]) / float64(n)
			}
			// Clearly less than its third (a loaded machine narrows the
			// latency gap the policies see).
			if got := share(800); got > 0.25 {
				t.Errorf("slow backend got %.2f of requests, want < 0.25", got)
			}
			// Recovery: least_requests sees it at once through in-flight
			// counts; p2c once its latency average has decayed (τ = 10s) and
			// probes find it fast. Poll in bounded batches.
			slow.Store(false)
			deadline := time.Now().Add(2 * time.Minute)
			for {
				got := share(200)
				if got >= 0.25 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after recovery the backend still gets %.2f of requests, want ≥ 0.25", got)
				}
				time.Sleep(time.Second)
			}
		})
	}
}

// TestMaxConnectionsPerBackendQueues holds every backend busy: further
// requests wait in the queue and are served when a slot frees, and with no
// queue they get 503 at once.
func TestMaxConnectionsPerBackendQueues(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	t.Cleanup(srv.Close)
	f := newFixture(t, 0, balance.RoundRobin{}, nil)
	u, _ := url.Parse(srv.URL)
	f.pool.Add(pool.NewBackend(srv.URL, u, 1))
	f.pool.Limit.PerBackend, f.pool.Limit.MaxQueue, f.pool.Limit.Timeout = 1, 1, 10*time.Second

	status := make(chan int, 3)
	get := func() {
		resp, err := f.proxy.Client().Get(f.proxy.URL + "/")
		if err != nil {
			t.Error(err)
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}
	go get()
	<-entered // the backend's one slot is taken
	go get()
	deadline := time.Now().Add(5 * time.Second)
	for f.pool.Limit.Queued() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("second request never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	go get() // the queue (max 1) is full: 503 at once
	if got := <-status; got != http.StatusServiceUnavailable {
		t.Fatalf("third request: status %d, want 503", got)
	}
	close(release)
	for range 2 {
		if got := <-status; got != 200 {
			t.Errorf("queued request: status %d, want 200", got)
		}
	}
}

// TestConsistentHashThroughTheHandler: requests keyed by a header stick to
// one backend, and only the keys of a backend that goes down move.
func TestConsistentHashThroughTheHandler(t *testing.T) {
	pol, err := balance.New("consistent_hash", balance.Options{HashKey: "header:X-User"})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 4, pol, func(tg *proxy.Target) { tg.HashKey = proxy.ParseHashKey("header:X-User") })
	route := func(user string) string {
		req, _ := http.NewRequest("GET", f.proxy.URL+"/", nil)
		req.Header.Set("X-User", user)
		resp, err := f.proxy.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	before := map[string]string{}
	for i := range 200 {
		u := "user-" + strconv.Itoa(i)
		before[u] = route(u)
		if again := route(u); again != before[u] {
			t.Fatalf("%s went to %s, then %s", u, before[u], again)
		}
	}
	down := f.pool.Find(f.backends[0].URL)
	f.pool.SetHealth(down, pool.Unhealthy, time.Time{})
	moved := 0
	for u, b := range before {
		now := route(u)
		if b != "a" && now != b {
			t.Errorf("%s moved from healthy backend %s to %s", u, b, now)
		}
		if b == "a" {
			moved++
			if now == "a" {
				t.Errorf("%s still on the down backend", u)
			}
		}
	}
	if moved == 0 || moved > 100 {
		t.Errorf("%d of 200 keys were on the backend taken down, want roughly 50", moved)
	}
}
