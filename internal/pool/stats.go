package pool

import (
	"math"
	"sync/atomic"
	"time"
)

// MaxListeners is how many listener slots counters keep apart. Listener
// slots are assigned once per listener name and survive reloads.
const MaxListeners = 32

// Stats are lock-free request counters. The request path only adds to them;
// the metrics collector and the admin API read them. The zero value is ready.
type Stats struct {
	// codes[slot] counts responses by status code for one listener slot; it is
	// allocated the first time that listener sends a request here.
	codes [MaxListeners]atomic.Pointer[codeCounts]

	// Requests counts finished requests; Failures those that ended in an
	// error of this backend (refused, reset, timeout, invalid response).
	Requests atomic.Uint64
	Failures atomic.Uint64

	// ChecksPassed and ChecksFailed count active health check results.
	ChecksPassed atomic.Uint64
	ChecksFailed atomic.Uint64
	// Ejections counts times passive health took the backend out.
	Ejections atomic.Uint64

	// BytesIn counts request body bytes read from clients for requests
	// this backend answered; BytesOut response body bytes sent to them.
	BytesIn  atomic.Uint64
	BytesOut atomic.Uint64

	// Duration is the time from request start to the end of the response.
	Duration Histogram

	// Connections counts the client connections a tcp listener relayed
	// to the backend (connected); their bytes count in BytesIn (from
	// clients) and BytesOut (to them) as they move, so a long connection
	// shows while it lasts.
	Connections atomic.Uint64

	// ewmaNs is an exponentially weighted moving average of the duration to
	// the response header, in nanoseconds, stored as float64 bits; ewmaAt is
	// the UnixNano time of its last update (0: never). The two are separate
	// atomics: a reader may pair a value with the time of the update just
	// before or after it, which only shifts its age by that interval.
	ewmaNs atomic.Uint64
	ewmaAt atomic.Int64
}

// LatencyDecay is the time constant τ with which the latency average ages:
// an average last updated Δt ago keeps exp(-Δt/τ) of its weight. A latency-aware
// policy decays it further at read time, so a backend that was slow once and
// then got no traffic is probed again instead of being starved.
const LatencyDecay = 10 * time.Second

type codeCounts [500]atomic.Uint64 // index: status - 100

// Observe records one finished request: the listener slot it came in on, the
// status the client got, and how long it took.
func (s *Stats) Observe(slot int, status int, d time.Duration) {
	s.Requests.Add(1)
	if slot >= 0 && slot < MaxListeners && status >= 100 && status < 600 {
		c := s.codes[slot].Load()
		if c == nil {
			c = new(codeCounts)
			if !s.codes[slot].CompareAndSwap(nil, c) {
				c = s.codes[slot].Load()
			}
		}
		c[status-100].Add(1)
	}
	s.Duration.Observe(d)
}

// ObserveLatency folds one time-to-response-header into the moving average.
// Back to back, a sample has weight 0.2; the previous average's weight 0.8
// shrinks by exp(-Δt/LatencyDecay) with the time since its last update, so a
// sample after a long silence replaces a stale average rather than being
// averaged with it.
func (s *Stats) ObserveLatency(d time.Duration) {
	const alpha = 0.2
	now := time.Now().UnixNano()
	for {
		old := s.ewmaNs.Load()
		prev := math.Float64frombits(old)
		next := float64(d)
		if at := s.ewmaAt.Load(); at != 0 {
			keep := 1 - alpha
			if dt := now - at; dt > 0 {
				keep *= math.Exp(-float64(dt) / float64(LatencyDecay))
			}
			next += keep * (prev - next)
		}
		if s.ewmaNs.CompareAndSwap(old, math.Float64bits(next)) {
			s.ewmaAt.Store(now)
			return
		}
	}
}

// Latency returns the moving average of the time to response header.
func (s *Stats) Latency() time.Duration {
	return time.Duration(math.Float64frombits(s.ewmaNs.Load()))
}

// LatencyAt returns the moving average of the time to response header and
// when it was last updated (the zero time if never).
func (s *Stats) LatencyAt() (avg time.Duration, updated time.Time) {
	avg = time.Duration(math.Float64frombits(s.ewmaNs.Load()))
	if at := s.ewmaAt.Load(); at != 0 {
		updated = time.Unix(0, at)
	}
	return avg, updated
}

// EachCode calls fn for every (listener slot, status) with a non-zero count.
func (s *Stats) EachCode(fn func(slot, status int, n uint64)) {
	for slot := range s.codes {
		c := s.codes[slot].Load()
		if c == nil {
			continue
		}
		for i := range c {
			if n := c[i].Load(); n != 0 {
				fn(slot, i+100, n)
			}
		}
	}
}

// CountStatus returns how many responses had a status in [lo, hi], over
// every listener.
func (s *Stats) CountStatus(lo, hi int) uint64 {
	var n uint64
	s.EachCode(func(_, status int, c uint64) {
		if status >= lo && status <= hi {
			n += c
		}
	})
	return n
}

// Histogram returns the cumulative bucket counts of Duration (by
// DurationBuckets), the total count and the sum of durations in seconds.
func (s *Stats) Histogram() (cumulative []uint64, count uint64, sum float64) {
	return s.Duration.Snapshot()
}
