package balance

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Pickers are shared by every request of a pool: picks, in-flight counts,
// latency samples and rebuilds run at once (run under -race).
func TestPickConcurrently(t *testing.T) {
	for _, name := range Names(nil) {
		t.Run(name, func(t *testing.T) {
			pol, err := New(name, Options{HashBalanceFactor: 1.25})
			if err != nil {
				t.Fatal(err)
			}
			bs := backends(1, 2, 3, 1)
			p := pool.New("web", pol, bs)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 2000 {
						info := pool.PickInfo{
							Key:      fmt.Sprintf("k%d", i%50),
							ClientIP: netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i)}),
						}
						b := p.Pick(&info)
						if b == nil {
							t.Errorf("nil pick while %s is always healthy", bs[0].Address)
							return
						}
						b.InFlight.Add(1)
						b.Stats.ObserveLatency(time.Duration(i%7) * time.Millisecond)
						b.InFlight.Add(-1)
					}
				})
			}
			wg.Go(func() {
				for i := range 200 {
					h := pool.Healthy
					if i%2 == 0 {
						h = pool.Unhealthy
					}
					p.SetHealth(bs[1+i%3], h, timeZero)
				}
			})
			wg.Wait()
		})
	}
}
