package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

// scripted is an Attempt whose outcomes are given per backend.
type scripted struct {
	outcomes   map[*pool.Backend]Class
	replayable bool
	sent       []*pool.Backend
}

func (s *scripted) Send(_ context.Context, b *pool.Backend, canRetry bool) Outcome {
	s.sent = append(s.sent, b)
	c := s.outcomes[b]
	if c == RetryStatus && !canRetry {
		return Outcome{Class: Done, Status: 503}
	}
	if c == Done || c == ClientError {
		return Outcome{Class: c, Status: 200}
	}
	return Outcome{Class: c, Err: errors.New(fmt.Sprint(c))}
}

func (s *scripted) Replayable() bool { return s.replayable }
func (s *scripted) Resendable() bool { return s.replayable }

// declining is a request (a POST) that the first backend declines
// unprocessed, as an HTTP/2 backend refusing its stream does, maybe after
// part of its body went (bodySent); the others answer it.
type declining struct {
	bodySent, resendable bool
	sent                 []*pool.Backend
}

func (d *declining) Send(_ context.Context, b *pool.Backend, _ bool) Outcome {
	d.sent = append(d.sent, b)
	if len(d.sent) == 1 {
		err := &DialError{Err: errors.New("stream refused"), Unprocessed: true, BodySent: d.bodySent}
		return Outcome{Class: ConnectFailure, Err: fmt.Errorf("attempt: %w", err)}
	}
	return Outcome{Class: Done, Status: 200}
}
func (d *declining) Replayable() bool { return false }
func (d *declining) Resendable() bool { return d.resendable }

// A request declined unprocessed goes elsewhere, even a POST, when no part
// of its body went or the codec can send that part again; and the backend
// that declined it is not ejected for it.
func TestForwardDeclined(t *testing.T) {
	on := config.Retries{NumRetries: 2, OnConnectFailure: true}
	tests := []struct {
		name                 string
		retries              config.Retries
		bodySent, resendable bool
		wantTries            int
		wantStatus           int
	}{
		{"no body sent: retried", on, false, false, 2, 200},
		{"body sent and kept: retried", on, true, true, 2, 200},
		{"body sent, not kept: 502", on, true, false, 1, 502},
		{"retry on connect failure off: 502", config.Retries{NumRetries: 2}, true, true, 1, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, _, ph := target(3, tt.retries)
			d := &declining{bodySent: tt.bodySent, resendable: tt.resendable}
			res := Forward(context.Background(), record(tg), d)
			if res.Tries != tt.wantTries || StatusFor(res) != tt.wantStatus {
				t.Errorf("got tries=%d status=%d, want tries=%d status=%d", res.Tries, StatusFor(res), tt.wantTries, tt.wantStatus)
			}
			if len(ph.failed) != 0 {
				t.Errorf("the declining backend was reported to active health as a connect failure")
			}
		})
	}
}

type passive struct{ failed []*pool.Backend }

func (p *passive) ConnectFailed(b *pool.Backend, _ error) { p.failed = append(p.failed, b) }
func (p *passive) Interval() time.Duration                { return 0 }
func (p *passive) Observe(*pool.Backend, pool.Failure)    {}

func target(n int, r config.Retries) (*Target, []*pool.Backend, *passive) {
	var bs []*pool.Backend
	for i := range n {
		u := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", 9001+i)}
		bs = append(bs, pool.NewBackend(u.String(), u, 1))
	}
	ph := &passive{}
	p := pool.New("p", balance.RoundRobin{}, bs)
	p.Budget.SetPercent(100)
	return &Target{Pool: p, Health: ph, Retries: r}, bs, ph
}

// record is a request routed to tg, as Resolve leaves it.
func record(tg *Target) *Record {
	return &Record{Target: tg, Info: &pool.PickInfo{}}
}

