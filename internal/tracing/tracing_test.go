package tracing

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sluice-lb/sluice/internal/config"
)

// flaky fails the exports it is told to.
type flaky struct{ fail []bool }

func (f *flaky) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	fail := f.fail[0]
	f.fail = f.fail[1:]
	if fail {
		return errors.New("collector unreachable")
	}
	return nil
}

func (f *flaky) Shutdown(context.Context) error { return nil }

// TestReportingLogsTransitions: export failures are counted by span and
// logged once when they start and once when export works again, and the
// SDK never sees the error (so its process-wide handler stays quiet).
func TestReportingLogsTransitions(t *testing.T) {
	var log bytes.Buffer
	counts := &Counts{}
	r := &reporting{SpanExporter: &flaky{fail: []bool{false, true, true, true, false, false}},
		logger: slog.New(slog.NewTextHandler(&log, nil)), counts: counts,
		cfg: config.Tracing{OTLPEndpoint: "127.0.0.1:4317", Protocol: "grpc"}}
	batch := make([]sdktrace.ReadOnlySpan, 3)
	for i := range 6 {
		if err := r.ExportSpans(context.Background(), batch); err != nil {
			t.Fatalf("export %d returned %v, want nil (reported here, not to the SDK)", i, err)
		}
	}
	if e, f := counts.Exported.Load(), counts.Failed.Load(); e != 9 || f != 9 {
		t.Errorf("counted %d exported, %d failed; want 9 and 9", e, f)
	}
	out := log.String()
	if n := strings.Count(out, "could not be exported"); n != 1 {
		t.Errorf("%d failure lines, want 1 for three failures in a row:\n%s", n, out)
	}
	if n := strings.Count(out, "exported again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, out)
	}
}

// TestProvider: New makes a tracer for either protocol, a nil Provider is
// tracing off, and Shutdown returns without a collector to talk to.
func TestProvider(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		p, err := New(config.Tracing{OTLPEndpoint: "127.0.0.1:1", Protocol: protocol, SampleRatio: 1, ServiceName: "t"}, Options{})
		if err != nil {
			t.Fatalf("%s: New: %v", protocol, err)
		}
		if p.Tracer() == nil || p.Config().Protocol != protocol {
			t.Errorf("%s: tracer %v, config %+v", protocol, p.Tracer(), p.Config())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		p.Shutdown(ctx) // nothing queued: returns at once
		cancel()
	}
	var off *Provider
	if off.Tracer() != nil || off.Shutdown(context.Background()) != nil {
		t.Errorf("a nil Provider is not tracing off")
	}
}
