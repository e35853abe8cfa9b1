package pool

import (
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBudget(20, func() time.Time { return now })
	for range 100 {
		b.Request()
	}
	allowed := 0
	for range 100 {
		if b.Allow() {
			allowed++
		}
	}
	if allowed != 20 {
		t.Errorf("after 100 requests at 20%%: %d retries allowed, want 20", allowed)
	}
	if got := b.Exhausted(); got != 80 {
		t.Errorf("Exhausted() = %d after 80 refusals, want 80", got)
	}

	// A quiet pool still gets the minimum.
	q := newBudget(20, func() time.Time { return now })
	q.Request()
	allowed = 0
	for range 10 {
		if q.Allow() {
			allowed++
		}
	}
	if allowed != minRetries {
		t.Errorf("quiet pool: %d retries allowed, want %d", allowed, minRetries)
	}

	// Ten seconds later the window has forgotten the old retries.
	now = now.Add(budgetSlots * time.Second)
	for range 10 {
		b.Request()
	}
	if !b.Allow() {
		t.Errorf("after the window moved on: retry refused, want allowed")
	}
}

func BenchmarkRetryBudget(b *testing.B) {
	rb := &RetryBudget{}
	rb.SetPercent(20)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rb.Request()
			rb.Allow()
		}
	})
}

func newBudget(percent int, now func() time.Time) *RetryBudget {
	b := &RetryBudget{now: now}
	b.SetPercent(percent)
	return b
}