func TestForward(t *testing.T) {
	defaults := config.Retries{NumRetries: 2, OnConnectFailure: true, OnReset: true}
	tests := []struct {
		name        string
		retries     config.Retries
		fail        map[int]Class // backend index → outcome; others Done
		replayable  bool
		wantTries   int
		wantClass   Class
		wantStatus  int
		wantPassive int
	}{
		{"first backend answers", defaults, nil, true, 1, Done, 200, 0},
		{"connect failure retried on another backend", defaults, map[int]Class{0: ConnectFailure}, false, 2, Done, 200, 1},
		{"all refuse: 502 after 3 tries", defaults, map[int]Class{0: ConnectFailure, 1: ConnectFailure, 2: ConnectFailure}, false, 3, ConnectFailure, 502, 3},
		{"retries off", config.Retries{OnConnectFailure: true}, map[int]Class{0: ConnectFailure}, false, 1, ConnectFailure, 502, 1},
		{"reset of an idempotent request retried", defaults, map[int]Class{0: Reset}, true, 2, Done, 200, 0},
		{"reset of a POST is not retried", defaults, map[int]Class{0: Reset}, false, 1, Reset, 502, 0},
		{"timeout: 504, not retried by default", defaults, map[int]Class{0: Timeout}, true, 1, Timeout, 504, 0},
		{"status retry, last try delivers", config.Retries{NumRetries: 1, OnStatus: []int{503}}, map[int]Class{0: RetryStatus, 1: RetryStatus}, true, 2, Done, 503, 0},
		{"client error is final", defaults, map[int]Class{0: ClientError}, true, 1, ClientError, 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, bs, ph := target(3, tt.retries)
			s := &scripted{outcomes: map[*pool.Backend]Class{}, replayable: tt.replayable}
			for i, c := range tt.fail {
				s.outcomes[bs[i]] = c
			}
			res := Forward(context.Background(), record(tg), s)
			if res.Tries != tt.wantTries || res.Class != tt.wantClass || StatusFor(res) != tt.wantStatus {
				t.Errorf("got tries=%d class=%d status=%d, want tries=%d class=%d status=%d",
					res.Tries, res.Class, StatusFor(res), tt.wantTries, tt.wantClass, tt.wantStatus)
			}
			seen := map[*pool.Backend]bool{}
			for _, b := range s.sent {
				if seen[b] {
					t.Errorf("backend %s tried twice for one request", b.Address)
				}
				seen[b] = true
			}
			if len(ph.failed) != tt.wantPassive {
				t.Errorf("passive connect failures = %d, want %d", len(ph.failed), tt.wantPassive)
			}
		})
	}
}

func TestForwardNoBackend(t *testing.T) {
	tg, bs, _ := target(2, config.Retries{})
	for _, b := range bs {
		tg.Pool.SetHealth(b, pool.Unhealthy, time.Time{})
	}
	res := Forward(context.Background(), record(tg), &scripted{})
	if got := StatusFor(res); got != 503 || res.Backend != nil {
		t.Errorf("status = %d backend = %v, want 503 and no backend", got, res.Backend)
	}
}

func TestBackoffBetweenRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := config.Retries{NumRetries: 3, OnConnectFailure: true, OnReset: true,
			BackoffBase: 100 * time.Millisecond, BackoffMax: 150 * time.Millisecond}
		tg, bs, _ := target(4, r)
		s := &scripted{outcomes: map[*pool.Backend]Class{bs[0]: Reset, bs[1]: Reset, bs[2]: Reset}, replayable: true}
		start := time.Now()
		res := Forward(context.Background(), record(tg), s)
		waited := time.Since(start)
		if res.Class != Done || res.Tries != 4 {
			t.Fatalf("got class %d after %d tries, want Done after 4", res.Class, res.Tries)
		}
		// Three waits: jitter within (0,100ms], (0,150ms], (0,150ms].
		if waited <= 0 || waited > 400*time.Millisecond {
			t.Errorf("waited %v in all, want within (0, 400ms]", waited)
		}

		// Connect failures retry at once.
		tg, bs, _ = target(2, r)
		s = &scripted{outcomes: map[*pool.Backend]Class{bs[0]: ConnectFailure}}
		start = time.Now()
		Forward(context.Background(), record(tg), s)
		if waited := time.Since(start); waited != 0 {
			t.Errorf("connect failure retry waited %v, want 0", waited)
		}
	})
}

