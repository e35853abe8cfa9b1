package balance

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// TestReportedLoadSteersTraffic: a backend that reports itself busy loses
// every comparison to backends that report little load, in both load-aware
// policies, at every pool size (the full scan of least_requests and its two
// choices beyond 16 backends).
func TestReportedLoadSteersTraffic(t *testing.T) {
	for _, policy := range []string{"p2c", "least_requests"} {
		for _, n := range []int{3, 20} {
			t.Run(fmt.Sprint(policy, "/", n), func(t *testing.T) {
				weights := make([]int, n)
				for i := range weights {
					weights[i] = 1
				}
				bs := backends(weights...)
				now := time.Now()
				for _, b := range bs {
					b.ReportLoad(0.1, now)
				}
				bs[0].ReportLoad(0.95, now)
				pol, _ := New(policy, Options{Rand: seeded()})
				p := pool.New("p", pol, bs)
				counts := map[*pool.Backend]int{}
				for range 3000 {
					var info pool.PickInfo
					counts[p.Pick(&info)]++
				}
				if got := counts[bs[0]]; got != 0 {
					t.Errorf("the backend at 95%% got %d of 3000 picks, want 0 (the others report 10%%)", got)
				}
				// The others share the traffic.
				for i, b := range bs[1:] {
					if counts[b] == 0 {
						t.Errorf("backend %d at 10%% got no pick", i+1)
					}
				}
			})
		}
	}
}

// TestUnreportedLoadIsIdle: without reports nothing changes; a backend
// that never reported counts as idle beside one that reports a load.
func TestUnreportedLoadIsIdle(t *testing.T) {
	bs := backends(1, 1)
	bs[1].ReportLoad(0.5, time.Now())
	pol, _ := New("least_requests", Options{Rand: seeded()})
	p := pool.New("p", pol, bs)
	for range 100 {
		var info pool.PickInfo
		if b := p.Pick(&info); b != bs[0] {
			t.Fatalf("picked %s, want the backend without a report (idle beside one at 50%%)", b.Address)
		}
	}
	// In flight still counts: the silent backend with 3 in flight costs
	// 4 beside (0+1)×2 for the other.
	bs[0].InFlight.Store(3)
	var info pool.PickInfo
	if b := p.Pick(&info); b != bs[1] {
		t.Errorf("picked %s, want the loaded but idle backend", b.Address)
	}
}

func TestUtilizationDecays(t *testing.T) {
	b := backends(1)[0]
	if _, ok := b.Utilization(time.Now()); ok {
		t.Fatal("Utilization before any report: ok, want not")
	}
	at := time.Now()
	b.ReportLoad(0.8, at)
	for _, tt := range []struct {
		after time.Duration
		want  float64
	}{{0, 0.8}, {pool.LatencyDecay, 0.8 / 2.718281828}, {5 * pool.LatencyDecay, 0.8 / 148.41}} {
		got, ok := b.Utilization(at.Add(tt.after))
		if !ok || got < tt.want*0.999 || got > tt.want*1.001 {
			t.Errorf("Utilization %v after a report of 0.8 = %v, %v, want %.4f", tt.after, got, ok, tt.want)
		}
	}
}

func TestLoadFactor(t *testing.T) {
	b := backends(1)[0]
	now := time.Now()
	for _, tt := range []struct{ util, want float64 }{{0, 1}, {0.5, 2}, {0.9, 10}, {1, 100}, {7, 100}} {
		b.ReportLoad(tt.util, now)
		if got := loadFactor(b, now); got < tt.want*0.999 || got > tt.want*1.001 {
			t.Errorf("loadFactor at %v = %v, want %v", tt.util, got, tt.want)
		}
	}
}

func TestLoadAwarePickDoesNotAllocate(t *testing.T) {
	for _, policy := range []string{"p2c", "least_requests"} {
		for _, n := range []int{5, 20} {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = i%3 + 1
			}
			bs := backends(weights...)
			for i, b := range bs {
				b.ReportLoad(float64(i)/float64(n), time.Now())
				b.InFlight.Store(int64(i % 4))
			}
			pol, _ := New(policy, Options{Rand: seeded()})
			p := pool.New("p", pol, bs)
			var info pool.PickInfo
			if a := testing.AllocsPerRun(1000, func() { p.Pick(&info) }); a != 0 {
				t.Errorf("%s over %d reporting backends: %v allocations per pick, want 0", policy, n, a)
			}
		}
	}
}
