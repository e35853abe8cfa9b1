package proxy

import (
	"context"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/ratelimit"
	"github.com/sluice-lb/sluice/internal/ratelimit/redisstore"
	"github.com/sluice-lb/sluice/internal/ratelimit/redistest"
	"github.com/sluice-lb/sluice/internal/route"
)

// limitedListener is a listener over one pool with a listener limit of
// per-hour listenerRate by client address and, on route 0 (/api), one of
// per-hour routeRate by X-Api-Key.
func limitedListener(listenerRate, routeRate int64, store ratelimit.Store) *Listener {
	t, _, _ := target(1, config.Retries{})
	lim := func(name string, rate int64) *ratelimit.Limit {
		o := ratelimit.Options{Name: name}
		if store != nil {
			o.Store = store
		}
		return ratelimit.New(ratelimit.Params{Rate: rate, Per: time.Hour}, o)
	}
	return &Listener{
		Name:      "public",
		Routes:    route.Compile([]config.Route{{PathPrefix: "/api", Pool: "p"}, {PathPrefix: "/", Pool: "p"}}, "", func(string) int { return 0 }),
		Targets:   []*Target{t},
		RateLimit: &RateLimit{Limit: lim("public", listenerRate)},
		RouteLimits: []*RateLimit{
			{Key: ParseHashKey("header:X-Api-Key"), Limit: lim("api", routeRate)},
		},
		RateLimited: new(atomic.Uint64),
	}
}

var client = netip.MustParseAddrPort("192.0.2.7:40000").Addr()

func resolve(l *Listener, path, apiKey string) Limited {
	h := http.Header{}
	if apiKey != "" {
		h.Set("X-Api-Key", apiKey)
	}
	var info pool.PickInfo
	r := Record{Info: &info}
	t, lim := l.Resolve(context.Background(), &r, "example.com", path, "", headerFields(h), client)
	if (t == nil) == !lim.Refused() {
		panic("Resolve must return a target or a refusal")
	}
	return lim
}

func TestResolveAppliesListenerThenRouteLimits(t *testing.T) {
	l := limitedListener(5, 2, nil)
	var got []string
	for _, req := range []struct{ path, key string }{
		{"/api", "a"}, {"/api", "a"}, {"/api", "a"}, // the route's limit: 2 for key a
		{"/api", "b"}, // key b has its own
		{"/", ""},     // the listener's 5th
		{"/", ""},     // the listener's limit
		{"/api", "c"}, // refused by the listener before the route is asked
	} {
		lim := resolve(l, req.path, req.key)
		name := "allowed"
		if lim.Refused() {
			name = lim.Limit.Name()
		}
		got = append(got, name)
	}
	want := []string{"allowed", "allowed", "api", "allowed", "allowed", "public", "public"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
	if n := l.RateLimited.Load(); n != 3 {
		t.Errorf("RateLimited = %d, want 3", n)
	}
}

func TestRefusalFields(t *testing.T) {
	l := ratelimit.New(ratelimit.Params{Rate: 10, Per: time.Minute, Burst: 20}, ratelimit.Options{Name: "api"})
	x := Limited{Limit: l, Decision: ratelimit.Decision{RetryAfter: 5900 * time.Millisecond, Reset: 119*time.Second + time.Millisecond}}
	var got [][2]string
	x.EachField(func(name string, value []byte) { got = append(got, [2]string{name, string(value)}) })
	want := [][2]string{
		{"Retry-After", "6"},
		{"RateLimit-Policy", `"api";q=20;w=120`},
		{"RateLimit", `"api";r=0;t=120`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	// Less than a second still says 1: never 0.
	x.RetryAfter, x.Reset = time.Millisecond, time.Millisecond
	got = nil
	x.EachField(func(name string, value []byte) { got = append(got, [2]string{name, string(value)}) })
	if got[0][1] != "1" || got[2][1] != `"api";r=0;t=1` {
		t.Errorf("sub-second waits: %q, want Retry-After 1 and t=1", got)
	}
}

// BenchmarkResolve is what the core spends on a request before picking a
// backend: without a rate limit, with the listener's limit counted locally,
// and with it shared through a real redis-server on loopback.
func BenchmarkResolve(b *testing.B) {
	h := headerFields(http.Header{"X-Api-Key": {"k"}})
	run := func(b *testing.B, l *Listener) {
		var info pool.PickInfo
		var r Record
		b.ReportAllocs()
		for b.Loop() {
			info, r = pool.PickInfo{}, Record{Info: &info}
			l.Resolve(context.Background(), &r, "example.com", "/", "", h, client)
		}
	}
	b.Run("none", func(b *testing.B) {
		l := limitedListener(1, 1, nil)
		l.RateLimit, l.RouteLimits = nil, nil
		run(b, l)
	})
	b.Run("local", func(b *testing.B) {
		run(b, limitedListener(1_000_000_000, 1_000_000_000, nil))
	})
	b.Run("redis", func(b *testing.B) {
		rs := redistest.Start(b)
		st := redisstore.NewRedis(redisstore.RedisOptions{Address: rs.Addr, Prefix: "bench:", Timeout: time.Second})
		b.Cleanup(func() { st.Close() })
		for deadline := time.Now().Add(10 * time.Second); !st.Up(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("store not up within 10s")
			}
		}
		run(b, limitedListener(1_000_000_000, 1_000_000_000, st))
		if st.Errors() > 0 {
			b.Fatalf("%d store errors", st.Errors())
		}
	})
}
