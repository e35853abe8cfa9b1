package pool_test

import (
	"net/url"
	"testing"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/pool"
)

func TestAgentWeightScalesTheConfiguredWeight(t *testing.T) {
	var bs []*pool.Backend
	for _, h := range []string{"127.0.0.1:8081", "127.0.0.1:8082"} {
		u := &url.URL{Scheme: "http", Host: h}
		bs = append(bs, pool.NewBackend(u.String(), u, 2))
	}
	p := pool.New("web", balance.RoundRobin{}, bs)
	share := func() int {
		n := 0
		for range 1000 {
			if p.Pick(&pool.PickInfo{}) == bs[1] {
				n++
			}
		}
		return n
	}
	if got := share(); got != 500 {
		t.Fatalf("before the agent: %d of 1000 picks, want 500", got)
	}
	if !p.SetAgentWeight(bs[1], 25) {
		t.Fatal("SetAgentWeight(25) reported no change")
	}
	if got, want := bs[1].EffectiveWeight(), 2*pool.WeightScale/4; got != want {
		t.Errorf("effective weight at 25%% of 2 = %d, want %d", got, want)
	}
	if got := share(); got != 200 { // 0.5 : 2 → one pick in five
		t.Errorf("at 25%%: %d of 1000 picks, want 200", got)
	}
	if got := bs[1].Weight(); got != 2 {
		t.Errorf("configured weight = %d after the agent's 25%%, want 2 (kept)", got)
	}
	if p.SetAgentWeight(bs[1], 25) {
		t.Error("SetAgentWeight(25) again reported a change")
	}
	p.SetAgentWeight(bs[1], 100)
	if got := share(); got != 500 {
		t.Errorf("back at 100%%: %d of 1000 picks, want 500", got)
	}
}
