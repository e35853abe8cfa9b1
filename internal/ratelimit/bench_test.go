package ratelimit

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// A limit high enough that requests are allowed: the cost measured is the
// decision, not a refusal.
var benchParams = Params{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000}

// BenchmarkLocal is one decision of the local limit: one key, the common
// case of a client that keeps coming back.
func BenchmarkLocal(b *testing.B) {
	l := New(benchParams, Options{Name: "bench"})
	k := TextKey("client-1")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, k)
	}
}

// BenchmarkLocalAddr counts by client address (client_ip).
func BenchmarkLocalAddr(b *testing.B) {
	l := New(benchParams, Options{Name: "bench"})
	k := AddrKey(netip.MustParseAddr("2001:db8::1"))
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, k)
	}
}

// BenchmarkLocalParallelManyKeys: every CPU at once over 200,000 keys, more
// than the table's 65,536 slots, so slots are taken and evicted all along.
func BenchmarkLocalParallelManyKeys(b *testing.B) {
	l := New(benchParams, Options{Name: "bench"})
	keys := make([]Key, 200_000)
	for i := range keys {
		keys[i] = TextKey(fmt.Sprint("client-", i))
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(7919)
		for pb.Next() {
			i += 104729
			l.Allow(ctx, keys[i%uint64(len(keys))])
		}
	})
}

// BenchmarkLocalParallelOneKey: every CPU on one key, the worst case for
// the compare-and-swap.
func BenchmarkLocalParallelOneKey(b *testing.B) {
	l := New(benchParams, Options{Name: "bench"})
	k := TextKey("hot")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(ctx, k)
		}
	})
}
