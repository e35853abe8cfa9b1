package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newLimit(t *testing.T, p Params, o Options) (*Limit, *fakeClock) {
	t.Helper()
	if err := p.Check(); err != nil {
		t.Fatalf("Check(%+v): %v", p, err)
	}
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	o.Now = c.Now
	return New(p, o), c
}

var ctx = context.Background()

func TestTokenBucket(t *testing.T) {
	// 10 per second (one per 100ms), burst 3.
	l, clock := newLimit(t, Params{Rate: 10, Per: time.Second, Burst: 3}, Options{Name: "api"})
	k := TextKey("k")
	ms := time.Millisecond
	steps := []struct {
		advance time.Duration
		want    Decision
	}{
		{0, Decision{Allowed: true, Remaining: 2, Reset: 100 * ms}},
		{0, Decision{Allowed: true, Remaining: 1, Reset: 200 * ms}},
		{0, Decision{Allowed: true, Remaining: 0, Reset: 300 * ms}},
		{0, Decision{Allowed: false, RetryAfter: 100 * ms, Reset: 300 * ms}},
		{40 * ms, Decision{Allowed: false, RetryAfter: 60 * ms, Reset: 260 * ms}},
		{60 * ms, Decision{Allowed: true, Remaining: 0, Reset: 300 * ms}},
		{0, Decision{Allowed: false, RetryAfter: 100 * ms, Reset: 300 * ms}},
		// A full refill: the bucket holds burst again, no more.
		{time.Hour, Decision{Allowed: true, Remaining: 2, Reset: 100 * ms}},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		if diff := cmp.Diff(s.want, l.Allow(ctx, k)); diff != "" {
			t.Fatalf("step %d (+%v): decision (-want +got):\n%s", i, s.advance, diff)
		}
	}
}

func TestBurstDefaultsToRate(t *testing.T) {
	l, _ := newLimit(t, Params{Rate: 5, Per: time.Minute}, Options{})
	if got := l.Params().Burst; got != 5 {
		t.Errorf("Burst = %d, want 5 (the rate)", got)
	}
	if got, want := l.Params().Window(), time.Minute; got != want {
		t.Errorf("Window = %v, want %v", got, want)
	}
	allowed := 0
	for range 20 {
		if l.Allow(ctx, TextKey("k")).Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d of 20 requests at one instant allowed, want 5", allowed)
	}
}

func TestSustainedRate(t *testing.T) {
	// Over a long run the limit lets through rate per per, plus the burst.
	l, clock := newLimit(t, Params{Rate: 100, Per: time.Second, Burst: 20}, Options{})
	allowed := 0
	for range 10_000 { // one request per ms for 10 s: 10× the rate
		if l.Allow(ctx, TextKey("k")).Allowed {
			allowed++
		}
		clock.Advance(time.Millisecond)
	}
	if want := 100*10 + 20; allowed < want-1 || allowed > want {
		t.Errorf("%d requests allowed over 10s, want %d (rate × time + burst)", allowed, want)
	}
}

func TestKeysAreCountedApart(t *testing.T) {
	l, _ := newLimit(t, Params{Rate: 1, Per: time.Second}, Options{})
	keys := []Key{TextKey("a"), TextKey("b"), TextKey(""), AddrKey(netip.MustParseAddr("192.0.2.1")),
		AddrKey(netip.MustParseAddr("2001:db8::1"))}
	for _, k := range keys {
		if !l.Allow(ctx, k).Allowed {
			t.Errorf("first request of key %q refused", k)
		}
	}
	for _, k := range keys {
		if l.Allow(ctx, k).Allowed {
			t.Errorf("second request of key %q allowed, want refused", k)
		}
	}
}

func TestIdleKeysMakeRoom(t *testing.T) {
	// A table of 8 slots serves any number of keys as long as few are busy
	// at once: a key whose bucket is full again frees its slot.
	l, clock := newLimit(t, Params{Rate: 1, Per: time.Second}, Options{MaxKeys: 8})
	if got := l.local.size(); got != 8 {
		t.Fatalf("table size %d, want 8", got)
	}
	for i := range 1000 {
		k := TextKey(fmt.Sprint("client-", i))
		if !l.Allow(ctx, k).Allowed {
			t.Fatalf("key %d: first request refused", i)
		}
		if l.Allow(ctx, k).Allowed {
			t.Fatalf("key %d: second request allowed, want refused", i)
		}
		clock.Advance(time.Second) // key i is idle from here on
	}
	if got := l.local.size(); got != 8 {
		t.Errorf("table grew to %d slots, want 8", got)
	}
}

