package balance

import (
	"cmp"
	"container/heap"
	"net/netip"
	"slices"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Hashing must give the same answer in every sluice process of a fleet, so
// that a key lands on the same backend whichever instance the request hits:
// hash/maphash is ruled out (its seeds are random per process), and so is
// anything keyed on memory addresses. FNV-1a 64 is fixed, dependency-free
// and allocation-free over a string; its high bits mix the last bytes of the
// input poorly, and table slots are taken from the high bits, so the result
// goes through MurmurHash3's 64-bit finaliser. For keys of a few dozen bytes
// this costs a few nanoseconds more than xxhash and needs no dependency.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// mix64 is MurmurHash3's fmix64: every input bit affects every output bit.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hashString is FNV-1a 64 of s, finalised by mix64.
func hashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

// hashAddr is FNV-1a 64 of the address's 16-byte form (IPv4 as
// IPv4-mapped IPv6, so 192.0.2.1 and ::ffff:192.0.2.1 agree), finalised by
// mix64. The zone is ignored.
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(fnvOffset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return mix64(h)
}

// Maglev table sizes: a prime at least 100 times the backends (Maglev's
// advice for a spread within about 1%), and at least 100 times the total of
// the weights divided by their common divisor so that a light backend still
// gets its share of slots, up to maxTableWeights slots.
const (
	minTable        = 1021
	maxTableWeights = 1 << 20
)

// maglevTable fills a lookup table of a prime number of slots with indexes
// into all, each backend taking slots in proportion to its weight, following
// Maglev (Eisenbud et al., NSDI 2016) with Envoy's weighted turns. Every
// backend walks its own permutation of the slots, derived from its Address,
// and backends take turns claiming the next free slot of theirs. Removing a
// backend frees only its slots, which the others claim along their
// permutations, so about 1/N of the keys move. The table depends only on the
// backends' addresses and weights, not on their order in the config, so
// every sluice instance with the same backends builds the same table.
func maglevTable(all []*pool.Backend) []uint32 {
	if len(all) == 0 {
		return nil
	}
	entries := make([]maglevEntry, len(all))
	var g, units, maxW uint64
	for i, b := range all {
		w := uint64(max(1, b.Weight()))
		entries[i] = maglevEntry{index: i, weight: w}
		g = uint64(gcd(int(g), int(w)))
		maxW = max(maxW, w)
	}
	for _, e := range entries {
		units += e.weight / g
	}
	size := uint64(max(minTable, 100*len(all), int(min(100*units, maxTableWeights))))
	size = nextPrime(size)

	slices.SortFunc(entries, func(a, b maglevEntry) int {
		return cmp.Compare(all[a.index].Address, all[b.index].Address)
	})
	for i := range entries {
		e := &entries[i]
		h := hashString(all[e.index].Address)
		e.order = i
		e.slot = h % size
		e.skip = mix64(h^0x9e3779b97f4a7c15)%(size-1) + 1
	}

	const empty = ^uint32(0)
	table := make([]uint32, size)
	for i := range table {
		table[i] = empty
	}
	// Backends take turns t = 0, 1, 2, …, in address order within a turn.
	// The k-th claim of a backend of weight w falls in turn ceil(k×maxW/w):
	// the heaviest claims a slot every turn, one of a third of its weight
	// every third turn. A heap ordered by (turn, address order) visits the
	// claims in that order in O(size × log n) however uneven the weights.
	h := maglevHeap(entries)
	heap.Init(&h)
	for filled := uint64(0); filled < size; filled++ {
		e := &h[0]
		for table[e.slot] != empty {
			e.slot = (e.slot + e.skip) % size
		}
		table[e.slot] = uint32(e.index)
		e.slot = (e.slot + e.skip) % size
		e.claims++
		e.turn = (e.claims*maxW + e.weight - 1) / e.weight
		heap.Fix(&h, 0)
	}
	return table
}

type maglevEntry struct {
	index, order int // in all; in address order
	weight       uint64
	slot, skip   uint64 // the next slot of this backend's permutation, its step
	claims, turn uint64 // slots claimed; turn of the next claim
}

type maglevHeap []maglevEntry

func (h maglevHeap) Len() int { return len(h) }
func (h maglevHeap) Less(i, j int) bool {
	return h[i].turn < h[j].turn || h[i].turn == h[j].turn && h[i].order < h[j].order
}
func (h maglevHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *maglevHeap) Push(any)     { panic("maglevHeap: fixed size") }
func (h *maglevHeap) Pop() any     { panic("maglevHeap: fixed size") }

// nextPrime returns the smallest prime ≥ n (n ≥ 2).
func nextPrime(n uint64) uint64 {
	for ; ; n++ {
		if isPrime(n) {
			return n
		}
	}
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
