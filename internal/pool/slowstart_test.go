package pool_test

import (
	"net/url"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/pool"
)

func TestSlowStartRamps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var bs []*pool.Backend
		for _, h := range []string{"127.0.0.1:8081", "127.0.0.1:8082"} {
			u := &url.URL{Scheme: "http", Host: h}
			bs = append(bs, pool.NewBackend(u.String(), u, 1))
		}
		p := pool.New("web", balance.RoundRobin{}, bs)
		p.SetSlowStart(10 * time.Second)
		if p.Ramping() {
			t.Fatalf("ramping at start-up, want not: slow start applies to backends that come back")
		}
		p.SetHealth(bs[1], pool.Unhealthy, time.Time{})
		p.SetHealth(bs[1], pool.Healthy, time.Time{})

		share := func() float64 {
			var n int
			for range 1100 {
				if p.Pick(&pool.PickInfo{}) == bs[1] {
					n++
				}
			}
			return float64(n) / 1100
		}
		tests := []struct {
			at         time.Duration
			wantWeight int
			wantShare  float64 // of the returning backend
		}{
			{0, 10, 10.0 / 110},
			{5 * time.Second, 50, 50.0 / 150},
			{10 * time.Second, 100, 0.5},
		}
		start := time.Now()
		for _, tt := range tests {
			time.Sleep(tt.at - time.Since(start))
			p.Refresh()
			if got := bs[1].EffectiveWeight(); got != tt.wantWeight {
				t.Errorf("at %v: effective weight = %d, want %d", tt.at, got, tt.wantWeight)
			}
			if got := share(); got < tt.wantShare-0.01 || got > tt.wantShare+0.01 {
				t.Errorf("at %v: share = %.3f, want %.3f", tt.at, got, tt.wantShare)
			}
		}
		if p.Ramping() {
			t.Errorf("still ramping after the window")
		}
	})
}

// TestOwnerSeesChangesThroughOldPool: after a reload, a request that began
// on the old pool reports a failure there; the new pool must stop picking
// the backend too.
func TestOwnerSeesChangesThroughOldPool(t *testing.T) {
	var bs []*pool.Backend
	for _, h := range []string{"127.0.0.1:8081", "127.0.0.1:8082"} {
		u := &url.URL{Scheme: "http", Host: h}
		bs = append(bs, pool.NewBackend(u.String(), u, 1))
	}
	old := pool.New("web", balance.RoundRobin{}, bs)
	old.Claim()
	cur := pool.New("web", balance.RoundRobin{}, bs)
	cur.Claim()
	old.SetHealth(bs[0], pool.Down, time.Time{})
	if got := cur.Ready(); got != 1 {
		t.Fatalf("new pool ready = %d after the old pool ejected a shared backend, want 1", got)
	}
	for range 4 {
		if cur.Pick(&pool.PickInfo{}) == bs[0] {
			t.Fatalf("new pool picked the ejected backend")
		}
	}
}
