package balance

import (
	"math/bits"
	"sort"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Random picks a ready backend at random with probability proportional to
// its weight.
type Random struct {
	// Rand returns uniformly random uint64s; it must not be nil.
	Rand func() uint64
}

var _ pool.Policy = Random{}

// Build precomputes the cumulative weights of s.Ready.
func (r Random) Build(s pool.Set) pool.Picker {
	p := &randomPicker{rand: r.Rand, ready: s.Ready, cum: make([]uint64, len(s.Ready))}
	var total uint64
	for i, b := range s.Ready {
		total += uint64(b.EffectiveWeight())
		p.cum[i] = total
	}
	p.total = total
	return p
}

type randomPicker struct {
	rand  func() uint64
	ready []*pool.Backend
	cum   []uint64
	total uint64
}

func (p *randomPicker) Pick(*pool.PickInfo) *pool.Backend {
	if p.total == 0 {
		return nil
	}
	// The high word of rand×total is uniform in [0,total) without modulo bias.
	x, _ := bits.Mul64(p.rand(), p.total)
	i := sort.Search(len(p.cum), func(i int) bool { return p.cum[i] > x })
	return p.ready[i]
}
