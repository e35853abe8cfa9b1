package balance

import (
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// LeastRequests sends each request to the ready backend with the fewest
// requests in flight relative to its weight (in_flight/weight, compared by
// cross-multiplication).
//
// Pools of up to 16 ready backends are scanned in full; a tie is broken by a
// weighted random draw among the tied backends, so with nothing in flight
// the traffic follows the weights exactly and no backend is favoured for its
// position. Larger pools compare two backends drawn at random by weight
// (Envoy's choice_count of 2): O(1) per pick, and the least loaded of two
// random choices keeps the maximum load within a small additive gap of the
// mean. A tie between the two goes to the first, itself drawn by weight.
//
// When backends report their load (load_report), the cost compared is
// (in_flight+1)/weight × 1/(1−u) for the reported utilisation u (see
// loadCost), so that of two backends equally busy in sluice's eyes the one
// that says it is less loaded wins.
//
// A backend already tried by the request is passed over while another one is
// left.
type LeastRequests struct {
	// Rand returns uniformly random uint64s; it must not be nil.
	Rand func() uint64
}

var _ pool.Policy = LeastRequests{}

// fullScanMax is the largest ready set that LeastRequests scans in full.
const fullScanMax = 16

// Build snapshots the ready backends and their weights.
func (l LeastRequests) Build(s pool.Set) pool.Picker {
	return &lrPicker{rand: l.Rand, s: newSampler(s.Ready)}
}

type lrPicker struct {
	rand func() uint64
	s    sampler
}

func (p *lrPicker) Pick(info *pool.PickInfo) *pool.Backend {
	ready := p.s.ready
	switch {
	case len(ready) == 0:
		return nil
	case len(ready) == 1:
		return ready[0]
	case len(ready) <= fullScanMax:
		return p.scan(info)
	}
	i, j := p.s.two(p.rand(), p.rand())
	bi, bj := ready[i], ready[j]
	if b, ok := onlyUntried(info, bi, bj); ok {
		return b
	}
	if bi.Reported() || bj.Reported() {
		now := time.Now()
		if loadCost(bj, p.s.weights[j], now) < loadCost(bi, p.s.weights[i], now) {
			return bj
		}
		return bi
	}
	// j wins only when strictly less loaded: fj/wj < fi/wi.
	if bj.InFlight.Load()*int64(p.s.weights[i]) < bi.InFlight.Load()*int64(p.s.weights[j]) {
		return bj
	}
	return bi
}

// scan finds the least loaded untried backends of a small pool and draws one
// of them by weight.
func (p *lrPicker) scan(info *pool.PickInfo) *pool.Backend {
	for _, b := range p.s.ready {
		if b.Reported() {
			return p.scanLoaded(info, time.Now())
		}
	}
	var ties [fullScanMax]uint8
	n := 0
	var bestF, bestW, tieW int64
	for k, b := range p.s.ready {
		if info.Tried(b) {
			continue
		}
		f, w := b.InFlight.Load(), int64(p.s.weights[k])
		switch {
		case n == 0 || f*bestW < bestF*w:
			bestF, bestW = f, w
			ties[0], n, tieW = uint8(k), 1, w
		case f*bestW == bestF*w:
			ties[n] = uint8(k)
			n++
			tieW += w
		}
	}
	if n == 0 { // every ready backend was tried; the pool chooses among them
		return p.s.ready[0]
	}
	return p.drawTie(ties[:n], tieW)
}

// scanLoaded is scan when backends report their load: the least loadCost
// wins, ties drawn by weight.
func (p *lrPicker) scanLoaded(info *pool.PickInfo, now time.Time) *pool.Backend {
	var ties [fullScanMax]uint8
	n := 0
	var best float64
	var tieW int64
	for k, b := range p.s.ready {
		if info.Tried(b) {
			continue
		}
		c, w := loadCost(b, p.s.weights[k], now), int64(p.s.weights[k])
		switch {
		case n == 0 || c < best:
			best = c
			ties[0], n, tieW = uint8(k), 1, w
		case c == best:
			ties[n] = uint8(k)
			n++
			tieW += w
		}
	}
	if n == 0 { // every ready backend was tried; the pool chooses among them
		return p.s.ready[0]
	}
	return p.drawTie(ties[:n], tieW)
}

// drawTie draws one of the tied backends (indexes into ready, of total
// weight tieW) by weight.
func (p *lrPicker) drawTie(ties []uint8, tieW int64) *pool.Backend {
	n := len(ties)
	if n == 1 {
		return p.s.ready[ties[0]]
	}
	x := int64(uniform(p.rand(), uint64(tieW)))
	for _, k := range ties[:n-1] {
		if x -= int64(p.s.weights[k]); x < 0 {
			return p.s.ready[k]
		}
	}
	return p.s.ready[ties[n-1]]
}
