// Package proxy is the codec-neutral core of sluice's request path: route →
// pick → attempts with retries → accounting, and what every codec shares
// (forwarding fields, request ids, affinity, hash keys, tunnels, access
// accounting). The codecs that speak a wire protocol to clients and backends
// live beneath it, each in its own package: h1 (sluice's HTTP/1.1 engine)
// and nethttp (net/http). The core imports none of them and knows no
// transport; a codec plugs in through Attempt and keeps its connections to
// backends in the pool's Upstream.
//
// Words: a listener accepts clients; a route sends a request to a pool; a
// pool (an Envoy cluster, an HAProxy backend section) holds backends (Envoy
// endpoints, HAProxy servers); upstream is towards backends, downstream
// towards clients.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/route"
)

// Passive receives what the request path learns about backend health.
type Passive interface {
	// ConnectFailed reports that nothing could be sent to b.
	ConnectFailed(b *pool.Backend, err error)
	// Observe reports how one attempt on b went, for outlier detection:
	// pool.NoFailure, or a connect failure, reset, timeout or 5xx.
	Observe(b *pool.Backend, f pool.Failure)
	// Interval is the active check interval (0: none); it sets Retry-After.
	Interval() time.Duration
}

// Target is a pool as the request path sees it. It is immutable; a reload
// builds new Targets (sharing Pools and Backends whose config is unchanged).
type Target struct {
	Pool    *pool.Pool
	Health  Passive
	Retries config.Retries
	// Timeouts bound the upstream side; see config.PoolTimeouts.
	Timeouts config.PoolTimeouts
	// Upstream holds each codec's connections to the backends; listeners
	// of every codec share it.
	Upstream *Upstream
	// RetryAfter is the Retry-After value sent with 503 (seconds).
	RetryAfter string
	// HashKey is what hash policies hash (zero: nothing, or the client IP).
	HashKey HashKey
	// Sticky is cookie affinity; nil means off.
	Sticky *Sticky
	// LoadHeader is the response field in which backends report their
	// load (load_report.header), in canonical form; "" reads none.
	LoadHeader string
	// GRPCWeb: gRPC-Web requests are translated to gRPC for the backends
	// (package grpcweb).
	GRPCWeb bool
}

// Listener is the immutable view of one listener that a request uses from
// start to finish; the server swaps it atomically on reload.
type Listener struct {
	Name string
	// Slot is the listener's stable counter slot (see pool.MaxListeners).
	Slot    int
	Routes  *route.Table
	Targets []*Target // indexed by the pool index Routes returns
	Trusted []netip.Prefix
	Limits  config.Limits
	// TLS reports whether clients connect with TLS (X-Forwarded-Proto).
	TLS bool
	// Covers reports whether the certificate a TLS connection was served
	// with covers host: an HTTP/2 request for another authority on it gets
	// 421 (RFC 9110 §15.5.20). Nil: no check.
	Covers func(cs *tls.ConnectionState, host string) bool
	// ClientCert is the X-Forwarded-Client-Cert value for a connection's
	// verified client certificate ("" when none). Nil: no mTLS.
	ClientCert func(cs *tls.ConnectionState) string
	// ClientSubject is the distinguished name of a connection's verified
	// client certificate, for the access log ("" when none). Nil: no mTLS.
	ClientSubject func(cs *tls.ConnectionState) string
	// NoPool counts requests answered without a pool (404, 400, …).
	NoPool *pool.Stats
	// Access is the access log; nil means off.
	Access *accesslog.Logger
	// Tracer starts a span per request (see StartTrace); nil means
	// tracing is off.
	Tracer trace.Tracer
	// Stats are the listener's own counters (duration by status class,
	// requests by protocol), kept across reloads; nil counts nothing.
	Stats *ListenerStats
	// AltSvc is the Alt-Svc field value that advertises HTTP/3 on this
	// listener (`h3=":443"; ma=86400`). The codecs set it on HTTP/1.1 and
	// HTTP/2 responses, in place of any the backend sent; "" leaves
	// responses as they are.
	AltSvc string
	// ACME answers the ACME HTTP-01 challenges of the running sluice on
	// this plain-HTTP listener, before routing; a token it does not know
	// is routed as any request. Nil: none.
	ACME HTTPChallenges
	// RateLimit applies to every request of the listener; nil: none.
	RateLimit *RateLimit
	// RouteLimits[i] applies to the requests route i matches; nil entries
	// and routes past its end have none.
	RouteLimits []*RateLimit
	// RateLimited counts requests refused by a rate limit, across the
	// listener's generations; nil: not counted.
	RateLimited *atomic.Uint64
}

// Verbose reports whether a request's strings (method, host, path, …) are
// read: the access log or tracing is on. A codec fills them only then.
func (l *Listener) Verbose() bool { return l.Access != nil || l.Tracer != nil }

// Class says how one attempt ended.
type Class uint8

