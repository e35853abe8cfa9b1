package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sluice-lb/sluice/internal/metrics"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// fakeStats is a StatsSource over the fake runtime's pools with listeners
// "public" and "internal".
type fakeStats struct {
	*fakeRuntime
	public, internal proxy.ListenerStats
}

func (f *fakeStats) Listeners() []metrics.Listener {
	return []metrics.Listener{
		{Name: "public", Active: 3, TLS: true, Stats: &f.public},
		{Name: "internal", Active: 1, Stats: &f.internal},
	}
}

func (f *fakeStats) Reloads() (ok, failed uint64, lastOK bool) { return 4, 1, false }

func (f *fakeStats) Addr(name string) net.Addr {
	if name == "public" {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	}
	return nil
}

var _ StatsSource = (*fakeStats)(nil)

func TestStatsCountsByClassListenerAndPool(t *testing.T) {
	rt := newFake(t)
	src := &fakeStats{fakeRuntime: rt}
	web, api := rt.pools[0], rt.pools[1]
	b1, b2 := web.Backends()[0], web.Backends()[1]
	b1.Stats.Observe(0, 200, 2*time.Millisecond)   // bucket le 0.0025
	b1.Stats.Observe(0, 200, 2*time.Millisecond)   // bucket le 0.0025
	b2.Stats.Observe(1, 502, 40*time.Millisecond)  // bucket le 0.05
	b2.Stats.Observe(0, 404, 300*time.Millisecond) // bucket le 0.5
	web.NoBackend.Observe(0, 503, time.Millisecond)
	api.Backends()[0].Stats.Observe(1, 301, time.Second) // bucket le 1
	// The listeners count for themselves (requests without a pool too).
	for _, st := range []int{200, 200, 404, 502, 503, 404} {
		src.public.Observe(proxy.HTTP11, st, time.Millisecond)
	}
	src.internal.Observe(proxy.HTTP2, 502, time.Millisecond)
	src.internal.Observe(proxy.HTTP10, 301, time.Millisecond)
	b1.InFlight.Add(2)

	srv := start(t, rt, Options{Stats: src})
	res := call(t, srv, "GET", "/api/v1/stats", "", nil)
	if res.code != http.StatusOK {
		t.Fatalf("GET /api/v1/stats: %d %s", res.code, res.body)
	}
	var got statsView
	if err := json.Unmarshal([]byte(res.body), &got); err != nil {
		t.Fatalf("decode %s: %v", res.body, err)
	}
	if got.Time.IsZero() {
		t.Errorf("time is zero")
	}
	got.Time = time.Time{}
	cls := func(c1, c2, c3, c4, c5 uint64) classCounts {
		return classCounts{"1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5}
	}
	buckets := func(at map[int]uint64) []uint64 { // cumulative from per-bucket counts
		out := make([]uint64, len(pool.DurationBuckets))
		var acc uint64
		for i := range out {
			acc += at[i]
			out[i] = acc
		}
		return out
	}
	want := statsView{
		DurationBuckets: pool.DurationBuckets[:],
		Reloads:         reloadsView{Success: 4, Failure: 1, LastSuccessful: false},
		Listeners: []listenerStats{ // sorted by name
			{Name: "internal", Connections: 1, Requests: cls(0, 0, 1, 0, 1)},
			{Name: "public", Address: "127.0.0.1:8080", Connections: 3, TLS: true, Requests: cls(0, 2, 0, 2, 2)},
		},
		Pools: []poolStats{
			{Name: "web", Requests: cls(0, 2, 0, 1, 2), InFlight: 2, NoBackend: 1,
				Duration: histogramView{Buckets: buckets(map[int]uint64{1: 2, 5: 1, 8: 1}), Count: 4, Sum: 0.344}},
			{Name: "api", Requests: cls(0, 0, 1, 0, 0),
				Duration: histogramView{Buckets: buckets(map[int]uint64{9: 1}), Count: 1, Sum: 1}},
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("GET /api/v1/stats (-want +got):\n%s", diff)
	}
}

func TestStatsWithoutSourceIs404(t *testing.T) {
	srv := start(t, newFake(t), Options{})
	res := call(t, srv, "GET", "/api/v1/stats", "", nil)
	if res.code != http.StatusNotFound || !json.Valid([]byte(res.body)) {
		t.Errorf("GET /api/v1/stats without a source: %d %s, want 404 with a JSON error", res.code, res.body)
	}
	if res := call(t, srv, "POST", "/api/v1/stats", "", nil); res.code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/v1/stats: %d, want 405", res.code)
	}
}
