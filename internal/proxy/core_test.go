package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
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