func TestRetryAfter(t *testing.T) {
	tg, _, _ := target(2, config.Retries{NumRetries: 1, OnStatus: []int{503}})
	a := &scripted{replayable: true}
	tests := []struct {
		retryAfter time.Duration
		want       bool
	}{{0, true}, {time.Second, true}, {2 * time.Second, false}}
	for _, tt := range tests {
		if got := tg.RetryOnStatus(503, tt.retryAfter, a, true); got != tt.want {
			t.Errorf("Retry-After %v: retry = %v, want %v", tt.retryAfter, got, tt.want)
		}
	}
	if tg.RetryOnStatus(502, 0, a, true) {
		t.Errorf("502 not in retry_on was retried")
	}
	if tg.RetryOnStatus(503, 0, &scripted{}, true) {
		t.Errorf("a request that cannot be replayed was retried")
	}
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{{"", 0}, {"3", 3 * time.Second}, {"junk", 0}, {"-1", 0}} {
		if got := ParseRetryAfter(tt.in); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestAttemptsSteps: the steps a codec on an event loop runs (Next, Done,
// Result) decide what Forward decides for the same outcomes, and Next says
// that the pool is full instead of waiting for a slot.
func TestAttemptsSteps(t *testing.T) {
	ctx := context.Background()
	r := config.Retries{NumRetries: 2, OnConnectFailure: true, OnReset: true}
	for _, outcomes := range [][3]Class{
		{ConnectFailure, ConnectFailure, ConnectFailure},
		{ConnectFailure, Done, Reset},
		{Reset, Reset, Done}, // not replayable: one try
	} {
		var got [2]Result
		var sent [2]int
		for i, drive := range []string{"Forward", "steps"} {
			tg, bs, _ := target(3, r)
			a := &scripted{outcomes: map[*pool.Backend]Class{bs[0]: outcomes[0], bs[1]: outcomes[1], bs[2]: outcomes[2]}}
			rec := record(tg)
			if drive == "Forward" {
				got[i] = Forward(ctx, rec, a)
			} else {
				var x Attempts
				x.Start(rec, a)
				for {
					b, full := x.Next()
					if full {
						t.Fatalf("%v: Next says full with no cap", outcomes)
					}
					if b == nil {
						break
					}
					again, backoff := x.Done(ctx, b, a.Send(ctx, b, x.CanRetry()))
					if again && backoff != 0 {
						t.Errorf("%v: backoff %v before retrying a connect failure, want none", outcomes, backoff)
					}
					if !again {
						break
					}
				}
				got[i] = x.Result()
			}
			sent[i] = len(a.sent)
			for _, b := range bs {
				if n := b.InFlight.Load(); n != 0 {
					t.Errorf("%v, %s: %d slots still taken on %s", outcomes, drive, n, b.Address)
				}
			}
		}
		if got[0].Class != got[1].Class || got[0].Status != got[1].Status || got[0].Tries != got[1].Tries || sent[0] != sent[1] {
			t.Errorf("%v: Forward gave %v, %d tries, %d sent; the steps %v, %d tries, %d sent",
				outcomes, got[0].Class, got[0].Tries, sent[0], got[1].Class, got[1].Tries, sent[1])
		}
	}

	tg, bs, _ := target(1, r)
	tg.Pool.Limit.PerBackend = 1
	tg.Pool.Limit.TryAcquire(bs[0]) // another request holds the one slot
	var x Attempts
	x.Start(record(tg), &scripted{})
	if b, full := x.Next(); b != nil || !full {
		t.Fatalf("Next with the one slot taken: %v, full %v; want nil, full", b, full)
	}
	tg.Pool.Limit.Release(bs[0])
	b, full := x.Next()
	if b != bs[0] || full {
		t.Fatalf("Next once the slot is free: %v, full %v; want the backend", b, full)
	}
	if again, _ := x.Done(ctx, b, Outcome{Class: Done, Status: 200}); again {
		t.Error("Done after a delivered response says to try again")
	}
	if res := x.Result(); res.Class != Done || res.Status != 200 || res.Tries != 1 || bs[0].InFlight.Load() != 0 {
		t.Errorf("Result %+v, in flight %d; want Done 200 after 1 try, no slot taken", res, bs[0].InFlight.Load())
	}
}

// loopReq is a request as a codec on an event loop keeps it: its attempts
// and its place in the pool's queue in one struct, and the loop's inbox, on
// which a wake-up from another goroutine is posted.
type loopReq struct {
	x     Attempts
	w     pool.Waiter
	inbox chan struct{}
}

func newLoopReq() *loopReq { return &loopReq{inbox: make(chan struct{}, 1)} }

// wake is the callback the queue calls: it posts to the loop, never blocks.
func (q *loopReq) wake() { q.inbox <- struct{}{} }

// woken reports whether a wake-up was posted, taking it.
func (q *loopReq) woken() bool {
	select {
	case <-q.inbox:
		return true
	default:
		return false
	}
}

// drive runs the attempts for r as a loop codec does, with timers of its
// own for the queue's deadline and the backoff: Next; when full, Queue and,
// once woken, Woken; GiveUp when the deadline passes or ctx ends first.
func (q *loopReq) drive(ctx context.Context, r *Record, a *scripted) Result {
	x := &q.x
	x.Start(r, a)
	b, full := x.Next()
	for {
		for full {
			deadline, err := x.Queue(&q.w, q.wake)
			if err != nil {
				return x.GiveUp(ctx, err)
			}
			timer := time.NewTimer(time.Until(deadline))
			select {
			case <-q.inbox:
				timer.Stop()
				b, full = x.Woken()
			case <-timer.C:
				return x.GiveUp(ctx, pool.ErrQueueTimeout)
			case <-ctx.Done():
				timer.Stop()
				return x.GiveUp(ctx, ctx.Err())
			}
		}
		if b == nil {
			return x.Result()
		}
		again, backoff := x.Done(ctx, b, a.Send(ctx, b, x.CanRetry()))
		if !again || !sleep(ctx, backoff) {
			return x.Result()
		}
		b, full = x.Next()
	}
}

// TestAttemptsQueue: a request that waits for a slot as a loop codec does
// (Queue, a wake callback, Woken, GiveUp) ends as Forward ends it, blocked
// in the queue, for the same pool: the same result, backends, queue wait
// (QueueWait) and slots. Every backend has one slot, held by other requests
// that release them 100ms apart (fake time) as release lists.
func TestAttemptsQueue(t *testing.T) {
	type end struct {
		res      Result
		backend  int // index of res.Backend; -1: nil
		sent     []int
		waits    uint64
		waited   float64 // seconds
		queued   int64
		inFlight []int64
	}
	tests := []struct {
		name     string
		backends int
		maxQueue int
		fail     map[int]Class
		release  []int         // holders that release, in order
		timeout  time.Duration // the request timeout (0: none)
		gone     time.Duration // when the client goes away (0: never)
		want     Class
	}{
		{"woken by a release", 1, 4, nil, []int{0}, 0, 0, Done},
		{"woken by a release on another backend", 2, 4, nil, []int{1}, 0, 0, Done},
		{"connect failure, waits again for the other backend", 2, 4, map[int]Class{0: ConnectFailure}, []int{0, 1}, 0, 0, Done},
		{"queue full", 1, 0, nil, nil, 0, 0, Saturated},
		{"queue timeout", 1, 4, nil, nil, 0, 0, Saturated},
		{"queue full on the retry", 2, 0, map[int]Class{0: ConnectFailure}, nil, 0, 0, Saturated},
		{"request timeout while queued", 1, 4, nil, nil, 50 * time.Millisecond, 0, Timeout},
		{"client gone while queued", 1, 4, nil, nil, 0, 50 * time.Millisecond, ClientGone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ends [2]end
			for i, drive := range []string{"Forward", "loop"} {
				synctest.Test(t, func(t *testing.T) {
					tg, bs, _ := target(tt.backends, config.Retries{NumRetries: 2, OnConnectFailure: true})
					l := &tg.Pool.Limit
					l.PerBackend, l.MaxQueue, l.Timeout = 1, tt.maxQueue, time.Second
					for _, b := range bs {
						l.TryAcquire(b) // another request holds the one slot
					}
					if tt.name == "queue full on the retry" {
						l.Release(bs[0]) // the first try finds a slot
					}
					ctx := context.Background()
					if tt.timeout > 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeoutCause(ctx, tt.timeout, ErrRequestTimeout)
						defer cancel()
					}
					if tt.gone > 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithCancel(ctx)
						time.AfterFunc(tt.gone, cancel)
					}
					released := make(chan struct{})
					go func() {
						defer close(released)
						for _, i := range tt.release {
							time.Sleep(100 * time.Millisecond)
							l.Release(bs[i])
						}
					}()
					a := &scripted{outcomes: map[*pool.Backend]Class{}}
					for i, c := range tt.fail {
						a.outcomes[bs[i]] = c
					}
					var res Result
					if drive == "Forward" {
						res = Forward(ctx, record(tg), a)
					} else {
						res = newLoopReq().drive(ctx, record(tg), a)
					}
					<-released
					e := &ends[i]
					e.res, e.backend = res, slices.Index(bs, res.Backend)
					for _, b := range a.sent {
						e.sent = append(e.sent, slices.Index(bs, b))
					}
					_, e.waits, e.waited = tg.Pool.QueueWait.Snapshot()
					e.queued = l.Queued()
					for _, b := range bs {
						e.inFlight = append(e.inFlight, b.InFlight.Load())
					}
				})
			}
			f, lp := ends[0], ends[1]
			if f.res.Class != tt.want {
				t.Errorf("Forward: class %v, want %v", f.res.Class, tt.want)
			}
			if f.res.Class != lp.res.Class || StatusFor(f.res) != StatusFor(lp.res) || f.res.Tries != lp.res.Tries ||
				f.backend != lp.backend || !errors.Is(lp.res.Err, f.res.Err) {
				t.Errorf("Forward: %v %d after %d tries on %d (%v); loop: %v %d after %d tries on %d (%v)",
					f.res.Class, StatusFor(f.res), f.res.Tries, f.backend, f.res.Err,
					lp.res.Class, StatusFor(lp.res), lp.res.Tries, lp.backend, lp.res.Err)
			}
			if !slices.Equal(f.sent, lp.sent) {
				t.Errorf("sent to %v by Forward, %v by the loop", f.sent, lp.sent)
			}
			if f.waits == 0 || f.waits != lp.waits || f.waited != lp.waited {
				t.Errorf("QueueWait: Forward %d waits, %vs; loop %d waits, %vs", f.waits, f.waited, lp.waits, lp.waited)
			}
			if f.queued != 0 || lp.queued != 0 || !slices.Equal(f.inFlight, lp.inFlight) {
				t.Errorf("after: Forward %d queued, in flight %v; loop %d queued, in flight %v",
					f.queued, f.inFlight, lp.queued, lp.inFlight)
			}
		})
	}
}

