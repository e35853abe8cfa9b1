package proxy

import (
	"context"
	"net/netip"
	"net/url"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/route"
)

// traced returns a listener with one route (X-Api: 1 → pool api) and a
// default pool web, each of one backend, traced by tracer (nil: off).
func traced(tracer *sdktrace.TracerProvider) (*Listener, *pool.Backend) {
	u, _ := url.Parse("http://127.0.0.1:9001")
	b := pool.NewBackend(u.String(), u, 1)
	web := &Target{Pool: pool.New("web", balance.RoundRobin{}, []*pool.Backend{b}), Health: &passive{}}
	api := &Target{Pool: pool.New("api", balance.RoundRobin{}, []*pool.Backend{b}), Health: &passive{}}
	names := map[string]int{"web": 0, "api": 1}
	l := &Listener{Name: "public", Targets: []*Target{web, api}, NoPool: &pool.Stats{}, Stats: &ListenerStats{},
		Routes: route.Compile([]config.Route{{Headers: map[string]string{"X-Api": "1"}, Pool: "api"}}, "web",
			func(n string) int { return names[n] })}
	if tracer != nil {
		l.Tracer = tracer.Tracer("test")
	}
	return l, b
}

// answer200 is an Attempt that the backend answers 200 at once.
type answer200 struct{}

func (answer200) Send(context.Context, *pool.Backend, bool) Outcome {
	return Outcome{Class: Done, Status: 200}
}
func (answer200) Replayable() bool { return true }
func (answer200) Resendable() bool { return true }

// serve runs one request through the core as a codec does: StartTrace,
// Resolve, Forward (one attempt, answered 200 by the backend), Finish. r
// and info are reset, as a codec reuses its per-request state.
func serve(l *Listener, h Fields, r *Record, info *pool.PickInfo) {
	*r, *info = Record{}, pool.PickInfo{}
	r.Start, r.Info, r.Method, r.Path, r.Host = time.Now(), info, "GET", "/items", "example.com"
	l.StartTrace(r, h)
	if t, _ := l.Resolve(context.Background(), r, "example.com", "/items", "", h, netip.MustParseAddr("127.0.0.1")); t != nil {
		r.Result = Forward(context.Background(), r, answer200{})
		r.Status = r.Result.Status
	}
	l.Finish(r)
}

func TestTraceSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	l, b := traced(tp)
	h := headerFields{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate": {"rojo=1", "congo=2"}, "X-Api": {"1"}}
	var r Record
	serve(l, h, &r, &pool.PickInfo{})
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	s := spans[0]
	if got := s.Parent().SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("parent span %s, want the client's", got)
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + s.SpanContext().SpanID().String() + "-01"
	if r.Trace.Parent() != want || r.Trace.State() != "rojo=1,congo=2" {
		t.Errorf("sent to backends: traceparent %q tracestate %q, want %q and the client's list", r.Trace.Parent(), r.Trace.State(), want)
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range map[string]string{"sluice.route": "/ X-Api=1", "http.route": "", "sluice.pool": "api",
		"sluice.backend": b.Address, "sluice.attempts": "1", "http.response.status_code": "200",
		"http.request.method": "GET", "sluice.listener": "public"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	for _, name := range []string{"traceparent", "Tracestate"} {
		if !r.Trace.Replaces(name) {
			t.Errorf("Replaces(%q) = false with tracing on", name)
		}
	}
	// Sampled: the duration histograms hold its trace id as exemplar.
	ex := l.Stats.Duration[1].Exemplars()
	if len(ex) != 1 || ex[0].TraceID != s.SpanContext().TraceID() {
		t.Errorf("listener 2xx exemplars %v, want the span's trace id", ex)
	}
	if ex := b.Stats.Duration.Exemplars(); len(ex) != 1 {
		t.Errorf("backend exemplars %v, want one", ex)
	}

	// Off: nothing is started, nothing replaced.
	off, _ := traced(nil)
	var r2 Record
	serve(off, h, &r2, &pool.PickInfo{})
	if r2.Trace.On() || r2.Trace.Replaces("traceparent") || r2.Trace.TraceID() != "" {
		t.Errorf("tracing off: trace %+v, want the zero value", r2.Trace)
	}
}

// BenchmarkTraceRequest is the core's share of one request (route,
// attempt loop, accounting) with tracing off, on with every request
// sampled (a new trace each, ratio 1), on with none (ratio 0), and on with
// a sampled parent from the client: what tracing costs per request on the
// CPU, apart from the network. The batch span processor exports to an
// exporter that drops the spans.
func BenchmarkTraceRequest(b *testing.B) {
	for _, mode := range []struct {
		name   string
		ratio  float64 // < 0: off
		parent bool
	}{{"off", -1, false}, {"sampled", 1, false}, {"unsampled", 0, false}, {"child-of-client", 0, true}} {
		b.Run(mode.name, func(b *testing.B) {
			var tp *sdktrace.TracerProvider
			if mode.ratio >= 0 {
				tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
					sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(mode.ratio))))
				b.Cleanup(func() { tp.Shutdown(context.Background()) })
			}
			l, _ := traced(tp)
			h := headerFields{}
			if mode.parent {
				h["Traceparent"] = []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
			}
			r, info := new(Record), new(pool.PickInfo)
			b.ReportAllocs()
			for b.Loop() {
				serve(l, h, r, info)
			}
		})
	}
}
