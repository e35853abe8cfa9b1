package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Attempts is the attempt loop of one request as steps that never block,
// which Forward runs for the codecs that block on their sockets; a codec on
// an event loop runs them between readiness events, and waits out the
// backoff in its own way. It waits for a pool slot in the pool's one queue,
// in the same order as the requests Forward queues, but is woken by a
// callback (Queue, Woken, GiveUp). Start it before use.
type Attempts struct {
	r     *Record
	a     Replayer
	tries int // attempts begun
	max   int
	res   Result

	// The wait for a slot, from Next reporting full to its end.
	picked *pool.Backend // the backend Next picked but found full
	w      *pool.Waiter  // the request's place in the queue; nil: not queued
	since  time.Time     // when the wait began; zero: no wait under way
	ended  bool          // the wait ended the attempts (res is final)
	late   bool          // GiveUp found the request woken: its wake is on its way
}

// WakeComing reports, once, that the last GiveUp found the request woken
// already: its wake callback runs (or ran) all the same, and the codec must
// ignore it, also when the same Waiter has queued again since.
func (x *Attempts) WakeComing() bool {
	late := x.late
	x.late = false
	return late
}

// Start begins the attempts for r (r.Target and r.Info from Resolve).
func (x *Attempts) Start(r *Record, a Replayer) {
	t := r.Target
	*x = Attempts{r: r, a: a, max: min(1+t.Retries.NumRetries, pool.MaxTries)}
	t.Pool.Budget.Request()
}

// Next picks the backend for the next attempt and takes a slot on it,
// without waiting. It returns nil when no attempt can begin now: with full,
// every candidate is at its cap or requests are queued before this one
// (wait for a slot with Queue, then Woken); else no backend is left to try,
// and Result is final.
func (x *Attempts) Next() (b *pool.Backend, full bool) {
	if x.tries >= x.max {
		return nil, false
	}
	b, got := tryAcquire(x.r.Target.Pool, x.r.Info)
	if b != nil && !got {
		x.picked = b
		return nil, true
	}
	x.waited()
	if b == nil {
		return nil, false
	}
	x.begin(b)
	return b, false
}

// Queue puts the request in the pool's queue after Next (or Woken) reported
// full, as Forward waits in pool.Limit.Wait: w, kept in the request's own
// state, is its place, and wake is called once, when it is first in line and
// a slot was released, from the goroutine that released it and with no lock
// held (see pool.Limit.Enqueue); the codec then calls Woken, on its loop.
// When a slot was released as the request joined the queue (after Next found
// none), wake may be called from within Queue, before it returns: the codec
// handles it as any other wake-up, once Queue returned (it posts it to its
// loop; it does not call Woken from within wake).
// The first Queue of an attempt begins the wait and joins the back of the
// queue; one after a wake-up that lost the slot keeps the request's turn at
// the front. The wait may last until deadline (the pool's queue_timeout):
// when that passes first, or the client goes away, call GiveUp. With an
// error (pool.ErrQueueFull) nothing was queued: call GiveUp.
func (x *Attempts) Queue(w *pool.Waiter, wake func()) (deadline time.Time, err error) {
	l := &x.r.Target.Pool.Limit
	again := !x.since.IsZero()
	if !again {
		x.since = time.Now()
	}
	x.w = w // before Enqueue, which may call wake
	if err := l.Enqueue(w, again, wake, x.free); err != nil {
		x.w = nil
		return time.Time{}, err
	}
	return x.since.Add(l.Timeout), nil
}

// free reports whether Woken would find a slot now (see slot); Queue gives
// it to the pool's queue, which asks it once the request is queued.
func (x *Attempts) free() bool {
	return slot(x.r.Target.Pool, x.r.Info, x.picked, false) != nil
}

// Woken takes the slot a wake-up announced and begins the attempt on it,
// as Forward does once Wait returns: on the backend picked before the wait,
// else on any eligible candidate not yet tried. When a quicker request took
// the slot it picks again as Next does, and says the same: b, the attempt
// begun; full, call Queue again (the request keeps its turn); neither, no
// backend is left to try, and Result is final.
func (x *Attempts) Woken() (b *pool.Backend, full bool) {
	x.w = nil
	if c := woken(x.r.Target.Pool, x.r.Info, x.picked); c != nil {
		x.waited()
		x.begin(c)
		return c, false
	}
	return x.Next()
}

