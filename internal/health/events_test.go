package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// kinds returns "kind backend reason" for every event of log.
func kinds(log *events.Log) []string {
	evs, _ := log.Since(0)
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s %s %s", e.Kind, e.Backend, e.Reason)
	}
	return out
}

// Every transition is one event with its reason, and the backend shows
// the reason of the last one from the event's time.
func TestCheckerEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		fp := &fakeProbe{fail: map[*pool.Backend]bool{bs[1]: true}}
		log := events.New(0, nil)
		c := New(p, hc(), discard, Options{Prober: fp.probe, Rand: func() uint64 { return 0 }, Events: log})
		stop := start(t, c)
		synctest.Wait()
		a, b := bs[0].Address, bs[1].Address

		fp.set(bs[1], false)
		for range 2 {
			time.Sleep(2 * time.Second)
			synctest.Wait()
		}
		fp.set(bs[0], true)
		for range 3 {
			time.Sleep(2 * time.Second)
			synctest.Wait()
		}
		c.Observe(bs[1], pool.StatusFailure(503)) // 1 of 5
		for range 3 {
			c.Observe(bs[1], pool.FailReset)
		}
		c.Observe(bs[1], pool.FailTimeout) // the fifth; one of two backends out is 50%: allowed
		time.Sleep(2 * time.Second)        // the next passing check brings it back
		synctest.Wait()
		stop()

		want := []string{
			"backend_up " + a + " the first health check passed",
			"backend_down " + b + " the first health check failed: refused",
			"backend_up " + b + " 2 consecutive health checks passed (healthy_threshold 2)",
			"backend_down " + a + " 3 consecutive health checks failed (unhealthy_threshold 3), the last: refused",
			"ejected " + b + " 5 consecutive failed requests, the last a timeout; out for 30s (ejection 1 in a row)",
			"returned " + b + " a health check passed after the ejection",
		}
		// The two first checks run concurrently: their order is not fixed.
		got := kinds(log)
		if len(got) > 2 {
			slices.Sort(got[:2])
			slices.Sort(want[:2])
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		last, _ := log.Since(log.Last() - 1)
		if r := bs[1].Reason(); r.Text != last[0].Reason || !r.Since.Equal(last[0].Time) {
			t.Errorf("backend reason %+v, want the last event's %q at %v", r, last[0].Reason, last[0].Time)
		}
	})
}

func TestCheckTimeoutReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 1)
		log := events.New(0, nil)
		hang := func(ctx context.Context, _ *pool.Backend) error { <-ctx.Done(); return ctx.Err() }
		c := New(p, hc(), discard, Options{Prober: hang, Events: log, Rand: func() uint64 { return 0 }})
		stop := start(t, c)
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		stop()
		want := []string{"backend_down " + bs[0].Address + " the first health check failed: timed out after 1s: context deadline exceeded"}
		if diff := cmp.Diff(want, kinds(log)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

func TestConnectFailedEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		log := events.New(0, nil)
		c := New(p, nil, discard, Options{Passive: config.PassiveHealth{EjectionTime: 30 * time.Second}, Events: log})
		stop := start(t, c)
		c.ConnectFailed(bs[0], errors.New("dial tcp 127.0.0.1:1000: connect: connection refused"))
		time.Sleep(31 * time.Second)
		synctest.Wait()
		stop()
		want := []string{
			"ejected " + bs[0].Address + " a request could not be sent: dial tcp 127.0.0.1:1000: connect: connection refused; out for 30s (ejection 1 in a row)",
			"returned " + bs[0].Address + " the ejection time is over",
		}
		if diff := cmp.Diff(want, kinds(log)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}
