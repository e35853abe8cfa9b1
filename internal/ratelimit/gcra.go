// Package ratelimit decides whether a request is within its rate limit: a
// token bucket per key (burst tokens at most, refilled at rate per per),
// kept as one theoretical arrival time per key (GCRA, the generic cell rate
// algorithm, which is a token bucket stored as a single number).
//
// A Limit counts in its own bounded, lock-free table (see table.go) and,
// when given a shared Store (package redisstore: Redis), asks the store
// first so that every sluice instance of a fleet enforces one limit
// together; while the store cannot be reached it counts alone.
//
// Words: a limit is one rate_limit block of the config (a listener's or a
// route's); a key is what the limit counts by (client IP, a header, a
// cookie, the path, a query parameter); a decision is the answer for one
// request.
package ratelimit

import (
	"fmt"
	"time"
)

// Params are one limit's numbers, as the config gives them.
type Params struct {
	// Rate tokens are added per Per; Burst is the most a bucket holds (0:
	// Rate).
	Rate  int64
	Per   time.Duration
	Burst int64
}

// gcra is Params in the form the algorithm uses, in nanoseconds.
type gcra struct {
	interval  int64 // emission interval T = per/rate: the cost of one request
	tolerance int64 // burst × T: how far ahead of now the arrival time may run
	burst     int64
}

// MinInterval is the shortest emission interval (Per/Rate) a limit may
// have: the shared store counts in microseconds.
const MinInterval = time.Microsecond

// MaxWindow bounds Burst × Per / Rate, the time an empty bucket takes to
// fill, so that arrival times stay far from overflowing.
const MaxWindow = 366 * 24 * time.Hour

// Check reports what is wrong with p, or nil.
func (p Params) Check() error {
	burst := p.burst()
	switch {
	case p.Rate < 1:
		return fmt.Errorf("rate %d is less than 1", p.Rate)
	case p.Per <= 0:
		return fmt.Errorf("per %v is not more than 0", p.Per)
	case burst < 1:
		return fmt.Errorf("burst %d is less than 1", burst)
	case p.Per/time.Duration(p.Rate) < MinInterval:
		return fmt.Errorf("rate %d per %v is more than one per %v", p.Rate, p.Per, MinInterval)
	case float64(burst)*float64(p.Per)/float64(p.Rate) > float64(MaxWindow):
		return fmt.Errorf("burst %d at rate %d per %v takes longer than %v to refill", burst, p.Rate, p.Per, MaxWindow)
	}
	return nil
}

func (p Params) burst() int64 {
	if p.Burst == 0 {
		return p.Rate
	}
	return p.Burst
}

// compile returns p's algorithm form; p must have passed Check.
func (p Params) compile() gcra {
	t := int64(p.Per) / p.Rate
	b := p.burst()
	return gcra{interval: t, tolerance: b * t, burst: b}
}

// Interval is the emission interval Per/Rate: the time one request costs.
func (p Params) Interval() time.Duration { return p.Per / time.Duration(p.Rate) }

// BurstOrRate is Burst, or Rate when Burst is 0.
func (p Params) BurstOrRate() int64 { return p.burst() }

// Window is the time an empty bucket takes to fill again (Burst × Per /
// Rate), the w of the RateLimit-Policy field.
func (p Params) Window() time.Duration { c := p.compile(); return time.Duration(c.tolerance) }

// Decision is the answer for one request.
type Decision struct {
	// Allowed is false when the request is over the limit.
	Allowed bool
	// Remaining is the number of requests the key may still make at once.
	Remaining int64
	// RetryAfter is, for a refused request, how long until one more
	// request is allowed.
	RetryAfter time.Duration
	// Reset is how long until the key's bucket is full again.
	Reset time.Duration
}

// decide applies one request at now to a key whose theoretical arrival
// time is tat (both in nanoseconds on one clock; a tat at or before now is
// a full bucket). It returns the new arrival time to store when the request
// is allowed.
func (g *gcra) decide(tat, now int64) (int64, Decision) {
	if tat < now {
		tat = now
	}
	next := tat + g.interval
	if next-now > g.tolerance {
		return tat, Decision{RetryAfter: time.Duration(next - g.tolerance - now), Reset: time.Duration(tat - now)}
	}
	return next, Decision{Allowed: true, Remaining: (g.tolerance - (next - now)) / g.interval, Reset: time.Duration(next - now)}
}
