package balance

import (
	"math/rand/v2"
	"testing"

	"github.com/sluice-lb/sluice/internal/pool"
)

func seeded() func() uint64 { return rand.New(rand.NewPCG(1, 2)).Uint64 }

// setInFlight stores in-flight counts on bs, in order.
func setInFlight(bs []*pool.Backend, counts ...int64) {
	for i, n := range counts {
		bs[i].InFlight.Store(n)
	}
}

func TestLeastRequestsPicksLeastLoadedPerWeight(t *testing.T) {
	tests := []struct {
		name     string
		weights  []int
		inFlight []int64
		want     string
	}{
		{"fewest in flight", []int{1, 1, 1}, []int64{3, 1, 2}, "b"},
		{"relative to weight", []int{1, 3, 1}, []int64{2, 4, 2}, "b"},   // 2, 1.33, 2
		{"heavy backend absorbs more", []int{1, 4}, []int64{1, 3}, "b"}, // 1 vs 0.75
		{"heavy backend full", []int{1, 4}, []int64{1, 5}, "a"},         // 1 vs 1.25
		{"idle light beats busy heavy", []int{1, 10}, []int64{0, 1}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			setInFlight(bs, tt.inFlight...)
			pk := LeastRequests{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
			for range 100 {
				if got := names(bs, []*pool.Backend{pk.Pick(&pool.PickInfo{})}); got != tt.want {
					t.Fatalf("pick = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestLeastRequestsSpreadsTies(t *testing.T) {
	tests := []struct {
		name     string
		weights  []int
		inFlight []int64
		want     map[string][2]int // backend → [min, max] picks of 1000
	}{
		{
			name: "three tied of four", weights: []int{1, 1, 1, 1}, inFlight: []int64{5, 1, 1, 1},
			want: map[string][2]int{"a": {0, 0}, "b": {250, 450}, "c": {250, 450}, "d": {250, 450}},
		},
		{
			// Ties adjacent in the pool must not favour the first after a gap.
			name: "tied around a gap", weights: []int{1, 1, 1, 1}, inFlight: []int64{1, 1, 9, 1},
			want: map[string][2]int{"a": {250, 450}, "b": {250, 450}, "c": {0, 0}, "d": {250, 450}},
		},
		{
			// Idle backends tie; the draw follows the weights: 250 and 750.
			name: "idle pool follows weights", weights: []int{1, 3}, inFlight: []int64{0, 0},
			want: map[string][2]int{"a": {200, 300}, "b": {700, 800}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			setInFlight(bs, tt.inFlight...)
			pk := LeastRequests{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
			got := map[string]int{}
			for range 1000 {
				got[names(bs, []*pool.Backend{pk.Pick(&pool.PickInfo{})})]++
			}
			for name, bounds := range tt.want {
				if got[name] < bounds[0] || got[name] > bounds[1] {
					t.Errorf("backend %s picked %d times of 1000, want %d..%d (all: %v)", name, got[name], bounds[0], bounds[1], got)
				}
			}
		})
	}
}

func TestLeastRequestsSkipsTried(t *testing.T) {
	bs := backends(1, 1, 1)
	setInFlight(bs, 0, 1, 2)
	pk := LeastRequests{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
	var info pool.PickInfo
	var seq []*pool.Backend
	for range 3 {
		b := pk.Pick(&info)
		info.MarkTried(b)
		seq = append(seq, b)
	}
	if got, want := names(bs, seq), "abc"; got != want {
		t.Errorf("picks with retries = %q, want %q", got, want)
	}
}

// Above fullScanMax, the picker compares two random candidates: a loaded
// backend wins only when both candidates are loaded.
func TestLeastRequestsLargePoolSamplesTwo(t *testing.T) {
	weights := make([]int, 20)
	for i := range weights {
		weights[i] = 1
	}
	bs := backends(weights...)
	for i := range 10 {
		bs[i].InFlight.Store(100)
	}
	pk := LeastRequests{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
	const n = 10000
	loaded := 0
	for range n {
		if pk.Pick(&pool.PickInfo{}).InFlight.Load() > 0 {
			loaded++
		}
	}
	// P(both candidates loaded) = 10/20 × 9/19 ≈ 0.237.
	if loaded < 2100 || loaded > 2650 {
		t.Errorf("loaded backends got %d of %d picks, want about 2370 (2100..2650)", loaded, n)
	}
}
