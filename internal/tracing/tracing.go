// Package tracing sets up what exports sluice's request spans: the
// OpenTelemetry SDK's tracer provider with a parent-based ratio sampler, a
// batch span processor (spans leave the request path through a bounded
// queue and are sent by a goroutine of the SDK's) and an OTLP exporter over
// gRPC or HTTP. The request path (package proxy) sees only the tracer; a
// reload that changes the tracing block makes a new Provider and shuts the
// old one down once the requests that began on it are over.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-lb/sluice/internal/config"
)

// Counts are the export results of every Provider of a process, so that
// the counters stay monotonic across reloads.
type Counts struct {
	// Exported counts spans the collector accepted; Failed those of
	// batches it refused or that could not reach it.
	Exported, Failed atomic.Uint64
}

// Options are what a Provider needs beside the config.
type Options struct {
	// Logger gets one line when export starts failing and one when it
	// works again. Nil means slog.Default().
	Logger *slog.Logger
	// Version is the service.version resource attribute ("" leaves it out).
	Version string
	// Counts receives the export results; nil counts nothing.
	Counts *Counts
}

// Provider is one tracing setup: a tracer whose spans go to one OTLP
// endpoint. A nil *Provider is tracing off.
type Provider struct {
	cfg    config.Tracing
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// New starts a Provider for cfg. The exporter connects lazily: a collector
// that is down costs failed exports (logged), never a failed start.
func New(cfg config.Tracing, o Options) (*Provider, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Counts == nil {
		o.Counts = &Counts{}
	}
	var exp sdktrace.SpanExporter
	var err error
	ctx := context.Background()
	switch cfg.Protocol {
	case "http":
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(cfg.OTLPEndpoint), otlptracehttp.WithInsecure(),
			otlptracehttp.WithURLPath("/v1/traces"),
			// The environment's HTTP_PROXY does not apply, as to backends.
			otlptracehttp.WithProxy(func(*http.Request) (*url.URL, error) { return nil, nil }))
	default:
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint), otlptracegrpc.WithInsecure())
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %q: %w (check tracing.otlp_endpoint)", cfg.OTLPEndpoint, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if o.Version != "" {
		attrs = append(attrs, attribute.String("service.version", o.Version))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(&reporting{SpanExporter: exp, logger: o.Logger, counts: o.Counts, cfg: cfg}),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Provider{cfg: cfg, tp: tp, tracer: tp.Tracer("github.com/sluice-lb/sluice")}, nil
}

// Tracer returns the tracer requests start their spans with; nil when p is
// nil (tracing off).
func (p *Provider) Tracer() trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tracer
}

// Config returns the tracing block p was made from.
func (p *Provider) Config() config.Tracing { return p.cfg }

// Shutdown exports the spans still queued, until ctx ends, and stops the
// exporter. Spans that end afterwards are dropped. A nil p does nothing.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

// reporting wraps an exporter: it counts each batch's spans by result and
// logs when export starts failing and when it works again (transitions,
// not every batch). It returns nil so that the SDK does not report the
// error a second time through OpenTelemetry's process-wide error handler.
type reporting struct {
	sdktrace.SpanExporter
	logger  *slog.Logger
	counts  *Counts
	cfg     config.Tracing
	failing atomic.Bool
}

func (r *reporting) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := r.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		r.counts.Failed.Add(uint64(len(spans)))
		if !r.failing.Swap(true) {
			r.logger.Warn("tracing: spans could not be exported; they are dropped until the collector answers",
				"endpoint", r.cfg.OTLPEndpoint, "protocol", r.cfg.Protocol, "spans", len(spans), "error", err)
		}
		return nil
	}
	r.counts.Exported.Add(uint64(len(spans)))
	if r.failing.Swap(false) {
		r.logger.Info("tracing: spans are exported again", "endpoint", r.cfg.OTLPEndpoint)
	}
	return nil
}
