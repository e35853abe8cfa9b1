package pool

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Minute} {
		h.Observe(d)
	}
	cum, count, sum := h.Snapshot()
	// 0.5ms and 1ms fall in le=0.001; 3ms in le=0.005; 2m past the last bound.
	want := []uint64{2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}
	if diff := cmp.Diff(want, cum); diff != "" {
		t.Errorf("cumulative buckets (-want +got):\n%s", diff)
	}
	if count != 4 {
		t.Errorf("count = %d, want 4", count)
	}
	if wantSum := (2*time.Minute + 4500*time.Microsecond).Seconds(); sum != wantSum {
		t.Errorf("sum = %v, want %v", sum, wantSum)
	}

	if got := h.Exemplars(); len(got) != 0 {
		t.Errorf("exemplars before any: %v, want none", got)
	}
	first := &Exemplar{TraceID: [16]byte{1}, Value: 3 * time.Millisecond}
	second := &Exemplar{TraceID: [16]byte{2}, Value: 4 * time.Millisecond} // same bucket: replaces first
	other := &Exemplar{TraceID: [16]byte{3}, Value: time.Second}
	h.Exemplify(first)
	h.Exemplify(second)
	h.Exemplify(other)
	got := h.Exemplars()
	if len(got) != 2 || got[0] != second || got[1] != other {
		t.Errorf("exemplars = %v, want the latest of each bucket: %v, %v", got, second, other)
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Observe(time.Duration(i) * time.Microsecond)
	}
}