// TestAttemptsQueueOrder: a loop request that is woken but loses the slot
// to a quicker request keeps its turn (Woken says full, Queue puts it at
// the front); one that gives up after being woken passes the wake-up on, so
// the next in line gets the slot.
func TestAttemptsQueueOrder(t *testing.T) {
	ctx := context.Background()
	tg, bs, _ := target(1, config.Retries{})
	l := &tg.Pool.Limit
	l.PerBackend, l.MaxQueue, l.Timeout = 1, 4, 10*time.Second
	l.TryAcquire(bs[0]) // another request holds the one slot
	q := [3]*loopReq{newLoopReq(), newLoopReq(), newLoopReq()}
	for i, r := range q {
		r.x.Start(record(tg), &scripted{})
		if b, full := r.x.Next(); b != nil || !full {
			t.Fatalf("%d: Next with the slot taken: %v, full %v", i, b, full)
		}
		if _, err := r.x.Queue(&r.w, r.wake); err != nil {
			t.Fatalf("%d: Queue: %v", i, err)
		}
	}
	if n := l.Queued(); n != 3 {
		t.Fatalf("queued = %d, want 3", n)
	}

	l.Release(bs[0])
	if !q[0].woken() || q[1].woken() || q[2].woken() {
		t.Fatal("the release did not wake the first in line alone")
	}
	l.TryAcquire(bs[0]) // a quicker request takes the slot first
	if b, full := q[0].x.Woken(); b != nil || !full {
		t.Fatalf("Woken with the slot taken: %v, full %v; want nil, full", b, full)
	}
	if _, err := q[0].x.Queue(&q[0].w, q[0].wake); err != nil {
		t.Fatalf("Queue again: %v", err)
	}
	l.Release(bs[0]) // the quicker request is done
	if !q[0].woken() || q[1].woken() {
		t.Fatal("the request that lost the slot lost its turn too")
	}
	// Its queue deadline passes before the loop runs the wake-up: the
	// wake-up is passed on to the next in line.
	res := q[0].x.GiveUp(ctx, pool.ErrQueueTimeout)
	if res.Class != Saturated || StatusFor(res) != 503 || res.Backend != nil || q[0].x.Result() != res {
		t.Errorf("GiveUp: %+v, Result %+v; want Saturated, 503, no backend", res, q[0].x.Result())
	}
	if !q[1].woken() || q[2].woken() {
		t.Fatal("the wake-up of a request that gave up was not passed on to the next in line")
	}
	b, full := q[1].x.Woken()
	if b != bs[0] || full {
		t.Fatalf("Woken after the wake-up passed on: %v, full %v; want the backend (the slot is not lost)", b, full)
	}
	// The last one gives up before its turn: it leaves the queue, and
	// the slot's release wakes nobody.
	if res := q[2].x.GiveUp(ctx, pool.ErrQueueTimeout); res.Class != Saturated || !errors.Is(res.Err, pool.ErrQueueTimeout) {
		t.Errorf("GiveUp at the queue deadline: %+v, want Saturated, ErrQueueTimeout", res)
	}
	if again, _ := q[1].x.Done(ctx, b, Outcome{Class: Done, Status: 200}); again {
		t.Fatal("Done after a delivered response says to try again")
	}
	if q[2].woken() {
		t.Error("a request that gave up before its turn was woken")
	}
	if res := q[1].x.Result(); res.Class != Done || res.Status != 200 || res.Tries != 1 {
		t.Errorf("Result %+v, want Done 200 after 1 try", res)
	}
	if _, n, _ := tg.Pool.QueueWait.Snapshot(); n != 3 || l.Queued() != 0 || bs[0].InFlight.Load() != 0 {
		t.Errorf("QueueWait %d waits, %d queued, %d in flight; want 3, 0, 0", n, l.Queued(), bs[0].InFlight.Load())
	}
}

