// Package balance implements the balancing policies: each builds an
// immutable pool.Picker from a pool.Set and chooses among the ready backends
// without locks or allocation.
package balance

import (
	"fmt"
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
	// otherwise it must be from MinBalanceFactor to MaxBalanceFactor (1.25
	// is a common choice). Other policies ignore it.
	HashBalanceFactor float64
}

func (o Options) rand() func() uint64 {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Uint64
}

// Default is the policy of a pool that names none.
const Default = "round_robin"

// The bounds of hash_balance_factor (Options.HashBalanceFactor) other than
// 0, which turns the bound off.
const (
	MinBalanceFactor = 1.0
	MaxBalanceFactor = 100.0
)

// Spec describes one balancing policy: its name in the config, which of the
// pool keys around the policy it honours, and how to build it. The specs
// table below is the one list of policies: config validates against it and
// New builds from it.
type Spec struct {
	// Name is the value of the pool's balance key.
	Name string
	// HashKey: the policy hashes the request part the pool's hash_key
	// names (consistent_hash). ip_hash hashes the client address whatever
	// hash_key says; the other policies do not hash.
	HashKey bool
	// BalanceFactor: the policy honours hash_balance_factor (bounded load).
	BalanceFactor bool
	// SlowStart: the policy balances by effective weight, so slow_start
	// ramps a returning backend. The hash policies do not: ramping would move
	// keys away from the backend and back.
	SlowStart bool
	// Load: the policy weighs the utilisation backends report
	// (load_report; see pool.Backend.Utilization).
	Load bool

	build func(Spec, Options) pool.Policy
}

var specs = [...]Spec{
	{Name: "round_robin", SlowStart: true, build: func(Spec, Options) pool.Policy { return RoundRobin{} }},
	{Name: "random", SlowStart: true, build: func(_ Spec, o Options) pool.Policy { return Random{Rand: o.rand()} }},
	{Name: "least_requests", SlowStart: true, Load: true, build: func(_ Spec, o Options) pool.Policy { return LeastRequests{Rand: o.rand()} }},
	{Name: "p2c", SlowStart: true, Load: true, build: func(_ Spec, o Options) pool.Policy { return P2C{Rand: o.rand()} }},
	{Name: "consistent_hash", HashKey: true, BalanceFactor: true, build: newHash},
	{Name: "ip_hash", BalanceFactor: true, build: newHash},
}

func newHash(s Spec, o Options) pool.Policy {
	return &ConsistentHash{
		Rand:          o.rand(),
		ClientIP:      !s.HashKey || o.HashKey == "client_ip",
		BalanceFactor: o.HashBalanceFactor,
	}
}

// Names returns the names of the policies whose spec satisfies keep (every
// policy when keep is nil), in the order the documentation lists them.
func Names(keep func(Spec) bool) []string {
	var names []string
	for _, s := range specs {
		if keep == nil || keep(s) {
			names = append(names, s.Name)
		}
	}
	return names
}

// Lookup returns the policy called name.
func Lookup(name string) (Spec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// CheckBalanceFactor returns an error saying what to write unless f is 0
// (off) or from MinBalanceFactor to MaxBalanceFactor.
func CheckBalanceFactor(f float64) error {
	if f == 0 || f >= MinBalanceFactor && f <= MaxBalanceFactor {
		return nil
	}
	return fmt.Errorf("hash_balance_factor %v is out of range: use 0 (off) or a factor from %v to %v, e.g. 1.25", f, MinBalanceFactor, MaxBalanceFactor)
}

// New returns the policy called name ("" is Default). It fails on an
// unknown name and on a HashBalanceFactor that CheckBalanceFactor refuses;
// policies that do not bound load ignore the factor.
func New(name string, o Options) (pool.Policy, error) {
	if name == "" {
		name = Default
	}
	s, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("unknown balance policy %q", name)
	}
	if err := CheckBalanceFactor(o.HashBalanceFactor); err != nil {
		return nil, err
	}
	return s.build(s, o), nil
}

// gcd returns the greatest common divisor of a and b.
func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
