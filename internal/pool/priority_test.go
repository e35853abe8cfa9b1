package pool_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/pool"
)

// priorityPool returns a round-robin pool whose backend i has priority
// levels[i]; backends are named b0, b1, ...
func priorityPool(levels ...int) (*pool.Pool, []*pool.Backend) {
	var bs []*pool.Backend
	for i := range levels {
		u := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", 8081+i)}
		bs = append(bs, pool.NewBackend(u.String(), u, 1))
	}
	p := pool.New("web", balance.RoundRobin{}, bs)
	for i, l := range levels {
		p.SetPriority(bs[i], l)
	}
	return p, bs
}

// picked returns which backends (by index) n picks chose, in order.
func picked(p *pool.Pool, bs []*pool.Backend, n int) []int {
	var got []int
	for range n {
		b := p.Pick(&pool.PickInfo{})
		idx := -1
		for i, c := range bs {
			if c == b {
				idx = i
			}
		}
		got = append(got, idx)
	}
	return got
}

func TestPriorityLevels(t *testing.T) {
	p, bs := priorityPool(0, 0, 1, 2)
	if got, want := picked(p, bs, 4), []int{0, 1, 0, 1}; !cmp.Equal(got, want) {
		t.Errorf("all healthy: picks %v, want %v (level 0 only)", got, want)
	}
	if got := p.Ready(); got != 2 {
		t.Errorf("Ready() = %d, want 2 (the serving level's)", got)
	}

	// One of level 0 down: the other takes everything.
	p.SetHealth(bs[0], pool.Unhealthy, time.Time{})
	if got, want := picked(p, bs, 3), []int{1, 1, 1}; !cmp.Equal(got, want) {
		t.Errorf("one of level 0 down: picks %v, want %v", got, want)
	}
	// Level 0 without an eligible member (draining counts as not
	// eligible): level 1 serves, never level 2.
	p.SetAdmin(bs[1], pool.Draining)
	if got, want := picked(p, bs, 3), []int{2, 2, 2}; !cmp.Equal(got, want) {
		t.Errorf("level 0 out: picks %v, want %v", got, want)
	}
	p.SetHealth(bs[2], pool.Down, time.Time{})
	if got, want := picked(p, bs, 2), []int{3, 3}; !cmp.Equal(got, want) {
		t.Errorf("levels 0 and 1 out: picks %v, want %v", got, want)
	}
	// The preferred level returns: it takes over again at once.
	p.SetHealth(bs[0], pool.Healthy, time.Time{})
	if got, want := picked(p, bs, 2), []int{0, 0}; !cmp.Equal(got, want) {
		t.Errorf("b0 back: picks %v, want %v", got, want)
	}
	if got := p.Candidates(); len(got) != 1 || got[0] != bs[0] {
		t.Errorf("Candidates() has %d backends, want only %s", len(got), bs[0].Address)
	}
}

// TestPriorityRetryAndSticky: a retry and a sticky preference stay within
// the serving level; when every candidate was tried, the pick repeats one
// rather than spilling to a lower level.
func TestPriorityRetryAndSticky(t *testing.T) {
	p, bs := priorityPool(0, 1)
	info := &pool.PickInfo{Preferred: bs[1]}
	if got := p.Pick(info); got != bs[0] {
		t.Errorf("sticky to a level-1 backend while level 0 serves: picked %s, want %s", got.Address, bs[0].Address)
	}
	info.MarkTried(bs[0])
	if got := p.Pick(info); got != bs[0] {
		t.Errorf("retry with the only level-0 backend tried: picked %s, want %s again", got.Address, bs[0].Address)
	}
	p.SetPriority(bs[1], 0)
	if got := p.Pick(info); got != bs[1] {
		t.Errorf("after b1 moved to level 0: picked %s, want %s", got.Address, bs[1].Address)
	}
}

func BenchmarkPickPriority(b *testing.B) {
	p, _ := priorityPool(0, 0, 1, 1, 2)
	info := &pool.PickInfo{}
	b.ReportAllocs()
	for b.Loop() {
		p.Pick(info)
	}
}