// TestAttemptsQueueNoBackend: a request woken when no backend is left to
// try (a quicker request took the slot, the pool went down meanwhile) ends
// as Forward ends it, with a 503 and no backend, its wait counted.
func TestAttemptsQueueNoBackend(t *testing.T) {
	tg, bs, _ := target(1, config.Retries{})
	l := &tg.Pool.Limit
	l.PerBackend, l.MaxQueue, l.Timeout = 1, 4, 10*time.Second
	l.TryAcquire(bs[0]) // another request holds the one slot
	q := newLoopReq()
	q.x.Start(record(tg), &scripted{})
	if _, full := q.x.Next(); !full {
		t.Fatal("Next with the slot taken is not full")
	}
	if _, err := q.x.Queue(&q.w, q.wake); err != nil {
		t.Fatal(err)
	}
	l.Release(bs[0])
	l.TryAcquire(bs[0]) // a quicker request takes the slot
	tg.Pool.SetHealth(bs[0], pool.Unhealthy, time.Time{})
	if !q.woken() {
		t.Fatal("the release woke nobody")
	}
	if b, full := q.x.Woken(); b != nil || full {
		t.Fatalf("Woken with no backend left: %v, full %v; want nil, not full", b, full)
	}
	res := q.x.Result()
	if res.Class != ConnectFailure || StatusFor(res) != 503 || res.Backend != nil {
		t.Errorf("Result %+v, want a 503 with no backend", res)
	}
	if _, n, _ := tg.Pool.QueueWait.Snapshot(); n != 1 || l.Queued() != 0 {
		t.Errorf("QueueWait %d waits, %d queued; want 1, 0", n, l.Queued())
	}
}

