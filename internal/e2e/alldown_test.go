package e2e

// What a client gets when backends die (issue 9, "The README says what a
// client really gets when backends die"): the README's tour, steps 3 and 4,
// with the demo's health settings scaled down. One killed backend costs no
// client anything (the refused request is retried at once on another one).
// When every backend refuses, a request exhausts its retries and gets 502
// without Retry-After, until the health checks have taken every backend out
// of rotation (at most unhealthy_threshold checks, each within
// interval × 1.1 because of the jitter); from then on every request gets 503
// with Retry-After, the check interval rounded up to whole seconds.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// The demo's health check, with its interval scaled down from 2s.
const (
	downInterval  = 250 * time.Millisecond
	downUnhealthy = 3 // the demo's unhealthy_threshold (the default)
	downHealthy   = 2 // the demo's healthy_threshold (the default)
	// downRetryAfter is Retry-After for downInterval: whole seconds, at
	// least 1.
	downRetryAfter = "1"
)

// allDownBound is how long after the last kill a client may still get 502:
// unhealthy_threshold failed checks, each at most interval × 1.1 after the
// one before, plus a generous margin for a loaded machine.
const allDownBound = downUnhealthy*downInterval*11/10 + 5*time.Second

// demoLikePool is a round robin pool over bs with the demo's health check
// (every downInterval on /health, thresholds 2 and 3), and the defaults of
// DESIGN.md for retries and passive health, as in the demo.
func demoLikePool(bs ...*demoBackend) config.Pool {
	p := poolOf("web", bs...)
	p.HealthCheck = &config.HealthCheck{Path: "/health", Interval: downInterval, Timeout: downInterval,
		HealthyThreshold: downHealthy, UnhealthyThreshold: downUnhealthy}
	return p
}

// answer is one response seen after the backends were killed.
type answer struct {
	at         time.Duration // since the kill
	status     int
	retryAfter string
	backend    string
}

func (a answer) String() string {
	ra := "no Retry-After"
	if a.retryAfter != "" {
		ra = "Retry-After: " + a.retryAfter
	}
	s := fmt.Sprintf("+%v %d %s", a.at.Round(time.Millisecond), a.status, ra)
	if a.backend != "" {
		s += " from " + a.backend
	}
	return s
}

