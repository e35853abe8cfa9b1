package pool

import (
	"sync/atomic"
	"time"
)

// budgetSlots × 1s is the window a RetryBudget looks back over.
const budgetSlots = 10

// minRetries is how many retries a window always allows, so that a quiet
// pool can still retry a failed request.
const minRetries = 3

// RetryBudget keeps retries within a percentage of recent requests, so a
// failing pool is not hit by a retry storm: over the last ten seconds,
// retries may be at most Percent% of requests (and always at least 3). It is
// lock-free: one-second slots of atomic counters, each stamped with the
// second it counts. The zero value allows no retries beyond the minimum.
type RetryBudget struct {
	percent atomic.Int32 // share of recent requests that may be retries

	slots     [budgetSlots]budgetSlot
	exhausted atomic.Uint64    // retries refused
	now       func() time.Time // nil: time.Now
}

type budgetSlot struct {
	sec      atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func (b *RetryBudget) slot() *budgetSlot {
	now := time.Now
	if b.now != nil {
		now = b.now
	}
	sec := now().Unix()
	s := &b.slots[sec%budgetSlots]
	if old := s.sec.Load(); old != sec && s.sec.CompareAndSwap(old, sec) {
		// First use of this slot in a new second: forget what it counted.
		// A request counted by a racing goroutine between the swap and the
		// resets may be lost; the budget is an estimate, not an invoice.
		s.requests.Store(0)
		s.retries.Store(0)
	}
	return s
}

// SetPercent sets the share (0-100) of recent requests that may be
// retries. It may change while the budget is in use (a reload).
func (b *RetryBudget) SetPercent(p int) { b.percent.Store(int32(p)) }

// Request counts one client request.
func (b *RetryBudget) Request() { b.slot().requests.Add(1) }

// Exhausted returns how many retries the budget refused: each was wanted
// (retry_on matched, the request could be sent again) and not made.
func (b *RetryBudget) Exhausted() uint64 { return b.exhausted.Load() }

// Allow reports whether one more retry fits the budget, and counts it when
// it does.
func (b *RetryBudget) Allow() bool {
	cur := b.slot()
	oldest := cur.sec.Load() - budgetSlots + 1
	var requests, retries int64
	for i := range b.slots {
		s := &b.slots[i]
		if s.sec.Load() >= oldest {
			requests += s.requests.Load()
			retries += s.retries.Load()
		}
	}
	if retries >= minRetries && retries*100 >= requests*int64(b.percent.Load()) {
		b.exhausted.Add(1)
		return false
	}
	cur.retries.Add(1)
	return true
}