// TestAttemptsAllocs: the steps allocate nothing when the request does not
// wait, nor when it waits in a queue that has room already.
func TestAttemptsAllocs(t *testing.T) {
	ctx := context.Background()
	tg, bs, _ := target(1, config.Retries{})
	l := &tg.Pool.Limit
	l.PerBackend, l.MaxQueue, l.Timeout = 1, 4, 10*time.Second
	rec, a, q := record(tg), &scripted{}, newLoopReq()
	wake := q.wake
	if n := testing.AllocsPerRun(100, func() {
		*rec.Info = pool.PickInfo{}
		q.x.Start(rec, a)
		b, _ := q.x.Next()
		q.x.Done(ctx, b, Outcome{Class: Done, Status: 200})
		q.x.Result()
	}); n != 0 {
		t.Errorf("%v allocations without a wait, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		*rec.Info = pool.PickInfo{}
		l.TryAcquire(bs[0]) // another request holds the one slot
		q.x.Start(rec, a)
		if _, full := q.x.Next(); !full {
			t.Fatal("Next with the slot taken is not full")
		}
		if _, err := q.x.Queue(&q.w, wake); err != nil {
			t.Fatal(err)
		}
		l.Release(bs[0])
		<-q.inbox
		b, _ := q.x.Woken()
		q.x.Done(ctx, b, Outcome{Class: Done, Status: 200})
	}); n != 0 {
		t.Errorf("%v allocations with a wait, want 0", n)
	}
}

