package health

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

func fail(c *Checker, b *pool.Backend, n int) {
	for range n {
		c.Observe(b, pool.StatusFailure(502))
	}
}

func TestOutlierEjection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 4)
		c := New(p, nil, discard, Options{Passive: config.PassiveHealth{
			ConsecutiveFailures: 5, EjectionTime: 30 * time.Second, MaxEjectionPercent: 50}})
		stop := start(t, c)

		// A success in between resets the count.
		fail(c, bs[0], 4)
		c.Observe(bs[0], pool.NoFailure)
		fail(c, bs[0], 4)
		if got := bs[0].State(); got != "healthy" {
			t.Fatalf("after 4+4 failures split by a success: state = %q, want healthy", got)
		}
		fail(c, bs[0], 1)
		if got := bs[0].State(); got != "ejected" {
			t.Fatalf("after 5 consecutive failures: state = %q, want ejected", got)
		}
		fail(c, bs[1], 5)
		fail(c, bs[2], 5) // a third ejection would exceed 50% of 4
		if got := []string{bs[1].State(), bs[2].State()}; got[0] != "ejected" || got[1] != "healthy" {
			t.Fatalf("states = %v, want [ejected healthy] (max_ejection_percent 50)", got)
		}

		// The first ejection lasts ejection_time.
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if got := bs[0].State(); got != "ejected" {
			t.Fatalf("at 29s: state = %q, want ejected", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := bs[0].State(); got != "healthy" {
			t.Fatalf("at 31s: state = %q, want healthy", got)
		}

		// Ejected again at once: twice as long.
		fail(c, bs[0], 5)
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if got := bs[0].State(); got != "ejected" {
			t.Fatalf("second ejection at 59s: state = %q, want ejected", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := bs[0].State(); got != "healthy" {
			t.Fatalf("second ejection at 61s: state = %q, want healthy", got)
		}
		if got := bs[0].Stats.Ejections.Load(); got != 2 {
			t.Errorf("ejections = %d, want 2", got)
		}

		// Staying in for two ejection times forgets both ejections.
		time.Sleep(61 * time.Second)
		synctest.Wait()
		if got := bs[0].EjectMultiplier.Load(); got != 0 {
			t.Errorf("multiplier after a calm minute = %d, want 0", got)
		}
		stop()
	})
}

func TestEjectedBackendReturnsOnPassingCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		fp := &fakeProbe{fail: map[*pool.Backend]bool{}}
		c := New(p, hc(), discard, Options{Prober: fp.probe, Rand: func() uint64 { return 0 }})
		stop := start(t, c)
		synctest.Wait()
		fail(c, bs[0], 5)
		if got := bs[0].State(); got != "ejected" {
			t.Fatalf("state = %q, want ejected", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := bs[0].State(); got != "healthy" {
			t.Fatalf("after a passing check: state = %q, want healthy", got)
		}
		stop()
	})
}
