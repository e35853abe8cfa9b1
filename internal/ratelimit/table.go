package ratelimit

import (
	"hash/maphash"
	"math"
	"math/bits"
	"sync/atomic"
)

// table holds the arrival times of one limit's keys in a fixed array of
// slots: its memory is set when it is made, whatever the number of keys
// clients send. A request does a few atomic loads and one compare-and-swap;
// it takes no lock and allocates nothing.
//
// A key lives in one of probeLen slots after the one its hash points at.
// A slot whose arrival time has passed holds a full bucket, which is what
// a key nobody has seen gets anyway: such an idle slot is taken by the
// next new key without losing anything. Only when every slot a new key may
// use belongs to a key still being limited does the table forget one of
// them: the one whose bucket is nearest full (the earliest arrival time),
// which costs the least. So with more keys busy at once than the table
// holds, the keys that send least may get a fresh bucket early; the keys
// that send most stay limited.
//
// Keys are told apart by a 64-bit hash with a seed of the table's own, so
// two keys share a bucket with a chance of about n²/2⁶⁵ for n keys, and a
// client cannot choose keys that collide.
type table struct {
	seed  maphash.Seed
	mask  uint64
	slots []slot
}

// slot is one key's arrival time. key is the key's hash (0: never used);
// tat belongs to whichever key holds the slot. A new key takes a slot by
// swapping key, and a key moves its tat with compare-and-swap, so a slot
// taken while its old key is still being counted can at worst charge one
// request to the wrong key.
type slot struct {
	key atomic.Uint64
	tat atomic.Int64
}

// probeLen is how many consecutive slots a key may use: a few cache lines.
const probeLen = 8

// newTable returns a table for at least n keys (a power of two, at least
// probeLen).
func newTable(n int) *table {
	size := uint64(probeLen)
	if n > probeLen {
		size = 1 << bits.Len64(uint64(n-1))
	}
	return &table{seed: maphash.MakeSeed(), mask: size - 1, slots: make([]slot, size)}
}

// Size is the number of slots, the most keys the table tells apart at once.
func (t *table) size() int { return len(t.slots) }

// hash returns the hash of a key, never 0 (which marks an unused slot).
func (t *table) hash(k Key) uint64 {
	var h uint64
	if k.addr.IsValid() {
		a := k.addr.As16()
		h = maphash.Bytes(t.seed, a[:])
	} else {
		h = maphash.String(t.seed, k.text)
	}
	if h == 0 {
		h = 1
	}
	return h
}

// take applies one request of the key with hash h at now (nanoseconds on
// the limit's clock) under g, and records it when it is allowed.
func (t *table) take(g *gcra, h uint64, now int64) Decision {
	s := t.find(h, now)
	for {
		tat := s.tat.Load()
		next, d := g.decide(tat, now)
		if !d.Allowed || s.tat.CompareAndSwap(tat, next) {
			return d
		}
	}
}

// find returns the slot of the key with hash h, taking one when the key has
// none.
func (t *table) find(h uint64, now int64) *slot {
	for {
		var free, victim *slot
		var freeKey, victimKey uint64 // what each held when looked at
		oldest := int64(math.MaxInt64)
		for i := range uint64(probeLen) {
			s := &t.slots[(h+i)&t.mask]
			k := s.key.Load()
			if k == h {
				return s
			}
			if k == 0 {
				// Slots are never emptied, so the key is in none further
				// on: it would have taken this one.
				if free == nil {
					free, freeKey = s, 0
				}
				break
			}
			if free != nil {
				continue
			}
			if tat := s.tat.Load(); tat <= now {
				free, freeKey = s, k // idle: a full bucket, as a new key's
			} else if tat < oldest {
				victim, victimKey, oldest = s, k, tat
			}
		}
		claim, old := free, freeKey
		if claim == nil {
			claim, old = victim, victimKey
		}
		if claim.key.CompareAndSwap(old, h) {
			if claim == victim {
				// The evicted key's bucket is not this key's.
				claim.tat.Store(0)
			}
			return claim
		}
		// Another request took the slot meanwhile (perhaps for this very
		// key): look again.
	}
}
