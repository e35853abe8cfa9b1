package gcfloor

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		name              string
		floor, live, root uint64
		want              int
	}{
		// The runtime's minimum (4 MiB × GOGC/100) reaches the floor first.
		{"nothing live", 32 * mib, 0, 0, 800},
		{"a small heap", 32 * mib, 1 * mib, 1 * mib, 800},
		// live + (live+roots)×p/100 = floor: 4 + 5×5.6 = 32.
		{"the goal reaches the floor", 32 * mib, 4 * mib, 1 * mib, 560},
		{"GOGC=100 gets there anyway", 32 * mib, 15 * mib, 2 * mib, 100},
		{"above the floor", 32 * mib, 40 * mib, 1 * mib, 100},
		{"no floor", 0, 3 * mib, 1 * mib, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Percent(c.floor, c.live, c.root)
			if got != c.want {
				t.Fatalf("Percent(%d MiB, %d MiB, %d MiB) = %d, want %d", c.floor/mib, c.live/mib, c.root/mib, got, c.want)
			}
			// The goal the runtime would set reaches the floor and, when
			// GOGC is raised, not much more.
			goal := max(c.live+(c.live+c.root)*uint64(got)/100, heapMinimum*uint64(got)/100)
			if goal < c.floor {
				t.Errorf("goal %d MiB at GOGC=%d, below the floor", goal/mib, got)
			}
			if got > 100 && goal > c.floor+c.floor/20 {
				t.Errorf("goal %.1f MiB at GOGC=%d, over the floor of %d MiB", float64(goal)/mib, got, c.floor/mib)
			}
		})
	}
}

func readUint(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestRunRaisesAndRestores: with a floor far above this test's live heap,
// Run raises GOGC after a collection, the runtime's heap goal lands on the
// floor (not above it by more than a tenth), and GOGC is 100 again once
// Run's context ends.
func TestRunRaisesAndRestores(t *testing.T) {
	if !Enabled() {
		t.Skip("gcfloor: GOGC is set in the environment, which Run leaves alone")
	}
	const floor = 256 * mib
	if readUint("/gc/gomemlimit:bytes") < 2*floor {
		t.Skip("gcfloor: GOMEMLIMIT is below the test's floor")
	}
	debug.SetGCPercent(100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, floor, time.Millisecond, discard())
	}()
	defer func() {
		cancel()
		<-done
		debug.SetGCPercent(100)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for readUint("/gc/gogc:percent") <= 100 {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d 5 s after Run started", readUint("/gc/gogc:percent"))
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if goal := readUint("/gc/heap/goal:bytes"); goal < floor || goal > floor+floor/10 {
		t.Errorf("GOGC=%d, and the heap goal is %.1f MiB; want the floor, %d MiB (up to a tenth more)",
			readUint("/gc/gogc:percent"), float64(goal)/mib, floor/mib)
	}
	cancel()
	<-done
	if got := readUint("/gc/gogc:percent"); got != 100 {
		t.Errorf("GOGC %d after Run ended, want 100 again", got)
	}
}

// TestRunLeavesAChosenGOGC: a GOGC other than 100 when Run starts (the
// program set it) stays as it is.
func TestRunLeavesAChosenGOGC(t *testing.T) {
	debug.SetGCPercent(150)
	defer debug.SetGCPercent(100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, 256*mib, time.Millisecond, discard())
	}()
	for range 5 {
		runtime.GC()
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	<-done
	if got := readUint("/gc/gogc:percent"); got != 150 {
		t.Fatalf("GOGC %d after Run, want the 150 set before it", got)
	}
}

func TestEnabledRespectsGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	if Enabled() {
		t.Fatal("Enabled with GOGC set in the environment")
	}
	t.Setenv("GOGC", "")
	if !Enabled() {
		t.Fatal("not Enabled with GOGC empty")
	}
}
