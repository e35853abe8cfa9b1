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
}

func (o Options) rand() func() uint64 {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Uint64
}

// Names lists the implemented policies.
var Names = []string{"round_robin", "random"}

// New returns the policy called name.
func New(name string, o Options) (pool.Policy, error) {
	switch name {
	case "round_robin", "":
		return RoundRobin{}, nil
	case "random":
		return Random{Rand: o.rand()}, nil
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
