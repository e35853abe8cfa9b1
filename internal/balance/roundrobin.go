package balance

import (
	"sync/atomic"

	"github.com/sluice-lb/sluice/internal/pool"
)

// RoundRobin is smooth weighted round robin (the nginx algorithm): with
// weights 5,1,1 it yields a a b a c a a rather than a a a a a b c.
//
// nginx mutates per-backend "current weights" under a lock on every pick.
// Because weights only change when the picker is rebuilt, the smooth sequence
// is periodic with period Σweights/gcd, so Build computes one period once and
// Pick is a single atomic increment and an index: no lock, no allocation.
type RoundRobin struct{}

var _ pool.Policy = RoundRobin{}

// maxSequence caps the precomputed period; larger weight sums are scaled
// down proportionally (each backend keeps at least weight 1).
const maxSequence = 1 << 16

// Build computes one period of the smooth weighted sequence over s.Ready.
func (RoundRobin) Build(s pool.Set) pool.Picker {
	ready := s.Ready
	if len(ready) == 0 {
		return &rrPicker{}
	}
	weights := make([]int, len(ready))
	g, sum := 0, 0
	for i, b := range ready {
		weights[i] = b.EffectiveWeight()
		g = gcd(g, weights[i])
	}
	for i := range weights {
		weights[i] /= g
		sum += weights[i]
	}
	if sum > maxSequence {
		orig := sum
		sum = 0
		for i := range weights {
			weights[i] = max(1, weights[i]*maxSequence/orig)
			sum += weights[i]
		}
	}
	seq := make([]*pool.Backend, 0, sum)
	current := make([]int, len(ready))
	for range sum {
		best := 0
		for i := range ready {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= sum
		seq = append(seq, ready[best])
	}
	return &rrPicker{seq: seq}
}

type rrPicker struct {
	seq  []*pool.Backend
	next atomic.Uint64
}

func (p *rrPicker) Pick(*pool.PickInfo) *pool.Backend {
	if len(p.seq) == 0 {
		return nil
	}
	n := p.next.Add(1) - 1
	return p.seq[n%uint64(len(p.seq))]
}