const (
	// Done: a response (from the backend) went to the client.
	Done Class = iota
	// ConnectFailure: no connection to the backend; nothing was sent.
	ConnectFailure
	// Reset: the backend closed or reset the connection, or answered with
	// invalid HTTP, before a response header arrived.
	Reset
	// Timeout: no response header within response_header, or the request
	// timeout expired.
	Timeout
	// RetryStatus: the backend answered with a status listed in retry_on and
	// the response was discarded so that another backend can be tried.
	RetryStatus
	// ClientError: the client's request body was malformed or too large.
	ClientError
	// ClientGone: the client went away; nobody is left to answer.
	ClientGone
	// Saturated: every backend was at max_connections_per_backend and the
	// queue was full or no slot freed within queue_timeout (503).
	Saturated
)

// String names the class as logs, spans and the access log show it.
func (c Class) String() string {
	switch c {
	case Done:
		return "done"
	case ConnectFailure:
		return "connect_failure"
	case Reset:
		return "reset"
	case Timeout:
		return "timeout"
	case RetryStatus:
		return "retry_status"
	case ClientError:
		return "client_error"
	case ClientGone:
		return "client_gone"
	case Saturated:
		return "saturated"
	}
	return "unknown"
}

// Outcome is what a codec reports about one attempt.
type Outcome struct {
	Class Class
	// Status is the status the client got (Done) or should get (ClientError).
	Status int
	// Err is the cause, for logs.
	Err error
	// RetryAfter is the backend's Retry-After on a RetryStatus outcome.
	RetryAfter time.Duration
	// Connect is how long getting a connection to the backend took (the
	// dial and any TLS handshake; 0 for a connection reused from the
	// pool). Header is the time from the start of the attempt to the
	// backend's response head (0: none came). A codec measures both.
	Connect, Header time.Duration
}

// Attempt is one request as the core drives it; codecs implement it.
//
// What every codec guarantees beneath it: a response reaches only the
// client that asked for it. A backend connection is used again only after
// exactly one complete response was read for the one request sent on it and
// nothing else arrived; a connection with bytes buffered or readable when a
// request would be written to it is closed, not used; a response whose
// framing leaves extra bytes is delivered (it is complete) and its
// connection discarded; a response that cannot be framed unambiguously
// (status outside 100–599, differing Content-Length fields) is a Reset, never
// relayed.
type Attempt interface {
	// Send tries the request on b. When canRetry is false this is the last
	// try, so the codec must deliver whatever the backend answers.
	Send(ctx context.Context, b *pool.Backend, canRetry bool) Outcome
	Replayer
}

// Replayer is what the retry rules ask of a request.
type Replayer interface {
	// Replayable reports whether the request may be sent again after it
	// may have reached a backend (idempotent method, replayable body).
	Replayable() bool
	// Resendable reports whether the request's body, as much of it as any
	// backend may have read, can be sent again whole, whatever the method:
	// all a request needs to go elsewhere when a backend declined it
	// unprocessed after reading part of its body (DialError.BodySent).
	Resendable() bool
}

// Result is what the core decided for a request.
type Result struct {
	Outcome
	// Backend is the last backend tried (nil when none was eligible).
	Backend *pool.Backend
	// Tries is the number of attempts made.
	Tries int
}

// Forward runs the attempt loop for the request r on r.Target (with r.Info
// from Resolve): pick a backend not yet tried, send, account, and retry
// within the pool's retry policy and retry budget; each retry is an event on
// the request's span. When Result.Class is not Done, the codec answers the
// client with StatusFor. It blocks: in the pool's queue for a slot, in the
// codec's Send and in the backoff between tries; it runs the steps of
// Attempts.
func Forward(ctx context.Context, r *Record, a Attempt) Result {
	var x Attempts
	x.Start(r, a)
	for x.tries < x.max {
		b, err := acquire(ctx, r.Target.Pool, r.Info)
		if err != nil {
			return x.unqueued(ctx, err)
		}
		if b == nil {
			break
		}
		x.begin(b)
		again, backoff := x.Done(ctx, b, a.Send(ctx, b, x.CanRetry()))
		if !again || !sleep(ctx, backoff) {
			return x.res
		}
	}
	return x.Result()
}

// retryable applies retry_on and the idempotency rule: only a connect
// failure (or a backend's word that it did not process the request) proves
// that nothing was delivered; after a reset or a timeout the backend may
// have acted on the request, so it is retried only when the attempt says it
// is replayable (idempotent, body replayable). A POST is never delivered
// twice because of sluice.
func (t *Target) retryable(o Outcome, a Replayer) bool {
	r := &t.Retries
	switch o.Class {
	case ConnectFailure:
		// Declined unprocessed after part of the body went: it goes
		// elsewhere only if that part can be sent again.
		return r.OnConnectFailure && (!bodySent(o.Err) || a.Resendable())
	case Reset:
		return r.OnReset && a.Replayable()
	case Timeout:
		return r.OnTimeout && a.Replayable()
	case RetryStatus:
		return true // the codec only discards a response it may retry
	}
	return false
}

// bodySent reports a DialError whose request body was partly sent.
func bodySent(err error) bool {
	var de *DialError
	return errors.As(err, &de) && de.BodySent
}

