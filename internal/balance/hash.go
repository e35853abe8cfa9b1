package balance

import (
	"math"
	"slices"
	"sync"

	"github.com/sluice-lb/sluice/internal/pool"
)

// ConsistentHash sends all requests with the same key to the same backend,
// through a Maglev lookup table (see maglevTable) built over every backend
// of the pool, ready or not. A key whose backend is not ready, was already
// tried by the request, or is over its bounded-load cap goes to the next
// distinct backend along the table, the same one every time. So when a
// backend goes down or is drained only its keys move, and they come back
// when it returns; adding or removing one of N backends moves about 1/N of
// the keys.
//
// With BalanceFactor f > 0 (HAProxy's hash-balance-factor, Envoy's
// consistent hashing with bounded loads) a backend is passed over while its
// in-flight requests reach ceil(f × (total+1) / n), total being the in-flight
// requests of the n ready backends: a hot key spills over to the next
// backends instead of overloading one.
//
// A request without a key (Key empty, or ClientIP invalid when hashing the
// client IP) goes to a ready backend drawn at random by weight.
type ConsistentHash struct {
	// Rand returns uniformly random uint64s, for requests without a key; it
	// must not be nil.
	Rand func() uint64
	// ClientIP hashes PickInfo.ClientIP (its 16-byte form) instead of
	// PickInfo.Key; false hashes Key.
	ClientIP bool
	// BalanceFactor bounds each backend's share of the in-flight requests to
	// this multiple of the mean; 0 turns the bound off, otherwise it must be
	// at least 1.
	BalanceFactor float64

	// mu guards last, the table of the previous Build: health and admin
	// changes rebuild the picker over the same backends and weights, and
	// reuse it.
	mu   sync.Mutex
	last *cachedTable
}

var _ pool.Policy = (*ConsistentHash)(nil)

type cachedTable struct {
	all     []*pool.Backend
	weights []int
	table   []uint32
}

// Build resolves, for every slot of the table, the first ready backend at or
// after it and the next slot with a different ready backend, so that a pick
// is a hash, a multiplication and a load, and a walk jumps from backend to
// backend.
func (h *ConsistentHash) Build(s pool.Set) pool.Picker {
	p := &hashPicker{
		rand:     h.Rand,
		clientIP: h.ClientIP,
		factor:   h.BalanceFactor,
		all:      s.All,
		s:        newSampler(s.Ready),
	}
	if len(s.Ready) == 0 {
		return p
	}
	table := h.table(s.All)
	inReady := make(map[*pool.Backend]bool, len(s.Ready))
	for _, b := range s.Ready {
		inReady[b] = true
	}
	ready := make([]bool, len(s.All))
	for i, b := range s.All {
		ready[i] = inReady[b]
	}
	size := uint32(len(table))

	// resolved: walk backwards from a ready slot, carrying the last ready
	// backend seen.
	p.resolved = make([]uint32, size)
	start := uint32(slices.IndexFunc(table, func(k uint32) bool { return ready[k] }))
	cur := table[start]
	for n, i := uint32(0), start; n < size; n++ {
		if ready[table[i]] {
			cur = table[i]
		}
		p.resolved[i] = cur
		i = (i + size - 1) % size
	}

	// jump: walk backwards from the end of a run, carrying the start of the
	// run after it. With one ready backend there is one run: jump[i] = i.
	p.jump = make([]uint32, size)
	end := uint32(0)
	for end < size && p.resolved[end] == p.resolved[(end+1)%size] {
		end++
	}
	if end == size {
		for i := range p.jump {
			p.jump[i] = uint32(i)
		}
		return p
	}
	next := (end + 1) % size
	for n, i := uint32(0), end; n < size; n++ {
		if p.resolved[i] != p.resolved[(i+1)%size] {
			next = (i + 1) % size
		}
		p.jump[i] = next
		i = (i + size - 1) % size
	}
	return p
}

// table returns the Maglev table of all, reusing the last one when the
// backends and their weights are unchanged.
func (h *ConsistentHash) table(all []*pool.Backend) []uint32 {
	weights := make([]int, len(all))
	for i, b := range all {
		weights[i] = b.Weight()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.last; c != nil && slices.Equal(c.all, all) && slices.Equal(c.weights, weights) {
		return c.table
	}
	h.last = &cachedTable{all: slices.Clone(all), weights: weights, table: maglevTable(all)}
	return h.last.table
}

type hashPicker struct {
	rand     func() uint64
	clientIP bool
	factor   float64

	all []*pool.Backend
	s   sampler // the ready backends
	// resolved[slot] indexes all: the first ready backend at or after slot.
	resolved []uint32
	// jump[slot] is the next slot (cyclically) whose resolved backend
	// differs from resolved[slot].
	jump []uint32
}

func (p *hashPicker) Pick(info *pool.PickInfo) *pool.Backend {
	if len(p.s.ready) == 0 {
		return nil
	}
	var h uint64
	switch {
	case p.clientIP && info.ClientIP.IsValid():
		h = hashAddr(info.ClientIP)
	case !p.clientIP && info.Key != "":
		h = hashString(info.Key)
	default:
		return p.s.ready[p.s.one(p.rand())]
	}
	size := uint32(len(p.resolved))
	first := uint32(uniform(h, uint64(size)))

	// Walk the table from the key's slot. seen records the backends already
	// considered (for the first 256 of the pool) so that the walk stops once
	// it has seen every ready backend; otherwise it stops after one lap.
	var seen [4]uint64
	nSeen, fallback := 0, -1
	total := int64(-1) // in-flight requests of the ready backends, summed on demand
	for pos, walked := first, uint32(0); ; {
		k := p.resolved[pos]
		fresh := true
		if k < 256 {
			fresh = seen[k/64]&(1<<(k%64)) == 0
			seen[k/64] |= 1 << (k % 64)
		}
		if fresh {
			b := p.all[k]
			if !info.Tried(b) {
				if !p.overloaded(b, &total) {
					return b
				}
				if fallback < 0 {
					fallback = int(k)
				}
			}
			if k < 256 {
				if nSeen++; nSeen == len(p.s.ready) {
					break
				}
			}
		}
		next := p.jump[pos]
		if next > pos {
			walked += next - pos
		} else {
			walked += next + size - pos
		}
		if walked >= size {
			break
		}
		pos = next
	}
	if fallback >= 0 {
		return p.all[fallback] // every untried backend is over its cap
	}
	return p.all[p.resolved[first]] // every ready backend was tried
}

// overloaded reports whether b has reached its bounded-load cap. total is
// computed on first need and kept for the rest of the pick.
func (p *hashPicker) overloaded(b *pool.Backend, total *int64) bool {
	if p.factor == 0 {
		return false
	}
	f := b.InFlight.Load()
	if f == 0 {
		return false // the cap is at least 1
	}
	if *total < 0 {
		*total = 0
		for _, r := range p.s.ready {
			*total += r.InFlight.Load()
		}
	}
	n := float64(len(p.s.ready))
	return float64(f) >= math.Ceil(p.factor*float64(*total+1)/n)
}
