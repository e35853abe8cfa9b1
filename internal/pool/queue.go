package pool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrQueueFull and ErrQueueTimeout say why a request found no backend slot.
var (
	ErrQueueFull    = errors.New("every backend is at max_connections_per_backend and the queue is full")
	ErrQueueTimeout = errors.New("no backend slot freed within queue_timeout")
)

// Limit caps the requests in flight on each backend of a pool and queues the
// requests that find every backend full, first in, first out (HAProxy's
// maxconn, maxqueue and timeout queue). The zero value is no limit.
type Limit struct {
	// PerBackend is the cap on requests in flight per backend (0: none).
	PerBackend int64
	// MaxQueue is how many requests may wait; beyond it they fail at once.
	MaxQueue int
	// Timeout is how long a request may wait for a slot.
	Timeout time.Duration

	waiting atomic.Int64
	mu      sync.Mutex // guards queue
	queue   []chan struct{}
}

// TryAcquire takes a slot on b when it has one free (always, without a
// cap), counting the request in b.InFlight.
func (l *Limit) TryAcquire(b *Backend) bool {
	if l.PerBackend <= 0 {
		b.InFlight.Add(1)
		return true
	}
	for {
		n := b.InFlight.Load()
		if n >= l.PerBackend {
			return false
		}
		if b.InFlight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release frees b's slot and hands it to the longest-waiting request.
func (l *Limit) Release(b *Backend) {
	b.InFlight.Add(-1)
	if l.PerBackend > 0 && l.waiting.Load() > 0 {
		l.signal()
	}
}

// Queued reports how many requests are waiting for a slot.
func (l *Limit) Queued() int64 { return l.waiting.Load() }

// Wait queues the caller until a slot is released somewhere in the pool,
// deadline passes (ErrQueueTimeout) or ctx ends (its error). A nil error
// means "try again". A waiter that was woken but lost the slot waits again
// at the front (again = true), keeping first-in-first-out order.
func (l *Limit) Wait(ctx context.Context, deadline time.Time, again bool) error {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	if !again && len(l.queue) >= l.MaxQueue {
		l.mu.Unlock()
		return ErrQueueFull
	}
	if again {
		l.queue = append([]chan struct{}{ch}, l.queue...)
	} else {
		l.queue = append(l.queue, ch)
	}
	l.waiting.Add(1)
	l.mu.Unlock()

	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	var err error
	select {
	case <-ch:
		return nil
	case <-t.C:
		err = ErrQueueTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	for i, c := range l.queue {
		if c == ch {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			l.waiting.Add(-1)
			l.mu.Unlock()
			return err
		}
	}
	l.mu.Unlock()
	// Signalled while giving up: pass the slot on to the next in line.
	l.signal()
	return err
}

func (l *Limit) signal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return
	}
	ch := l.queue[0]
	l.queue = l.queue[1:]
	l.waiting.Add(-1)
	ch <- struct{}{}
}