// RetryOnStatus decides, before a codec discards a response, whether it
// may be retried: its status is listed in retry_on, the request can be sent
// again, this was not the last try (canRetry), the backend did not ask for
// more than MaxRetryAfter (Retry-After), and the retry budget has room,
// which it takes. When it says no, the codec delivers the response.
func (t *Target) RetryOnStatus(status int, retryAfter time.Duration, a Replayer, canRetry bool) bool {
	return canRetry && slices.Contains(t.Retries.OnStatus, status) && retryAfter <= MaxRetryAfter &&
		a.Replayable() && t.Pool.Budget.Allow()
}

// MaxRetryAfter is the longest Retry-After sluice waits out before a retry;
// a backend asking for longer gets its answer delivered instead.
const MaxRetryAfter = time.Second

// backoff is the wait before retry number try+1: the backend's Retry-After
// when it gave one, else full jitter over backoff_base×2^try capped at
// backoff_max (0: none).
func (t *Target) backoff(try int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return retryAfter
	}
	ceil := t.Retries.BackoffMax
	if base := t.Retries.BackoffBase; base > 0 && try < 16 {
		ceil = min(ceil, base<<try)
	}
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceil)) + 1)
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// StatusFor returns the status a client gets for a failed request.
func StatusFor(r Result) int {
	switch r.Class {
	case Done, ClientError:
		return r.Status
	case Timeout:
		return 504
	case ConnectFailure:
		if r.Backend == nil {
			return 503
		}
		return 502
	case ClientGone:
		return 499
	case Saturated:
		return 503
	}
	return 502
}

// acquire picks a backend for the next attempt and takes a slot on it. When
// the picked backend is full it takes any untried candidate (an eligible
// backend of the serving priority level) with a free slot, and when all are
// full it queues for one (waitSlot). It returns nil, nil when no backend is
// eligible.
func acquire(ctx context.Context, p *pool.Pool, info *pool.PickInfo) (*pool.Backend, error) {
	b, got := tryAcquire(p, info)
	if b == nil || got {
		return b, nil
	}
	return waitSlot(ctx, p, info, b)
}

// waitSlot is acquire once tryAcquire found every candidate full (b, the
// backend it picked): it waits in the pool's queue, until queue_timeout,
// takes the slot a wake-up announces (woken), and when a quicker request
// took it picks again and waits at the front. The wait, whether or not it
// got a slot, counts in the pool's QueueWait.
func waitSlot(ctx context.Context, p *pool.Pool, info *pool.PickInfo, b *pool.Backend) (*pool.Backend, error) {
	l := &p.Limit
	start := time.Now()
	defer func() { p.QueueWait.Observe(time.Since(start)) }()
	deadline := start.Add(l.Timeout)
	for again := false; ; again = true {
		free := func() bool { return slot(p, info, b, false) != nil }
		if err := l.Wait(ctx, deadline, again, free); err != nil {
			return nil, err
		}
		if c := woken(p, info, b); c != nil {
			return c, nil
		}
		var got bool
		if b, got = tryAcquire(p, info); b == nil || got {
			return b, nil
		}
	}
}

// woken takes the slot that a wake-up in the queue announced, without
// queueing again: on b, the backend picked before the wait, else on any
// eligible candidate not yet tried. Nil: a quicker request took it; pick
// again and wait at the front. Forward (acquire) and the loops (Woken)
// share it, so both take a slot after a wait alike.
func woken(p *pool.Pool, info *pool.PickInfo, b *pool.Backend) *pool.Backend {
	return slot(p, info, b, true)
}

// slot finds a slot for a request that waits in the queue, as woken takes
// it: on b, the backend picked before the wait, else on an eligible
// candidate not yet tried. With take it takes it; without, it only says
// which backend has one free, for the queue to ask once the request joined
// it (pool.Limit.Enqueue's free), so that a slot freed meanwhile is not
// left idle while the request waits. Nil: none free.
func slot(p *pool.Pool, info *pool.PickInfo, b *pool.Backend, take bool) *pool.Backend {
	l := &p.Limit
	has := func(c *pool.Backend) bool {
		if take {
			return l.TryAcquire(c)
		}
		return l.Free(c)
	}
	if has(b) {
		return b
	}
	for _, c := range p.Candidates() {
		if c.Eligible() && !info.Tried(c) && has(c) {
			return c
		}
	}
	return nil
}

// tryAcquire is acquire without the wait: the picked backend (nil: none is
// eligible), and got when a slot was taken on it or, the picked one being
// full, on another untried candidate, which it returns instead.
func tryAcquire(p *pool.Pool, info *pool.PickInfo) (b *pool.Backend, got bool) {
	l := &p.Limit
	b = p.Pick(info)
	if b == nil {
		return nil, false
	}
	// Requests already queued go first: a newcomer does not barge in.
	if l.Queued() == 0 && l.TryAcquire(b) {
		return b, true
	}
	if l.Queued() == 0 {
		for _, c := range p.Candidates() {
			if c != b && c.Eligible() && !info.Tried(c) && l.TryAcquire(c) {
				return c, true
			}
		}
	}
	return b, false
}
