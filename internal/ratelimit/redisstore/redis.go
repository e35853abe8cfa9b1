// Package redisstore is a ratelimit.Store in Redis: one limit shared by
// every sluice instance, one atomic script call (GCRA) per decision, with a
// circuit that sends requests back to their local count while Redis cannot
// be reached.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/ratelimit"
)

// gcraScript is one decision in Redis, atomically, in one round trip: the
// same algorithm as the local count (package ratelimit) on Redis's own clock (microseconds), so
// that instances whose clocks differ still agree. KEYS[1] holds the key's
// arrival time and expires when its bucket is full again. ARGV: the
// emission interval in microseconds, the burst. It returns {allowed,
// retry after, reset}, both times in microseconds.
//
// Microseconds since 1970 (about 2⁵⁰) are exact in Lua's doubles; %d
// writes them without an exponent.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > tolerance then
  return {0, nxt - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
return {1, 0, nxt - now}
`)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	// Address is host:port.
	Address string
	// Password authenticates (AUTH); "" sends none.
	Password string
	// Prefix starts every key the store writes.
	Prefix string
	// Timeout bounds each call, connecting included (0: DefaultTimeout).
	Timeout time.Duration
	// Retry is how often a store found unreachable is tried again (0:
	// DefaultRetry).
	Retry time.Duration
	// Events receives the store's transitions (nil: none are told).
	Events *events.Log
}

// Defaults of RedisOptions.
const (
	DefaultTimeout = 100 * time.Millisecond
	DefaultRetry   = 500 * time.Millisecond
)

// tripAfter is how many calls in a row must fail before the store is taken
// as down and no request waits for it any more.
const tripAfter = 3

// ErrStoreDown is what Take returns at once while the store is taken as
// unreachable.
var ErrStoreDown = errors.New("rate limit store unreachable: counting alone")

// Redis is a ratelimit.Store in Redis: one GCRA script call per decision. It is a
// circuit: a few failed calls in a row take it out, so that a dead Redis
// costs requests no time; then a loop of its own tries Redis again every
// Retry, and the first answer brings it back. Each transition is published
// once (events.RateLimitStoreDown and events.RateLimitStoreUp), and every
// failed call counts in Errors. It starts out, and is after Close, down.
type Redis struct {
	opts RedisOptions
	// client is replaced by the loop each time the store goes down, so
	// that connections left from before an outage (dead after a Redis
	// restart) are never tried once it is back.
	client atomic.Pointer[redis.Client]

	up      atomic.Bool
	fails   atomic.Int32  // failed calls in a row
	errs    atomic.Uint64 // failed calls
	lastErr atomic.Pointer[error]
	closed  atomic.Bool

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

var _ ratelimit.Store = (*Redis)(nil)

// NewRedis returns a store and starts its loop, which connects at once;
// Close stops it. It is down until Redis first answers.
func NewRedis(o RedisOptions) *Redis {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	quietRedis.Do(func() { redis.SetLogger(debugLog{}) })
	r := &Redis{opts: o, kick: make(chan struct{}, 1), done: make(chan struct{})}
	r.client.Store(r.newClient())
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.loop(ctx)
	return r
}

// go-redis writes a line for every failed dial through a logger that is
// global to the process: while Redis is down, a line per request. The store
// tells its transitions itself (events, counters), so the library's lines
// go to the debug level of the default slog logger instead.
var quietRedis sync.Once

type debugLog struct{}

func (debugLog) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, "redis client", "message", fmt.Sprintf(format, v...))
}

// newClient returns a client of Redis with no connection yet.
func (r *Redis) newClient() *redis.Client {
	o := r.opts
	return redis.NewClient(&redis.Options{
		Addr:     o.Address,
		Password: o.Password,
		Protocol: 2,
		// No retries and short timeouts: a request waits at most Timeout
		// for its decision, then counts alone.
		MaxRetries:            -1,
		DialerRetries:         1,
		DialTimeout:           o.Timeout,
		ReadTimeout:           o.Timeout,
		WriteTimeout:          o.Timeout,
		PoolTimeout:           o.Timeout,
		ContextTimeoutEnabled: true,
		ReadBufferSize:        4096,
		WriteBufferSize:       4096,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
}

// Take implements Store.
func (r *Redis) Take(ctx context.Context, key string, p ratelimit.Params) (ratelimit.Decision, error) {
	if !r.up.Load() {
		return ratelimit.Decision{}, ErrStoreDown
	}
	interval := p.Interval().Microseconds() // Params.Check keeps it ≥ 1
	burst := p.BurstOrRate()
	cctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	res, err := gcraScript.Run(cctx, r.client.Load(), []string{r.opts.Prefix + key}, interval, burst).Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("rate limit script answered %d values, want 3", len(res))
	}
	if err != nil {
		if ctx.Err() == nil && !r.closed.Load() {
			r.fail(err) // not the client leaving, nor a store replaced by a reload
		}
		return ratelimit.Decision{}, err
	}
	r.fails.Store(0)
	d := ratelimit.Decision{Allowed: res[0] == 1, RetryAfter: time.Duration(res[1]) * time.Microsecond,
		Reset: time.Duration(res[2]) * time.Microsecond}
	if d.Allowed {
		d.Remaining = (interval*burst - res[2]) / interval
	}
	return d, nil
}

// fail counts a failed call, and takes the store out after tripAfter in a
// row; the loop tells the transition.
func (r *Redis) fail(err error) {
	r.errs.Add(1)
	if r.fails.Add(1) >= tripAfter && r.up.CompareAndSwap(true, false) {
		r.lastErr.Store(&err)
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Up reports whether decisions are shared now.
func (r *Redis) Up() bool { return r.up.Load() }

// Errors is the number of calls to Redis that failed.
func (r *Redis) Errors() uint64 { return r.errs.Load() }

// Address is the Redis address.
func (r *Redis) Address() string { return r.opts.Address }

// loop checks Redis while the store is down, every Retry, and publishes
// each transition once.
func (r *Redis) loop(ctx context.Context) {
	defer close(r.done)
	const (
		unknown = iota
		shared
		alone
	)
	told := unknown
	down := func(err error) {
		if told != alone {
			told = alone
			r.client.Swap(r.newClient()).Close()
			r.opts.Events.Publish(events.RateLimitStoreDown, "", "",
				fmt.Sprintf("redis %s: %v: each instance counts alone until it answers", r.opts.Address, err))
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if !r.up.Load() {
			if told == shared {
				if p := r.lastErr.Load(); p != nil {
					down(*p)
				}
			}
			pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
			err := r.client.Load().Ping(pctx).Err()
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err == nil:
				r.fails.Store(0)
				r.up.Store(true)
				told = shared
				r.opts.Events.Publish(events.RateLimitStoreUp, "", "",
					fmt.Sprintf("redis %s answers: rate limits are shared", r.opts.Address))
			default:
				r.errs.Add(1)
				down(err)
			}
		}
		var wait <-chan time.Time
		if !r.up.Load() {
			timer.Reset(r.opts.Retry)
			wait = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-wait:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// Close stops the loop, waits for it, and closes the connections. Calls
// still under way fail without counting; later ones fail at once.
func (r *Redis) Close() error {
	r.closed.Store(true)
	r.up.Store(false)
	r.cancel()
	<-r.done
	return r.client.Load().Close()
}