func TestFullTableForgetsTheBucketNearestFull(t *testing.T) {
	l, clock := newLimit(t, Params{Rate: 1, Per: time.Second, Burst: 10}, Options{MaxKeys: 8})
	// Eight keys fill every slot; key i has used 10-i of its 10 tokens,
	// one instant after another, so key 7 is nearest full.
	for i := range 8 {
		for range 10 - i {
			l.Allow(ctx, TextKey(fmt.Sprint("k", i)))
		}
	}
	clock.Advance(time.Millisecond)
	if !l.Allow(ctx, TextKey("newcomer")).Allowed {
		t.Fatal("a new key was refused by a full table")
	}
	// The busiest key is still limited...
	if d := l.Allow(ctx, TextKey("k0")); d.Allowed {
		t.Errorf("k0 (all tokens used) allowed after an eviction: %+v", d)
	}
	// ...and the one evicted (k7, 3 tokens used) starts afresh.
	if d := l.Allow(ctx, TextKey("k7")); !d.Allowed || d.Remaining != 9 {
		t.Errorf("k7 after eviction: %+v, want allowed with 9 remaining (a fresh bucket)", d)
	}
}

func TestConcurrentRequestsOfOneKey(t *testing.T) {
	// At one instant, exactly burst requests pass whatever the interleaving.
	l, _ := newLimit(t, Params{Rate: 100, Per: time.Second, Burst: 500}, Options{MaxKeys: 64})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if l.Allow(ctx, TextKey("shared")).Allowed {
					allowed.Add(1)
				}
				l.Allow(ctx, TextKey(fmt.Sprint("own-", g, "-", i%16)))
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 500 {
		t.Errorf("%d of 1600 concurrent requests allowed, want exactly the burst, 500", got)
	}
}

func TestParamsCheck(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		ok   bool
	}{
		{"plain", Params{Rate: 100, Per: time.Second}, true},
		{"daily quota", Params{Rate: 1000, Per: 24 * time.Hour, Burst: 1000}, true},
		{"zero rate", Params{Rate: 0, Per: time.Second}, false},
		{"zero per", Params{Rate: 1, Per: 0}, false},
		{"negative burst", Params{Rate: 1, Per: time.Second, Burst: -1}, false},
		{"faster than a microsecond", Params{Rate: 2_000_000, Per: time.Second}, false},
		{"refill over a year", Params{Rate: 1, Per: 24 * time.Hour, Burst: 400}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Check(); (err == nil) != tt.ok {
				t.Errorf("Check(%+v) = %v, want ok=%v", tt.p, err, tt.ok)
			}
		})
	}
}

// fakeStore answers from a script of results.
type fakeStore struct {
	d    Decision
	err  error
	keys []string
}

func (f *fakeStore) Take(_ context.Context, key string, _ Params) (Decision, error) {
	f.keys = append(f.keys, key)
	return f.d, f.err
}

func TestStoreDecidesAndLocalCountFollows(t *testing.T) {
	st := &fakeStore{d: Decision{Allowed: true, Remaining: 7}}
	l, _ := newLimit(t, Params{Rate: 1, Per: time.Second, Burst: 2}, Options{Name: "api", Store: st})
	for range 2 {
		if d := l.Allow(ctx, TextKey("k")); !d.Allowed || d.Remaining != 7 {
			t.Fatalf("with a store that allows: %+v, want the store's decision", d)
		}
	}
	if diff := cmp.Diff([]string{"api:k", "api:k"}, st.keys); diff != "" {
		t.Errorf("store keys (-want +got):\n%s", diff)
	}
	// The store fails: the local count, which saw the two requests the
	// store allowed, decides, and the burst of 2 is used up.
	st.err = errors.New("connection refused")
	if d := l.Allow(ctx, TextKey("k")); d.Allowed {
		t.Errorf("store down after the burst was used: %+v, want refused by the local count", d)
	}
	if d := l.Allow(ctx, TextKey("other")); !d.Allowed {
		t.Errorf("store down, new key: %+v, want allowed by the local count", d)
	}
}

func TestSame(t *testing.T) {
	st := &fakeStore{}
	p, o := Params{Rate: 10, Per: time.Second}, Options{Name: "a", Store: st}
	l := New(p, o)
	if !l.Same(Params{Rate: 10, Per: time.Second, Burst: 10}, Options{Name: "a", MaxKeys: DefaultMaxKeys, Store: st}) {
		t.Error("Same with the defaults spelt out = false, want true")
	}
	for name, c := range map[string]struct {
		p Params
		o Options
	}{
		"rate":  {Params{Rate: 11, Per: time.Second}, o},
		"name":  {p, Options{Name: "b", Store: st}},
		"store": {p, Options{Name: "a"}},
		"keys":  {p, Options{Name: "a", Store: st, MaxKeys: 8}},
	} {
		if l.Same(c.p, c.o) {
			t.Errorf("Same with another %s = true, want false", name)
		}
	}
}
