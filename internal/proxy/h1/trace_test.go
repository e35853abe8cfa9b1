package h1

import (
	"context"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// countingExporter counts the spans the batch processor hands it and
// drops them: the benchmark measures the request path, not a collector.
type countingExporter struct {
	mu sync.Mutex
	n  int
}

func (e *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	e.n += len(spans)
	e.mu.Unlock()
	return nil
}

func (e *countingExporter) Shutdown(context.Context) error { return nil }

// BenchmarkEngineProxyTracing is BenchmarkEngineProxy (and, under std,
// BenchmarkStdProxy) with tracing off, on with every request sampled
// (sample_ratio 1, each request a new trace), and on with none sampled
// (sample_ratio 0): the tracer is the OpenTelemetry SDK's with a batch
// span processor, as sluice runs it, in front of an exporter that drops
// the spans. The difference to "off" is what tracing costs per request.
func BenchmarkEngineProxyTracing(b *testing.B) {
	for _, codec := range []string{"h1", "std"} {
		for _, mode := range []struct {
			name  string
			ratio float64 // < 0: tracing off
		}{{"off", -1}, {"sampled", 1}, {"unsampled", 0}} {
			b.Run(codec+"/"+mode.name, func(b *testing.B) {
				s := defaultSetup()
				exp := &countingExporter{}
				if mode.ratio >= 0 {
					tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
						sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(mode.ratio))))
					b.Cleanup(func() { tp.Shutdown(context.Background()) })
					s.Tracer = tp.Tracer("bench")
				}
				s.WithStd = codec == "std"
				rb := benchBackend(b, benchResponse)
				env := startEngine(b, s, rb.URL)
				addr := env.addr
				if codec == "std" {
					addr = strings.TrimPrefix(env.stdURL, "http://")
				}
				runBenchClient(b, newBenchClientTLS(b, addr, benchRequest, overTLS && codec != "std"))
			})
		}
	}
}

// TestTracingOffAllocatesNothing: with tracing off (and the access log
// off), a proxied request through the engine allocates nothing, so the
// tracing hooks in the core cost a nil check. Under the race detector a
// pooled buffer is sometimes made anew (see raceEnabled), so there the
// bound is 2 per request: tracing on costs some 20.
func TestTracingOffAllocatesNothing(t *testing.T) {
	rb := benchBackend(t, benchResponse)
	env := startEngine(t, defaultSetup(), rb.URL)
	c := newBenchClient(t, env.addr, benchRequest)
	for range 200 {
		if err := c.roundTrip(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		if err := c.roundTrip(); err != nil {
			t.Fatal(err)
		}
	})
	want := 0.0
	if raceEnabled {
		want = 2
	}
	if overTLS {
		// crypto/tls's own: a reader (readFromUntil) for each read of a
		// socket that lacks a whole record, on the client (the response)
		// and on the engine (the request, and the read that finds the
		// socket empty).
		want += 3
		if raceEnabled {
			want += 2 // crypto/tls's pooled buffers, made anew now and then
		}
	}
	if allocs > want {
		t.Errorf("%v allocations per proxied request with tracing off, want at most %v", allocs, want)
	}
}
