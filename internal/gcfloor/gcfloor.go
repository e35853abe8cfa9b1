// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor, so that a small live heap does not make the collector
// run tens of times a second.
//
// Go sets the heap goal at the live heap plus GOGC % of the live heap and
// the GC roots (goroutine stacks, globals), and at least 4 MiB. A proxy's
// live heap is small (a few MiB at a few thousand connections), while a
// TLS handshake or an HTTP/2 stream leaves garbage behind: at 2,000
// handshakes a second the default collector ran about 30 cycles a second.
// Each cycle costs CPU of its own, and with one event loop per P its mark
// worker takes a P from a loop, which stalls every connection on that
// loop meanwhile. Measured on 2 CPUs (docs/benchmarks.md, "The
// collector's floor"): with a 32 MiB floor, a fifth less CPU per new TLS
// connection; by hand, h2c's p99 at saturation from 78 ms to 35.
//
// Run raises GOGC as far as it takes for the goal to reach the floor, and
// lets it fall back to 100 as the live heap grows: the heap stays under
// max(floor, what GOGC=100 allows), never more. An operator who sets GOGC
// has chosen: the process leaves it alone (Enabled).
package gcfloor

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultFloor is the heap goal sluice keeps at least (32 MiB).
const DefaultFloor = 32 << 20

// DefaultEvery is how often Run looks for a new collection: ten wake-ups a
// second for an idle process. Until it looks, a collection that found a
// larger live heap keeps the GOGC set for the smaller one, so the heap may
// pass the goal Run would set by what is allocated meanwhile.
const DefaultEvery = 100 * time.Millisecond

// Enabled reports whether the process may tune GOGC: not when the
// environment sets it.
func Enabled() bool { return os.Getenv("GOGC") == "" }

// heapMinimum is the runtime's least heap goal at GOGC=100; it scales with
// GOGC (runtime/mgcpacer.go: 4 MiB × GOGC/100).
const heapMinimum = 4 << 20

// Percent is the GOGC at which the heap goal, for a live heap of live
// bytes and GC roots of roots bytes, is floor: never below 100 (the
// default, where a larger live heap puts the goal above the floor
// anyway). The runtime's goal is the larger of live + roots-and-live ×
// GOGC/100 and its minimum, heapMinimum × GOGC/100: for a live heap near
// zero the minimum is what reaches the floor, so GOGC goes no higher than
// makes the minimum the floor.
func Percent(floor, live, roots uint64) int {
	if live >= floor {
		return 100
	}
	p := floor * 100 / heapMinimum
	if base := live + roots; base > 0 {
		// goal = live + base×p/100 = floor
		p = min(p, ((floor-live)*100+base-1)/base)
	}
	return int(max(p, 100))
}

// Run keeps the heap goal at floor or above until ctx ends, looking after
// each collection (it polls every `every` for one); then it sets GOGC
// back as it found it. Changes are logged at debug level.
func Run(ctx context.Context, floor uint64, every time.Duration, log *slog.Logger) {
	samples := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}
	var cycles uint64
	set := -1 // what Run set last; -1: nothing yet
	orig := -1
	defer func() {
		if orig != -1 {
			debug.SetGCPercent(orig)
		}
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		metrics.Read(samples)
		if n := samples[0].Value.Uint64(); n != cycles {
			cycles = n
			live := samples[1].Value.Uint64()
			p := Percent(floor, live, samples[2].Value.Uint64()+samples[3].Value.Uint64())
			// A change of less than a tenth is not worth the heap lock.
			if set == -1 || p*10 < set*9 || p*10 > set*11 || (p == 100) != (set == 100) {
				old := debug.SetGCPercent(p)
				if orig == -1 {
					orig = old
				}
				set = p
				log.Debug("gc: heap goal floor", "gogc", p, "live_bytes", live, "floor_bytes", floor)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