// summary collapses a sequence of answers into runs, for failure messages
// and the log: "502 no Retry-After ×12 (+1ms…+480ms), 503 Retry-After: 1 ×40 (…)".
func summary(as []answer) string {
	var b strings.Builder
	for i := 0; i < len(as); {
		j := i
		for j < len(as) && as[j].status == as[i].status && as[j].retryAfter == as[i].retryAfter {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		ra := "no Retry-After"
		if as[i].retryAfter != "" {
			ra = "Retry-After: " + as[i].retryAfter
		}
		fmt.Fprintf(&b, "%d %s ×%d (+%v…+%v)", as[i].status, ra, j-i,
			as[i].at.Round(time.Millisecond), as[j-1].at.Round(time.Millisecond))
		i = j
	}
	return b.String()
}

// expectAllDown sends GETs to url, 10ms apart, from just after the kill
// (at killed) until every backend is out of rotation, and then 20 more. It
// fails the test unless the answers are 502 without Retry-After, then 503
// with Retry-After downRetryAfter, with no 502 after the first 503, and the
// first 503 comes within allDownBound of the kill. It returns the answers.
func expectAllDown(t *testing.T, url string, killed time.Time) []answer {
	t.Helper()
	c := newClient(t)
	var as []answer
	first503 := -1
	for first503 < 0 || len(as) < first503+20 {
		if first503 < 0 && time.Since(killed) > allDownBound {
			t.Fatalf("no 503 within %v of the kill: every backend refuses connections, so the health checks "+
				"(%d failures at %v) must have taken all out; answers: %s",
				allDownBound, downUnhealthy, downInterval, summary(as))
		}
		r, err := tryGet(c, url)
		if err != nil {
			t.Fatalf("request %d, %v after the kill: %v (want an answer, 502 or 503, never a hang or a closed "+
				"connection); answers before: %s", len(as), time.Since(killed).Round(time.Millisecond), err, summary(as))
		}
		a := answer{at: time.Since(killed), status: r.Status, retryAfter: r.Header.Get("Retry-After"),
			backend: r.Header.Get("X-Backend")}
		as = append(as, a)
		switch {
		case a.backend != "":
			t.Fatalf("answer %s came from a backend that was killed", a)
		case a.status == 502 && a.retryAfter == "" && first503 < 0:
			// Retries exhausted against backends that refuse connections.
		case a.status == 502 && a.retryAfter == "":
			t.Fatalf("answer %s after a 503: once the checks have taken every backend out, every answer is 503 "+
				"until one passes a check again; answers: %s", a, summary(as))
		case a.status == 503 && a.retryAfter == downRetryAfter:
			if first503 < 0 {
				first503 = len(as) - 1
			}
		default:
			t.Fatalf("answer %s: want 502 without Retry-After or 503 with Retry-After: %s "+
				"(the check interval %v rounded up to whole seconds); answers: %s",
				a, downRetryAfter, downInterval, summary(as))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("after the kill: %s", summary(as))
	return as
}

// expectRecovery restarts bs and waits (bounded) until every one of them
// answers through url again: a 503's Retry-After promises that the pool
// comes back on its own.
func expectRecovery(t *testing.T, url string, bs []*demoBackend) {
	t.Helper()
	names := make([]string, len(bs))
	for i, b := range bs {
		b.Restart()
		names[i] = b.Name
	}
	waitBackends(t, newClient(t), url, names...)
}

func TestKilledBackendsGive502Then503WithRetryAfter(t *testing.T) {
	t.Parallel()

	// The README's tour: kill one backend (clients notice nothing), then the
	// two others.
	t.Run("one, then the rest", func(t *testing.T) {
		t.Parallel()
		bs := startBackends(t, "t1", "t2", "t3")
		s := startSluice(t, oneListener(demoLikePool(bs...)))
		url := s.URL("public") + "/"
		c := newClient(t)
		waitBackends(t, c, url, "t1", "t2", "t3")

		bs[1].Stop()
		// Long enough to span the passive mark-down (the first request
		// refused by t2) and the health checks that take t2 out.
		deadline := time.Now().Add(downUnhealthy*downInterval*11/10 + 300*time.Millisecond)
		n := 0
		for ; n < 30 || time.Now().Before(deadline); n++ {
			r, err := tryGet(c, url)
			if err != nil {
				t.Fatalf("request %d after killing t2: %v", n, err)
			}
			if r.Status != 200 || r.Header.Get("X-Backend") == "t2" {
				t.Fatalf("request %d after killing t2: status %d from %q, want 200 from t1 or t3 "+
					"(a refused connection is retried at once on another backend); body %.100q",
					n, r.Status, r.Header.Get("X-Backend"), r.Body)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%d requests after killing t2: all 200", n)

		killed := time.Now()
		bs[0].Stop()
		bs[2].Stop()
		expectAllDown(t, url, killed)
		expectRecovery(t, url, bs)
	})

	// All three at once, from a healthy pool: passive mark-down takes out
	// at most max_ejection_percent (one of three), the checks the rest.
	t.Run("all at once", func(t *testing.T) {
		t.Parallel()
		bs := startBackends(t, "a1", "a2", "a3")
		s := startSluice(t, oneListener(demoLikePool(bs...)))
		url := s.URL("public") + "/"
		waitBackends(t, newClient(t), url, "a1", "a2", "a3")

		killed := time.Now()
		for _, b := range bs {
			b.Stop()
		}
		expectAllDown(t, url, killed)
		expectRecovery(t, url, bs)
	})
}
