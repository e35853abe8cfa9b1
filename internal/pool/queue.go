package pool

import (
	"context"
	"errors"
	"slices"
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
//
// One queue holds every waiting request, whether its goroutine blocks in
// Wait or an event loop waits for a callback (Enqueue), so both kinds keep
// one first-in-first-out order.
//
// A request queues only once it found no slot free (TryAcquire failed on
// every backend it could take), and a Release wakes someone only when a
// request is queued: a slot released between the two would wake nobody, and
// the request would wait, with the slot free, until a later Release or its
// deadline. So the request looks again once queued (the free argument of
// Enqueue and Wait), and when a slot is free it wakes the first in line, as
// that Release would have.
type Limit struct {
	// PerBackend is the cap on requests in flight per backend (0: none).
	PerBackend int64
	// MaxQueue is how many requests may wait; beyond it they fail at once.
	MaxQueue int
	// Timeout is how long a request may wait for a slot.
	Timeout time.Duration

	waiting atomic.Int64 // len(queue), read without mu
	mu      sync.Mutex   // guards queue and the Waiters in it
	queue   []*Waiter
}

// Waiter is one request's place in a Limit's queue. A caller embeds it in
// its own per-request state, so that queueing allocates nothing beyond the
// queue's own growth. The zero value is ready for Enqueue; a Waiter may be
// queued again once woken or cancelled, but not copied while queued.
type Waiter struct {
	wake   func() // what Enqueue was given; nil once taken by the wake-up
	queued bool   // in l.queue
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

// Free reports whether b has a slot free now (always, without a cap),
// taking none.
func (l *Limit) Free(b *Backend) bool {
	return l.PerBackend <= 0 || b.InFlight.Load() < l.PerBackend
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

// Enqueue puts w in the queue without blocking, for a caller that cannot
// block a goroutine (an event loop): at the back, or at the front when again
// is set (a waiter that was woken but lost the slot to a quicker request,
// keeping first-in-first-out order). Unless again, it fails with
// ErrQueueFull when MaxQueue requests wait already.
//
// wake is called once, when w is first in line and a slot was released: from
// the goroutine that released it (or that passed the wake-up on, see
// Cancel, or that queued a request, see free), with no lock of l held, so
// that it may call l's methods or take locks of its own; it must not block.
// The woken caller then tries for a slot (TryAcquire) and, when a quicker
// request took it, calls Enqueue again with again set. The caller bounds the
// wait itself: when its deadline passes or its client goes away first, it
// calls Cancel.
//
// free reports whether a slot that the caller could take is free now,
// taking none (nil: never asked). The caller queues after finding no slot
// free; a Release between that and w joining the queue may have found
// nobody to wake. So, once w is queued, Enqueue asks free, and when a slot
// is free it wakes the first in line, as the Release would have: w itself
// when it is first, and then wake is called before Enqueue returns. A wake-up
// that turns out to be spare (the slot was the one a Release had announced
// already) costs the woken request a try and a place at the front.
func (l *Limit) Enqueue(w *Waiter, again bool, wake func(), free func() bool) error {
	l.mu.Lock()
	if w.queued {
		l.mu.Unlock()
		panic("pool: Enqueue of a Waiter already in the queue")
	}
	if !again && len(l.queue) >= l.MaxQueue {
		l.mu.Unlock()
		return ErrQueueFull
	}
	w.wake, w.queued = wake, true
	if again {
		l.queue = slices.Insert(l.queue, 0, w)
	} else {
		l.queue = append(l.queue, w)
	}
	l.waiting.Store(int64(len(l.queue)))
	l.mu.Unlock()
	// Release frees the slot before it reads waiting, and w was counted in
	// waiting before free reads the slots (both atomic, so in one order):
	// either that Release sees w queued and wakes the first in line, or free
	// sees its slot free.
	if free != nil && free() {
		l.signal()
	}
	return nil
}

// Cancel takes w out of the queue when its wait ends without a slot (its
// deadline passed, its client went away) and reports whether it was still
// queued. When w was woken already (false: wake has run or is about to), the
// slot its wake-up announced is not lost: the wake-up passes on to the next
// in line, and the caller ignores its own. Call it only for a w that is
// queued or whose wake-up the caller has not acted on.
func (l *Limit) Cancel(w *Waiter) bool {
	l.mu.Lock()
	if w.queued {
		if i := slices.Index(l.queue, w); i >= 0 {
			l.queue = slices.Delete(l.queue, i, i+1)
			l.waiting.Store(int64(len(l.queue)))
		}
		w.wake, w.queued = nil, false
		l.mu.Unlock()
		return true
	}
	l.mu.Unlock()
	// Signalled while giving up: pass the slot on to the next in line.
	l.signal()
	return false
}

// Wait queues the caller until a slot is released somewhere in the pool,
// deadline passes (ErrQueueTimeout) or ctx ends (its error). A nil error
// means "try again". A waiter that was woken but lost the slot waits again
// at the front (again = true), keeping first-in-first-out order. free is as
// for Enqueue: once queued, a slot it reports free wakes the first in line
// (the caller itself, when first: Wait returns at once). It is Enqueue with
// a wake-up on a channel, and Cancel when the wait ends first.
func (l *Limit) Wait(ctx context.Context, deadline time.Time, again bool, free func() bool) error {
	w := new(Waiter)
	ch := make(chan struct{}, 1)
	if err := l.Enqueue(w, again, func() { ch <- struct{}{} }, free); err != nil {
		return err
	}
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
	l.Cancel(w)
	return err
}

// signal wakes the longest-waiting request, if any. The waiter leaves the
// queue under mu but its wake runs after mu is released: a callback may call
// l's methods (take the slot, queue again) or take locks of its own.
func (l *Limit) signal() {
	l.mu.Lock()
	if len(l.queue) == 0 {
		l.mu.Unlock()
		return
	}
	w := l.queue[0]
	l.queue = slices.Delete(l.queue, 0, 1)
	l.waiting.Store(int64(len(l.queue)))
	wake := w.wake
	w.wake, w.queued = nil, false
	l.mu.Unlock()
	wake()
}
