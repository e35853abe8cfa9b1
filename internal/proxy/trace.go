package proxy

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Trace is a request's span and the W3C trace context its backends get
// instead of the client's. The zero value is tracing off: every method is
// then a nil check, and the request path allocates nothing for tracing.
type Trace struct {
	span          trace.Span // nil: off
	parent, state string     // traceparent and tracestate sent to backends
}

// w3c reads and writes traceparent and tracestate (the W3C Trace Context).
var w3c propagation.TraceContext

// StartTrace begins r's span when the listener traces (Tracer set): a
// child of the client's traceparent (in h) when it is valid, else the root
// of a new trace, sampled as the tracer's sampler decides. It reads
// r.Start, r.Method, r.Host, r.Path and r.Version, so a codec fills those
// first (see Verbose).
func (l *Listener) StartTrace(r *Record, h Fields) {
	if l.Tracer == nil {
		return
	}
	ctx := w3c.Extract(context.Background(), inbound{h})
	method := r.Method
	name := "HTTP"
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE":
		name = method
	default:
		method = "_OTHER" // bounded, as OpenTelemetry's HTTP conventions ask
	}
	ctx, span := l.Tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(r.Start))
	r.Trace = Trace{span: span}
	if span.IsRecording() {
		// A span that is not sampled records nothing: its attributes are
		// not even made.
		span.SetAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.path", r.Path),
			attribute.String("server.address", r.Host),
			attribute.String("network.protocol.version", r.Version.number()),
			attribute.String("sluice.listener", l.Name),
		)
	}
	w3c.Inject(ctx, outbound{&r.Trace})
}

// On reports whether the request is traced.
func (t *Trace) On() bool { return t.span != nil }

// Parent is the traceparent sent to backends: sluice's span as the
// parent ("" when tracing is off: the client's field goes on untouched).
func (t *Trace) Parent() string { return t.parent }

// State is the tracestate sent to backends when tracing is on: the
// parent's ("" when there is none).
func (t *Trace) State() string { return t.state }

// Replaces reports whether a client's field called name (any case) is left
// out of the request to backends because sluice sends its own: traceparent
// and tracestate, when tracing is on.
func (t *Trace) Replaces(name string) bool {
	if t.span == nil {
		return false
	}
	switch len(name) {
	case 11:
		return strings.EqualFold(name, "traceparent")
	case 10:
		return strings.EqualFold(name, "tracestate")
	}
	return false
}

// TraceID returns the trace id in hex ("" when tracing is off).
func (t *Trace) TraceID() string {
	if t.span == nil {
		return ""
	}
	return t.span.SpanContext().TraceID().String()
}

// routed notes the route and pool a traced request took.
func (t *Trace) routed(routes interface{ Describe(int) (string, string) }, route int, poolName string) {
	if t.span == nil || !t.span.IsRecording() {
		return
	}
	name, prefix := routes.Describe(route)
	t.span.SetAttributes(attribute.String("sluice.route", name), attribute.String("http.route", prefix),
		attribute.String("sluice.pool", poolName))
}

// retry records, as an event on the span, that attempt try on b failed
// with o and another follows.
func (t *Trace) retry(b *pool.Backend, try int, o Outcome) {
	if t.span == nil || !t.span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Int("sluice.attempt", try),
		attribute.String("sluice.backend", b.Address),
		attribute.String("sluice.outcome", o.Class.String()),
	}
	if o.Class == RetryStatus {
		attrs = append(attrs, attribute.Int("http.response.status_code", o.Status))
	}
	if o.Err != nil {
		attrs = append(attrs, attribute.String("error.message", o.Err.Error()))
	}
	t.span.AddEvent("retry", trace.WithAttributes(attrs...))
}

// end finishes the span of r at end, and, when it is sampled, makes it the
// exemplar of the duration histograms hs.
func (t *Trace) end(r *Record, end time.Time, d time.Duration, hs ...*pool.Histogram) {
	span := t.span
	if !span.IsRecording() {
		span.End()
		return
	}
	res := &r.Result
	attrs := []attribute.KeyValue{
		attribute.Int("http.response.status_code", r.Status),
		attribute.Int("sluice.attempts", res.Tries),
		attribute.Int64("http.request.body.size", r.BytesIn),
		attribute.Int64("http.response.body.size", r.Bytes),
	}
	if b := res.Backend; b != nil {
		attrs = append(attrs, attribute.String("sluice.backend", b.Address))
	}
	if r.Target != nil && res.Class != Done {
		attrs = append(attrs, attribute.String("error.type", res.Class.String()))
	}
	span.SetAttributes(attrs...)
	if r.Status >= 500 {
		// A server span's 4xx is the client's error, not the span's
		// (OpenTelemetry's HTTP conventions).
		msg := StatusText(r.Status)
		if res.Err != nil {
			msg = res.Err.Error()
		}
		span.SetStatus(codes.Error, msg)
	}
	span.End(trace.WithTimestamp(end))
	if sc := span.SpanContext(); sc.IsSampled() {
		e := &pool.Exemplar{TraceID: sc.TraceID(), Value: d, At: end}
		for _, h := range hs {
			if h != nil {
				h.Exemplify(e)
			}
		}
	}
}

// inbound reads the client's trace context fields. Values are copied: the
// HTTP/1.1 engine's alias its read buffer, and a parent's tracestate lives
// on in the span.
type inbound struct{ h Fields }

func (c inbound) Get(key string) string {
	name := "Traceparent"
	if key == "tracestate" {
		name = "Tracestate"
	} else if key != "traceparent" {
		return ""
	}
	// Several tracestate fields are one list (W3C Trace Context §3.3.1).
	v, ok := c.h.Value(name, 0)
	if !ok {
		return ""
	}
	if name == "Tracestate" {
		for i := 1; ; i++ {
			more, ok := c.h.Value(name, i)
			if !ok {
				break
			}
			v += "," + more
		}
	}
	return strings.Clone(v)
}

func (inbound) Set(string, string) {}
func (inbound) Keys() []string     { return []string{"traceparent", "tracestate"} }

// outbound takes the fields the propagator writes for backends.
type outbound struct{ t *Trace }

func (c outbound) Get(string) string { return "" }
func (c outbound) Set(key, value string) {
	switch key {
	case "traceparent":
		c.t.parent = value
	case "tracestate":
		c.t.state = value
	}
}
func (outbound) Keys() []string { return nil }
