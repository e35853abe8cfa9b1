package redisstore

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/ratelimit"
	"github.com/sluice-lb/sluice/internal/ratelimit/redistest"
)

// A limit high enough that requests are allowed: the cost measured is the
// decision, not a refusal.
var benchParams = ratelimit.Params{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000}

// BenchmarkRedis is one decision through a real redis-server on loopback:
// one script call, one round trip.
func BenchmarkRedis(b *testing.B) {
	st, l := benchRedis(b)
	k := ratelimit.TextKey("client-1")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, k)
	}
	if st.Errors() > 0 {
		b.Fatalf("%d store errors", st.Errors())
	}
}

// BenchmarkRedisParallel: concurrent decisions through one client, as a
// busy instance makes them.
func BenchmarkRedisParallel(b *testing.B) {
	st, l := benchRedis(b)
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		k := ratelimit.TextKey(fmt.Sprint("client-", next.Add(1)))
		for pb.Next() {
			l.Allow(ctx, k)
		}
	})
	if st.Errors() > 0 {
		b.Fatalf("%d store errors", st.Errors())
	}
}

func benchRedis(b *testing.B) (*Redis, *ratelimit.Limit) {
	rs := redistest.Start(b)
	st := NewRedis(RedisOptions{Address: rs.Addr, Prefix: "bench:", Timeout: time.Second})
	b.Cleanup(func() { st.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !st.Up() {
		if time.Now().After(deadline) {
			b.Fatal("store not up within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return st, ratelimit.New(benchParams, ratelimit.Options{Name: "bench", Store: st})
}
