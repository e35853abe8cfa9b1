package pool

import (
	"sync/atomic"
	"time"
)

// DurationBuckets are the upper bounds, in seconds, of every duration
// histogram (requests, queue waits).
var DurationBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Histogram is a lock-free histogram of durations over DurationBuckets,
// keeping the latest exemplar (a traced request's trace id) of each bucket.
// The request path only adds to atomics; Observe never allocates. The zero
// value is ready.
type Histogram struct {
	buckets   [len(DurationBuckets) + 1]atomic.Uint64
	sumNs     atomic.Uint64
	exemplars [len(DurationBuckets) + 1]atomic.Pointer[Exemplar]
}

// Exemplar is one traced observation: its trace id, value and time.
type Exemplar struct {
	TraceID [16]byte
	Value   time.Duration
	At      time.Time
}

// bucket returns the index of the bucket d falls in.
func bucket(d time.Duration) int {
	sec := d.Seconds()
	i := 0
	for i < len(DurationBuckets) && sec > DurationBuckets[i] {
		i++
	}
	return i
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	h.buckets[bucket(d)].Add(1)
	h.sumNs.Add(uint64(d))
}

// Exemplify makes e the exemplar of the bucket e.Value falls in (call it
// beside Observe, for a sampled trace only: it allocates nothing itself,
// but e does).
func (h *Histogram) Exemplify(e *Exemplar) {
	h.exemplars[bucket(e.Value)].Store(e)
}

// Snapshot returns the cumulative bucket counts (by DurationBuckets), the
// total count and the sum of durations in seconds.
func (h *Histogram) Snapshot() (cumulative []uint64, count uint64, sum float64) {
	cumulative = make([]uint64, len(DurationBuckets))
	var acc uint64
	for i := range DurationBuckets {
		acc += h.buckets[i].Load()
		cumulative[i] = acc
	}
	count = acc + h.buckets[len(DurationBuckets)].Load()
	return cumulative, count, time.Duration(h.sumNs.Load()).Seconds()
}

// Exemplars returns the latest exemplar of each bucket that has one.
func (h *Histogram) Exemplars() []*Exemplar {
	var out []*Exemplar
	for i := range h.exemplars {
		if e := h.exemplars[i].Load(); e != nil {
			out = append(out, e)
		}
	}
	return out
}
