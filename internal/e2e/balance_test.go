package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// sequence sends n sequential GETs and returns the X-Backend of each; every
// answer must be 200.
func sequence(t *testing.T, c *http.Client, url string, n int) []string {
	t.Helper()
	seq := make([]string, n)
	for i := range seq {
		r := get(t, c, url)
		if r.Status != 200 {
			t.Fatalf("request %d: status %d, want 200; body %q", i, r.Status, r.Body)
		}
		seq[i] = r.Header.Get("X-Backend")
	}
	return seq
}

// isRotation reports whether seq is pattern repeated, starting at some
// offset of pattern.
func isRotation(seq, pattern []string) bool {
	for k := range pattern {
		ok := true
		for i, s := range seq {
			if s != pattern[(i+k)%len(pattern)] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func TestRoundRobinOrderOverThreeBackends(t *testing.T) {
	bs := startBackends(t, "a", "b", "c")
	p := poolOf("web", bs...)
	p.HealthCheck = checked(500 * time.Millisecond)
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	waitBackends(t, c, s.URL("public")+"/", "a", "b", "c")

	seq := sequence(t, c, s.URL("public")+"/", 9)
	cycle := seq[:3]
	distinct := map[string]bool{}
	for _, b := range cycle {
		distinct[b] = true
	}
	if len(distinct) != 3 || !distinct["a"] || !distinct["b"] || !distinct["c"] {
		t.Fatalf("first three backends %q, want a, b and c in some order (sequence %q)", cycle, seq)
	}
	if !isRotation(seq, cycle) {
		t.Fatalf("backend sequence %q does not repeat %q", seq, cycle)
	}
}

func TestWeightedRoundRobinExactSequence(t *testing.T) {
	bs := startBackends(t, "A", "B")
	p := poolOf("web", bs...)
	p.Backends[0].Weight = 1
	p.Backends[1].Weight = 3
	p.HealthCheck = checked(500 * time.Millisecond)
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	waitBackends(t, c, s.URL("public")+"/", "A", "B")

	// Smooth weighted round robin (nginx) over A:1, B:3 gives B A B B.
	want := []string{"B", "A", "B", "B"}
	seq := sequence(t, c, s.URL("public")+"/", 8)
	if !isRotation(seq, want) {
		t.Fatalf("backend sequence %q is not a rotation of %q repeated", seq, want)
	}
}

func TestKilledBackendCausesNoClientError(t *testing.T) {
	bs := startBackends(t, "a", "b", "c")
	p := poolOf("web", bs...)
	// As with checked: late checks on a loaded machine never take a live
	// backend out; the killed one leaves at its first refused connection.
	p.HealthCheck = &config.HealthCheck{Path: "/health", Interval: time.Second, Timeout: 500 * time.Millisecond,
		HealthyThreshold: 2, UnhealthyThreshold: 61}
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	url := s.URL("public") + "/"
	waitBackends(t, c, url, "a", "b", "c")

	victim := bs[1]
	const total, killAt = 300, 100
	var afterKill []string
	for i := range total {
		if i == killAt {
			victim.Stop()
		}
		r, err := tryGet(c, url)
		if err != nil {
			t.Fatalf("request %d (killed backend %s before request %d): %v", i, victim.Name, killAt, err)
		}
		if r.Status != 200 {
			t.Fatalf("request %d (killed backend %s before request %d): status %d, want 200; body %q",
				i, victim.Name, killAt, r.Status, r.Body)
		}
		if i >= killAt {
			afterKill = append(afterKill, r.Header.Get("X-Backend"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, b := range afterKill {
		if b == victim.Name {
			t.Fatalf("request %d after the kill was answered by the killed backend %s", i, b)
		}
	}

	victim.Restart()
	// healthy_threshold 2 at 1s intervals: back within a few seconds.
	eventually(t, 15*time.Second, "the restarted backend answers again", func() bool {
		r, err := tryGet(c, url)
		if err != nil || r.Status != 200 {
			t.Errorf("after restart: err %v, status %d", err, r.Status)
			return true
		}
		return r.Header.Get("X-Backend") == victim.Name
	})
}

func TestAllBackendsDownGives503WithRetryAfter(t *testing.T) {
	p := config.Pool{Name: "web", Balance: "round_robin", Backends: []config.Backend{
		{Address: "http://" + testenv.DeadAddr(t)}, {Address: "http://" + testenv.DeadAddr(t)},
	}}
	p.HealthCheck = checked(500 * time.Millisecond)
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	var r reply
	eventually(t, 10*time.Second, "a request gets 503 once every backend is down", func() bool {
		var err error
		r, err = tryGet(c, s.URL("public")+"/")
		return err == nil && r.Status == http.StatusServiceUnavailable
	})
	if ra := r.Header.Get("Retry-After"); ra == "" {
		t.Errorf("503 without Retry-After; header %v", r.Header)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if len(r.Body) == 0 || len(r.Body) > 200 {
		t.Errorf("body %q: want a short text", r.Body)
	}
	if strings.Contains(r.Body, "127.0.0.1") {
		t.Errorf("body %q reveals a backend address", r.Body)
	}
}

func TestHungBackendGives504(t *testing.T) {
	b := startBackend(t, "slow")
	p := poolOf("web", b)
	p.Timeouts.ResponseHeader = 500 * time.Millisecond
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	// The client's 5s bound ends the test long before the backend's 10s.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("public")+"/delay/10s", nil)
	r := do(t, c, req)
	if r.Status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504; body %q", r.Status, r.Body)
	}
	if len(r.Body) == 0 || len(r.Body) > 200 {
		t.Errorf("body %q: want a short text", r.Body)
	}
}

func TestNineParallelClients(t *testing.T) {
	bs := startBackends(t, "a", "b", "c")
	s := startSluice(t, oneListener(poolOf("web", bs...)))
	url := s.URL("public") + "/"
	const clients, each = 9, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for i := range clients {
		c := newClient(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				r, err := tryGet(c, url)
				switch {
				case err != nil:
					errs <- fmt.Errorf("client %d request %d: %v", i, j, err)
				case r.Status != 200:
					errs <- fmt.Errorf("client %d request %d: status %d, body %q", i, j, r.Status, r.Body)
				case !strings.HasPrefix(r.Body, "Hello from "):
					errs <- fmt.Errorf("client %d request %d: body %q, want Hello from …", i, j, r.Body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
