// Package balance implements the balancing policies: each builds an
// immutable pool.Picker from a pool.Set and chooses among the ready backends
// without locks or allocation.
package balance

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Options are what a policy may need beyond the backends.
type Options struct {
	// Rand returns uniformly random uint64s. Nil means math/rand/v2's
	// goroutine-safe global source; tests pass a seeded one.
	Rand func() uint64
	// HashKey is the pool's hash_key. For consistent_hash, "client_ip"
	// hashes PickInfo.ClientIP, as ip_hash does; any other value, including
	// the zero value "", hashes PickInfo.Key, which the proxy extracts from
	// the request. Other policies ignore it.
	HashKey string
	// HashBalanceFactor is hash_balance_factor for consistent_hash and
	// ip_hash: a backend is passed over while its in-flight requests reach
	// ceil(factor × (total+1) / ready backends). Zero turns the bound off;
	// otherwise it must be at least 1 (1.25 is a common choice).
	HashBalanceFactor float64
}

func (o Options) rand() func() uint64 {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Uint64
}

// Names lists the implemented policies.
var Names = []string{"round_robin", "random", "least_requests", "p2c", "consistent_hash", "ip_hash"}

// New returns the policy called name. It fails on an unknown name and on a
// HashBalanceFactor that is neither 0 nor at least 1.
func New(name string, o Options) (pool.Policy, error) {
	switch name {
	case "round_robin", "":
		return RoundRobin{}, nil
	case "random":
		return Random{Rand: o.rand()}, nil
	case "least_requests":
		return LeastRequests{Rand: o.rand()}, nil
	case "p2c":
		return P2C{Rand: o.rand()}, nil
	case "consistent_hash", "ip_hash":
		if f := o.HashBalanceFactor; f != 0 && !(f >= 1 && f <= math.MaxFloat64) {
			return nil, fmt.Errorf("hash_balance_factor %v: want 0 (off) or at least 1", f)
		}
		return &ConsistentHash{
			Rand:          o.rand(),
			ClientIP:      name == "ip_hash" || o.HashKey == "client_ip",
			BalanceFactor: o.HashBalanceFactor,
		}, nil
	}
	return nil, fmt.Errorf("unknown balance policy %q", name)
}

// gcd returns the greatest common divisor of a and b.
func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