// GiveUp ends the wait for a slot without one: Queue refused it
// (pool.ErrQueueFull), its deadline passed (pool.ErrQueueTimeout), or ctx
// ended (its error). The request leaves the queue; when it had been woken
// meanwhile the wake-up passes on to the next in line, and the codec
// ignores its own wake when it comes. Result is final, as Forward decides
// it, from ctx as Done reads it: a 504 when ctx's deadline passed (the
// request timeout), 499 when ctx was cancelled (the client went away), else
// 503 with err (StatusFor).
func (x *Attempts) GiveUp(ctx context.Context, err error) Result {
	if w := x.w; w != nil {
		x.w = nil
		x.late = !x.r.Target.Pool.Limit.Cancel(w)
	}
	x.waited()
	return x.unqueued(ctx, err)
}

// waited ends the wait under way, if any, counting it in the pool's
// QueueWait, whether or not it got a slot (as acquire does).
func (x *Attempts) waited() {
	if !x.since.IsZero() {
		x.r.Target.Pool.QueueWait.Observe(time.Since(x.since))
		x.since = time.Time{}
	}
}

// unqueued makes Result final for a wait for a slot that failed with err:
// a 504 when it was the request timeout, 499 when the client went away (as
// ctx says), else 503 (the queue was full or no slot freed in time).
func (x *Attempts) unqueued(ctx context.Context, err error) Result {
	switch ctx.Err() {
	case context.DeadlineExceeded: // the request timeout, while queued
		x.res.Outcome = Outcome{Class: Timeout, Err: context.Cause(ctx)}
	case context.Canceled:
		x.res.Outcome = Outcome{Class: ClientGone, Err: err}
	default:
		x.res.Outcome = Outcome{Class: Saturated, Err: err}
	}
	x.ended = true
	return x.res
}

// begin counts an attempt on b, whose slot is taken.
func (x *Attempts) begin(b *pool.Backend) {
	x.r.Info.MarkTried(b)
	x.tries++
	x.res.Backend, x.res.Tries = b, x.tries
}

// CanRetry reports whether another attempt may follow the one begun: when
// not, the codec delivers whatever the backend answers.
func (x *Attempts) CanRetry() bool { return x.tries < x.max }

// Done accounts for the attempt on b that ended with o (its slot, passive
// health, failure counts) and decides what follows: another attempt
// (again), after backoff (0: at once), or none, and Result is final.
func (x *Attempts) Done(ctx context.Context, b *pool.Backend, o Outcome) (again bool, backoff time.Duration) {
	t := x.r.Target
	x.res.Outcome = o
	t.Pool.Limit.Release(b)
	res := &x.res
	if res.Class == ConnectFailure || res.Class == Reset {
		// The sockets' deadlines may pass before the context's timer
		// fires: the deadline itself decides.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// The request's own deadline cut the attempt short (a dial
			// or a write gave up): the client gets a 504, as for any
			// request that ran out of time.
			res.Outcome = Outcome{Class: Timeout, Err: ErrRequestTimeout}
		}
	}
	switch res.Class {
	case Done, RetryStatus:
		t.Health.Observe(b, pool.StatusFailure(res.Status))
	case ConnectFailure:
		b.Stats.Failures.Add(1)
		if de := (*DialError)(nil); !errors.As(res.Err, &de) || !de.Unprocessed {
			t.Health.ConnectFailed(b, res.Err)
		}
		t.Health.Observe(b, pool.FailConnect)
	case Reset:
		b.Stats.Failures.Add(1)
		t.Health.Observe(b, pool.FailReset)
	case Timeout:
		b.Stats.Failures.Add(1)
		t.Health.Observe(b, pool.FailTimeout)
	}
	switch res.Class {
	case Done, ClientError, ClientGone:
		return false, 0
	}
	// A RetryStatus outcome already took its budget (see RetryOnStatus).
	if x.tries >= x.max || ctx.Err() != nil || !t.retryable(res.Outcome, x.a) ||
		res.Class != RetryStatus && !t.Pool.Budget.Allow() {
		return false, 0
	}
	t.Pool.Retries.Add(1)
	x.r.Trace.retry(b, x.tries, res.Outcome)
	if res.Class == ConnectFailure {
		return true, 0
	}
	return true, t.backoff(x.tries-1, res.RetryAfter)
}

// Result is what the attempts decided; when no backend was eligible, a 503
// (StatusFor).
func (x *Attempts) Result() Result {
	if x.res.Backend == nil && !x.ended {
		x.res.Outcome = Outcome{Class: ConnectFailure, Status: 503}
	}
	return x.res
}
