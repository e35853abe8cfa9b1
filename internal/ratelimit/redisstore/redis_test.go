package redisstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/ratelimit"
	"github.com/sluice-lb/sluice/internal/ratelimit/redistest"
)

var ctx = context.Background()

// waitFor polls cond every 10ms for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// instance is one sluice's view of a limit: its own store client and its
// own local count.
type instance struct {
	store *Redis
	limit *ratelimit.Limit
	ev    *events.Log
}

func newInstance(t *testing.T, addr string, p ratelimit.Params) *instance {
	ev := events.New(0, nil)
	st := NewRedis(RedisOptions{Address: addr, Prefix: "test:", Events: ev, Retry: 50 * time.Millisecond})
	t.Cleanup(func() { st.Close() })
	return &instance{store: st, limit: ratelimit.New(p, ratelimit.Options{Name: "api", Store: st}), ev: ev}
}

// kinds returns the kinds of the events published so far.
func (in *instance) kinds() []events.Kind {
	evs, _ := in.ev.Since(0)
	var ks []events.Kind
	for _, e := range evs {
		ks = append(ks, e.Kind)
	}
	return ks
}

// allowed sends n requests of key through each instance in turn and counts
// those allowed.
func allowed(ins []*instance, key string, n int) int {
	got := 0
	for i := range n {
		if ins[i%len(ins)].limit.Allow(ctx, ratelimit.TextKey(key)).Allowed {
			got++
		}
	}
	return got
}

func TestRedisSharesOneLimitAndFallsBackAlone(t *testing.T) {
	rs := redistest.Start(t)
	// 10 per minute: refill during the test is nil, so counts are exact.
	p := ratelimit.Params{Rate: 10, Per: time.Minute}
	a, b := newInstance(t, rs.Addr, p), newInstance(t, rs.Addr, p)
	ins := []*instance{a, b}
	for _, in := range ins {
		waitFor(t, "store up", in.store.Up)
	}

	// Shared: two instances together let the burst through, once.
	if got := allowed(ins, "alice", 40); got != 10 {
		t.Errorf("shared: %d of 40 requests through two instances allowed, want 10 (one limit)", got)
	}
	d := a.limit.Allow(ctx, ratelimit.TextKey("alice"))
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 6*time.Second || d.Reset < 59*time.Second {
		t.Errorf("refused decision from Redis = %+v, want refused, retry after ≤ 6s, reset ≈ 60s", d)
	}
	if d := b.limit.Allow(ctx, ratelimit.TextKey("bob")); !d.Allowed || d.Remaining != 9 {
		t.Errorf("bob's first request: %+v, want allowed with 9 remaining", d)
	}
	for _, k := range rs.Keys() {
		if !strings.HasPrefix(k, "test:") {
			t.Errorf("Redis key %q does not start with the prefix test:", k)
		}
	}
	if a.store.Errors() != 0 {
		t.Errorf("errors = %d with Redis up, want 0", a.store.Errors())
	}

	// Redis dies: each instance counts alone, never without a limit and
	// never refusing everything.
	rs.Stop()
	for _, in := range ins {
		for range 2 * tripAfter {
			in.limit.Allow(ctx, ratelimit.TextKey("carol"))
		}
		waitFor(t, "store down", func() bool { return !in.store.Up() })
	}
	for i, in := range ins {
		if got := allowed([]*instance{in}, "dave", 30); got != 10 {
			t.Errorf("instance %d alone: %d of 30 allowed, want 10 (its own full limit)", i, got)
		}
		if in.store.Errors() < tripAfter {
			t.Errorf("instance %d: errors = %d after Redis died, want at least %d", i, in.store.Errors(), tripAfter)
		}
	}
	// Alice was at her limit in the shared count, and each instance counted
	// the requests it let through for her: a's 5 and b's 5 of the 10.
	if got := allowed([]*instance{a}, "alice", 10); got != 5 {
		t.Errorf("alice through a alone: %d of 10 allowed, want 5 (the rest of its own count)", got)
	}

	// Redis is back: shared again (an empty Redis: fresh buckets).
	rs.Start()
	for _, in := range ins {
		waitFor(t, "store up again", in.store.Up)
	}
	if got := allowed(ins, "erin", 40); got != 10 {
		t.Errorf("shared again: %d of 40 allowed, want 10", got)
	}
	for i, in := range ins {
		want := []events.Kind{events.RateLimitStoreUp, events.RateLimitStoreDown, events.RateLimitStoreUp}
		if got := in.kinds(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("instance %d events %v, want %v (each transition once)", i, got, want)
		}
	}
}

func TestRedisDownAtStartCountsAlone(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	in := newInstance(t, rs.Addr, ratelimit.Params{Rate: 3, Per: time.Minute})
	waitFor(t, "the down event", func() bool { return len(in.kinds()) > 0 })
	if got := allowed([]*instance{in}, "k", 10); got != 3 {
		t.Errorf("Redis down from the start: %d of 10 allowed, want 3 (the local limit)", got)
	}
	if got := in.kinds(); len(got) != 1 || got[0] != events.RateLimitStoreDown {
		t.Errorf("events %v, want one %s", got, events.RateLimitStoreDown)
	}
	waitFor(t, "errors counted", func() bool { return in.store.Errors() > 0 })
}