// await waits for q's wake-up until deadline, on the fake clock; false: the
// deadline passed first.
func (q *loopReq) await(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-q.inbox:
		return true
	case <-t.C:
		return false
	}
}

// TestAttemptsQueueFreed: a slot released after Next found every backend
// full but before the request joined the queue wakes nobody, as nobody is
// queued yet; Queue finds it free once the request is queued and wakes the
// first in line (here the request itself), so that the request does not
// wait until queue_timeout with the slot idle, nor the requests that queue
// behind it. The same holds for a request that queues again after a
// wake-up that lost the slot, and for two requests that find two slots
// freed so.
func TestAttemptsQueueFreed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		tg, bs, _ := target(2, config.Retries{})
		l := &tg.Pool.Limit
		l.PerBackend, l.MaxQueue, l.Timeout = 1, 4, time.Second
		for _, b := range bs {
			l.TryAcquire(b) // other requests hold both slots
		}
		start := time.Now()
		var q [5]*loopReq
		next := func(i int) {
			t.Helper()
			q[i] = newLoopReq()
			q[i].x.Start(record(tg), &scripted{})
			if b, full := q[i].x.Next(); b != nil || !full {
				t.Fatalf("%d: Next with both slots taken: %v, full %v; want nil, full", i, b, full)
			}
		}
		queue := func(i int) time.Time {
			t.Helper()
			deadline, err := q[i].x.Queue(&q[i].w, q[i].wake)
			if err != nil {
				t.Fatalf("%d: Queue: %v", i, err)
			}
			return deadline
		}
		woken := func(i int, deadline time.Time) *pool.Backend {
			t.Helper()
			if !q[i].await(deadline) {
				t.Fatalf("%d: not woken within queue_timeout (%v queued), with a slot free: %d, %d in flight",
					i, l.Queued(), bs[0].InFlight.Load(), bs[1].InFlight.Load())
			}
			b, full := q[i].x.Woken()
			if b == nil || full {
				t.Fatalf("%d: Woken: %v, full %v; want a backend", i, b, full)
			}
			return b
		}
		done := func(i int, b *pool.Backend) {
			t.Helper()
			if again, _ := q[i].x.Done(ctx, b, Outcome{Class: Done, Status: 200}); again {
				t.Fatalf("%d: Done after a delivered response says to try again", i)
			}
		}

		// 0 finds both full, then the holder of 1 releases its slot.
		next(0)
		l.Release(bs[1])
		b0 := woken(0, queue(0))
		if b0 != bs[1] {
			t.Fatalf("0 got %s, want the freed %s", b0.Address, bs[1].Address)
		}
		// A later request queues behind 0 and gets 0's slot when it is done.
		next(1)
		dl := queue(1)
		if n := l.Queued(); n != 1 {
			t.Fatalf("queued = %d, want 1", n)
		}
		done(0, b0)
		b1 := woken(1, dl)

		// 2 is woken by a release, a quicker request takes the slot, and
		// releases it after 2 found it taken but before 2 queued again.
		next(2)
		dl = queue(2)
		l.Release(bs[0])
		if !q[2].await(dl) {
			t.Fatal("2: the release woke nobody")
		}
		l.TryAcquire(bs[0]) // the quicker request
		if b, full := q[2].x.Woken(); b != nil || !full {
			t.Fatalf("2: Woken with the slot taken: %v, full %v; want nil, full", b, full)
		}
		l.Release(bs[0])
		b2 := woken(2, queue(2))

		// Both slots are released after 3 and 4 found them taken: both are
		// woken as they queue, and each gets one.
		next(3)
		next(4)
		done(1, b1)
		done(2, b2)
		dl3, dl4 := queue(3), queue(4)
		b3, b4 := woken(3, dl3), woken(4, dl4)
		if b3 == b4 {
			t.Fatalf("3 and 4 both got %s", b3.Address)
		}
		done(3, b3)
		done(4, b4)

		if d := time.Since(start); d != 0 {
			t.Errorf("waited %v on the fake clock, want 0 (no wait ran out)", d)
		}
		for i, r := range q {
			if res := r.x.Result(); res.Class != Done || res.Tries != 1 {
				t.Errorf("%d: %+v, want Done after 1 try", i, res)
			}
		}
		if _, n, _ := tg.Pool.QueueWait.Snapshot(); n != 5 || l.Queued() != 0 {
			t.Errorf("QueueWait %d waits, %d queued; want 5, 0", n, l.Queued())
		}
		for _, b := range bs {
			if n := b.InFlight.Load(); n != 0 {
				t.Errorf("%d in flight on %s, want 0", n, b.Address)
			}
		}
	})
}

