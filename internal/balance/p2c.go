package balance

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// P2C is the power of two choices: each pick draws two distinct ready
// backends at random by weight and sends the request to the one with the
// lower score (in_flight+1) × latency × load / weight, where latency is
// the backend's moving average of the time to response header and load is
// 1/(1−u) for the utilisation u the backend reports itself (load_report; 1
// without a report, see loadFactor).
//
// That average decays at read time toward the pool's mean with time
// constant pool.LatencyDecay: a backend that was slow once and so stopped
// getting traffic, and with it new latency samples, looks more and more like
// an average backend, wins a comparison again, and its next response
// replaces the stale average (see pool.Stats.ObserveLatency). Without this a
// backend that was slow once is starved for good (traefik #12306). A
// backend without any sample yet counts as average; while no backend has a
// sample the score reduces to in-flight requests per weight.
//
// Weights act as capacity: at equal latency and load the heavier backend
// wins, and it is also drawn more often as a candidate.
type P2C struct {
	// Rand returns uniformly random uint64s; it must not be nil.
	Rand func() uint64
}

var _ pool.Policy = P2C{}

// meanRefresh is how often a picker recomputes the pool's mean latency, the
// value stale averages decay toward: often enough to follow the pool, rarely
// enough that the O(n) pass is amortised to nothing per pick.
const meanRefresh = 100 * time.Millisecond

// Build snapshots the ready backends and their weights.
func (p P2C) Build(s pool.Set) pool.Picker {
	return &p2cPicker{rand: p.Rand, s: newSampler(s.Ready)}
}

type p2cPicker struct {
	rand func() uint64
	s    sampler

	// meanNs (float64 bits) is the value stale averages decay toward (see
	// mean), recomputed by the first pick that finds meanAt (UnixNano)
	// older than meanRefresh; the CompareAndSwap on meanAt elects that pick.
	meanNs atomic.Uint64
	meanAt atomic.Int64
}

func (p *p2cPicker) Pick(info *pool.PickInfo) *pool.Backend {
	ready := p.s.ready
	switch len(ready) {
	case 0:
		return nil
	case 1:
		return ready[0]
	}
	i, j := p.s.two(p.rand(), p.rand())
	bi, bj := ready[i], ready[j]
	if b, ok := onlyUntried(info, bi, bj); ok {
		return b
	}
	now := time.Now()
	mean := p.mean(now)
	if p.score(j, now, mean) < p.score(i, now, mean) {
		return bj
	}
	return bi // i is as random as j, so ties favour neither backend
}

// score is (in_flight+1) × decayed latency × loadFactor / weight of
// ready[k].
func (p *p2cPicker) score(k int, now time.Time, mean float64) float64 {
	b := p.s.ready[k]
	lat := decayed(b, now, mean)
	return float64(b.InFlight.Load()+1) * max(lat, 1) * loadFactor(b, now) / float64(p.s.weights[k])
}

// decayed returns b's latency average in nanoseconds, moved toward mean by
// 1-exp(-age/τ); an average never observed is mean itself.
func decayed(b *pool.Backend, now time.Time, mean float64) float64 {
	avg, at := b.Stats.LatencyAt()
	if at.IsZero() {
		return mean
	}
	age := now.Sub(at)
	if age <= 0 {
		return float64(avg)
	}
	return mean + (float64(avg)-mean)*math.Exp(-float64(age)/float64(pool.LatencyDecay))
}

// mean returns the pool's mean latency in nanoseconds, recomputing it when it
// is older than meanRefresh; concurrent picks keep using the previous value
// while one pick recomputes it.
//
// It is the one value that is also the mean of the decayed averages: with
// e_i = exp(−age_i/τ), m = (1/n)·Σ (m + (avg_i − m)·e_i) holds for
// m = Σ avg_i·e_i / Σ e_i. That is the averages' mean weighted by freshness,
// so a stale outlier barely moves it, and with every average equally old it
// is the plain mean.
func (p *p2cPicker) mean(now time.Time) float64 {
	at, t := p.meanAt.Load(), now.UnixNano()
	if at != 0 && t-at < int64(meanRefresh) || !p.meanAt.CompareAndSwap(at, t) {
		return math.Float64frombits(p.meanNs.Load())
	}
	// Weights are taken relative to the freshest average so that they do not
	// all underflow to zero after a long silence.
	var newest time.Time
	for _, b := range p.s.ready {
		if _, at := b.Stats.LatencyAt(); at.After(newest) {
			newest = at
		}
	}
	var sum, wsum float64
	if !newest.IsZero() {
		for _, b := range p.s.ready {
			avg, at := b.Stats.LatencyAt()
			if at.IsZero() {
				continue
			}
			w := math.Exp(-float64(newest.Sub(at)) / float64(pool.LatencyDecay))
			sum += w * float64(avg)
			wsum += w
		}
	}
	m := 0.0
	if wsum > 0 {
		m = sum / wsum
	}
	p.meanNs.Store(math.Float64bits(m))
	return m
}
