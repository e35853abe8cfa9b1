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
// lets it fall back to 100 as the live heap grows, so that the goal is
// about max(floor, what GOGC=100 gives). It looks after each collection
// (polling for one), so a collection that finds a much larger live heap
// gets a goal from the raised GOGC until Run's next look: the heap may
// pass that bound by what is allocated meanwhile. An operator who sets
// GOGC has chosen: the process leaves it alone (Enabled).
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
// GOGC (runtime/mgcpacer.go: 4 MiB × GOGC/100; 512 KiB in a build with
// GOEXPERIMENT=heapminimum512kib, where a live heap near zero then gets a
// goal below the floor).
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
	p := (floor*100 + heapMinimum - 1) / heapMinimum
	if base := live + roots; base > 0 {
		// goal = live + base×p/100 = floor
		p = min(p, ((floor-live)*100+base-1)/base)
	}
	return int(max(p, 100))
}

// Run keeps the heap goal at floor or above until ctx ends, looking for a
// new collection every `every` (DefaultEvery when not positive); then it
// sets GOGC back to 100. It does nothing when GOGC is not 100 as it starts
// (set in the environment or by the program): someone has chosen.
// Changes are logged at debug level.
func Run(ctx context.Context, floor uint64, every time.Duration, log *slog.Logger) {
	samples := []metrics.Sample{
		{Name: "/gc/gogc:percent"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}
	metrics.Read(samples)
	if samples[0].Value.Kind() != metrics.KindUint64 || samples[0].Value.Uint64() != 100 {
		log.Debug("gc: GOGC is not 100; the heap goal floor is off")
		return
	}
	samples = samples[1:]
	if every <= 0 {
		every = DefaultEvery
	}
	var cycles uint64
	set := 100 // what GOGC is
	defer func() {
		if set != 100 {
			debug.SetGCPercent(100)
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
			// Up at once, the goal being under the floor; down only by a
			// tenth or more (or to 100), not worth the heap lock for less.
			if p > set || p*10 < set*9 || p == 100 && set != 100 {
				debug.SetGCPercent(p)
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
