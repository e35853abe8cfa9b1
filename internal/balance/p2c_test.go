package balance

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

func TestSamplerTwoDistinctAndUnbiased(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
	}{
		{"equal", []int{1, 1, 1, 1, 1}},
		{"equal but not one", []int{3, 3, 3, 3, 3}},
		{"weighted", []int{1, 2, 3, 4}},
		{"two", []int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(backends(tt.weights...))
			rnd := seeded()
			const n = 50000
			first := make([]int, len(tt.weights))
			second := make([]int, len(tt.weights))
			for range n {
				i, j := s.two(rnd(), rnd())
				if i == j {
					t.Fatalf("two() = %d, %d: the same backend twice", i, j)
				}
				first[i]++
				second[j]++
			}
			if tt.name == "weighted" {
				// The first candidate is drawn by weight: 5000, 10000, 15000, 20000.
				for i, w := range tt.weights {
					want := n * w / 10
					if got := first[i]; got < want*9/10 || got > want*11/10 {
						t.Errorf("backend %d (weight %d) first candidate %d times, want %d±10%%", i, w, got, want)
					}
				}
				return
			}
			// Equal weights: each of the two candidates is uniform on its own.
			want := n / len(tt.weights)
			for i := range tt.weights {
				if got := first[i]; got < want*9/10 || got > want*11/10 {
					t.Errorf("backend %d first candidate %d times, want %d±10%%", i, got, want)
				}
				if got := second[i]; got < want*9/10 || got > want*11/10 {
					t.Errorf("backend %d second candidate %d times, want %d±10%%", i, got, want)
				}
			}
		})
	}
}

// window simulates requests in flight: each pick adds one to its backend
// and, beyond size requests, the oldest one finishes.
type window struct {
	size int
	q    []*pool.Backend
}

func (w *window) add(b *pool.Backend) {
	b.InFlight.Add(1)
	w.q = append(w.q, b)
	if len(w.q) > w.size {
		w.q[0].InFlight.Add(-1)
		w.q = w.q[1:]
	}
}

func (w *window) drain() {
	for _, b := range w.q {
		b.InFlight.Add(-1)
	}
	w.q = nil
}

// share returns the fraction of n picks that went to each backend.
func share(bs []*pool.Backend, pk pool.Picker, w *window, n int) []float64 {
	counts := make([]float64, len(bs))
	for range n {
		b := pk.Pick(&pool.PickInfo{})
		w.add(b)
		for i := range bs {
			if bs[i] == b {
				counts[i]++
			}
		}
	}
	for i := range counts {
		counts[i] /= float64(n)
	}
	return counts
}

func TestP2CSlowBackendRecoversWithoutObservations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := backends(1, 1, 1)
		bs[0].Stats.ObserveLatency(10 * time.Millisecond)
		bs[1].Stats.ObserveLatency(10 * time.Millisecond)
		bs[2].Stats.ObserveLatency(time.Second)
		pk := P2C{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
		w := &window{size: 8}

		got := share(bs, pk, w, 3000)
		if got[2] >= 0.20 {
			t.Errorf("slow backend's share = %.3f (all %.3f), want < 0.20", got[2], got)
		}
		w.drain()

		time.Sleep(60 * time.Second) // no backend is observed meanwhile
		got = share(bs, pk, w, 3000)
		if got[2] < 0.25 {
			t.Errorf("after 60s, slow backend's share = %.3f (all %.3f), want ≥ 0.25", got[2], got)
		}
	})
}

// The other backends keep answering fast and being observed; the slow one
// has recovered but gets no traffic, so nothing tells the pool. Its stale
// average decays toward the pool's mean until it wins a comparison; its next
// response then replaces the stale average and it gets its share back.
func TestP2CSlowBackendIsProbedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := backends(1, 1, 1)
		latency := []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
		for i, b := range bs {
			b.Stats.ObserveLatency(latency[i])
		}
		bs[2].Stats.ObserveLatency(10 * time.Second) // one very slow response
		pk := P2C{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
		w := &window{size: 8}

		// 120 s at one request per 10 ms, each observed as it is picked.
		const step = 10 * time.Millisecond
		var first time.Duration = -1
		counts := make([]int, len(bs))
		start := time.Now()
		for time.Since(start) < 120*time.Second {
			b := pk.Pick(&pool.PickInfo{})
			w.add(b)
			for i := range bs {
				if bs[i] != b {
					continue
				}
				b.Stats.ObserveLatency(latency[i])
				if i == 2 && first < 0 {
					first = time.Since(start)
				}
				if time.Since(start) >= 90*time.Second {
					counts[i]++
				}
			}
			time.Sleep(step)
		}
		if first < 0 {
			t.Fatalf("slow backend never picked again in 120s")
		}
		total := counts[0] + counts[1] + counts[2]
		t.Logf("slow backend first probed after %v; picks in the last 30s: %v", first, counts)
		if got := float64(counts[2]) / float64(total); got < 0.25 {
			t.Errorf("slow backend's share in the last 30s = %.3f (%v), want ≥ 0.25", got, counts)
		}
	})
}

func TestP2CSkipsTried(t *testing.T) {
	bs := backends(1, 1)
	pk := P2C{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
	for range 100 {
		var info pool.PickInfo
		b := pk.Pick(&info)
		info.MarkTried(b)
		if c := pk.Pick(&info); c == b {
			t.Fatalf("retry picked the tried backend %s again", b.Address)
		}
	}
}

func TestP2CWithoutLatencyIsLeastLoaded(t *testing.T) {
	bs := backends(1, 1)
	setInFlight(bs, 3, 1)
	pk := P2C{Rand: seeded()}.Build(pool.Set{All: bs, Ready: bs})
	for range 100 {
		if got := names(bs, []*pool.Backend{pk.Pick(&pool.PickInfo{})}); got != "b" {
			t.Fatalf("pick = %q, want %q (fewer in flight)", got, "b")
		}
	}
}
