package balance

import (
	"math/bits"

	"github.com/sluice-lb/sluice/internal/pool"
)

// sampler draws ready backends at random with probability proportional to
// their weight, one at a time or two distinct ones. It is built once per
// picker and read-only afterwards.
type sampler struct {
	ready   []*pool.Backend
	weights []uint64 // weights[i] is ready[i]'s weight, at least 1
	// cum[i] is weights[0]+…+weights[i]; nil when all weights are equal, in
	// which case draws are a multiply and a shift.
	cum   []uint64
	total uint64
}

func newSampler(ready []*pool.Backend) sampler {
	s := sampler{ready: ready, weights: make([]uint64, len(ready))}
	equal := true
	for i, b := range ready {
		s.weights[i] = uint64(max(1, b.EffectiveWeight()))
		s.total += s.weights[i]
		equal = equal && s.weights[i] == s.weights[0]
	}
	if !equal {
		s.cum = make([]uint64, len(ready))
		var acc uint64
		for i, w := range s.weights {
			acc += w
			s.cum[i] = acc
		}
	}
	return s
}

// uniform maps r to [0,n) without modulo bias: the high word of r×n.
func uniform(r, n uint64) uint64 {
	hi, _ := bits.Mul64(r, n)
	return hi
}

// find returns the index i with cum[i-1] ≤ x < cum[i].
func (s *sampler) find(x uint64) int {
	lo, hi := 0, len(s.cum)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.cum[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// one returns the index of a backend drawn by weight; len(s.ready) ≥ 1.
func (s *sampler) one(r uint64) int {
	if s.cum == nil {
		return int(uniform(r, uint64(len(s.ready))))
	}
	return s.find(uniform(r, s.total))
}

// two returns the indexes of two distinct backends; len(s.ready) ≥ 2. The
// first is drawn by weight from all backends; the second by weight from the
// others, by drawing from a range one weight shorter and stepping over the
// first one's slot. With equal weights each index is uniform on its own and
// the pair is uniform among ordered pairs (the classic bug, traefik #13643,
// draws the second from the full range or steps over the wrong slot, which
// favours the first's neighbour).
func (s *sampler) two(r1, r2 uint64) (i, j int) {
	if s.cum == nil {
		n := uint64(len(s.ready))
		i = int(uniform(r1, n))
		j = int(uniform(r2, n-1))
		if j >= i {
			j++
		}
		return i, j
	}
	i = s.find(uniform(r1, s.total))
	wi := s.weights[i]
	start := s.cum[i] - wi // first slot of i
	y := uniform(r2, s.total-wi)
	if y >= start {
		y += wi
	}
	return i, s.find(y)
}

// onlyUntried returns whichever of two candidates this request has not tried
// yet, when exactly one of them was tried (a retry must go elsewhere).
func onlyUntried(info *pool.PickInfo, bi, bj *pool.Backend) (*pool.Backend, bool) {
	ti, tj := info.Tried(bi), info.Tried(bj)
	switch {
	case ti && !tj:
		return bj, true
	case tj && !ti:
		return bi, true
	}
	return nil, false
}