// TestForwardQueueFreed: as TestAttemptsQueueFreed for Forward, blocked in
// the queue: a slot released after tryAcquire found every backend full but
// before the request joined the queue (waitSlot, where acquire goes on) is
// taken at once, not after queue_timeout; a request that then queues behind
// it gets its slot when it is done; two requests that find two slots freed
// so get one each.
func TestForwardQueueFreed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		tg, bs, _ := target(2, config.Retries{})
		p, l := tg.Pool, &tg.Pool.Limit
		l.PerBackend, l.MaxQueue, l.Timeout = 1, 4, time.Second
		for _, b := range bs {
			l.TryAcquire(b) // other requests hold both slots
		}
		start := time.Now()
		// full is a request for which tryAcquire found both backends full:
		// acquire goes on with waitSlot(ctx, p, info, b).
		type request struct {
			info *pool.PickInfo
			b    *pool.Backend
		}
		full := func() request {
			t.Helper()
			r := request{info: &pool.PickInfo{}}
			var got bool
			if r.b, got = tryAcquire(p, r.info); r.b == nil || got {
				t.Fatalf("tryAcquire with both slots taken: %v, got %v; want a backend, not got", r.b != nil, got)
			}
			return r
		}
		wait := func(r request) (*pool.Backend, error) { return waitSlot(ctx, p, r.info, r.b) }
		check := func(b *pool.Backend, err error) *pool.Backend {
			t.Helper()
			if err != nil {
				t.Fatalf("waitSlot with a slot free: %v (%d queued, %d, %d in flight)",
					err, l.Queued(), bs[0].InFlight.Load(), bs[1].InFlight.Load())
			}
			return b
		}

		// The request finds both full, then the holder of 1 releases.
		r := full()
		l.Release(bs[1])
		b := check(wait(r))
		if b != bs[1] {
			t.Fatalf("got %s, want the freed %s", b.Address, bs[1].Address)
		}
		// A later request queues behind it and gets its slot when it is
		// done.
		res := make(chan Result)
		go func() { res <- Forward(ctx, record(tg), &scripted{}) }()
		synctest.Wait()
		if n := l.Queued(); n != 1 {
			t.Fatalf("queued = %d, want 1", n)
		}
		l.Release(b)
		if r := <-res; r.Class != Done || r.Backend != bs[1] {
			t.Errorf("Forward behind it: %v on %v, want Done on %s", r.Class, r.Backend, bs[1].Address)
		}

		// Both slots are released after two requests found them taken.
		l.TryAcquire(bs[1]) // another request takes the slot Forward left
		r1, r2 := full(), full()
		l.Release(bs[0])
		l.Release(bs[1])
		type slot struct {
			b   *pool.Backend
			err error
		}
		got := make(chan slot)
		for _, r := range []request{r1, r2} {
			go func() {
				b, err := wait(r)
				got <- slot{b, err}
			}()
		}
		s1, s2 := <-got, <-got
		if b1, b2 := check(s1.b, s1.err), check(s2.b, s2.err); b1 == b2 {
			t.Errorf("both got %s", b1.Address)
		}

		if d := time.Since(start); d != 0 {
			t.Errorf("waited %v on the fake clock, want 0 (no wait ran out)", d)
		}
		if _, n, _ := p.QueueWait.Snapshot(); n != 4 || l.Queued() != 0 {
			t.Errorf("QueueWait %d waits, %d queued; want 4, 0", n, l.Queued())
		}
	})
}
