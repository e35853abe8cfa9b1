package server

import (
	"context"
	"reflect"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/tracing"
)

// tracingFlush bounds how long shutting a tracing provider down waits for
// the collector to take the spans still queued.
const tracingFlush = 5 * time.Second

// tracingFor returns the tracing provider for cfg: prev when the tracing
// block did not change, nil when there is none, else a new one.
func (s *Server) tracingFor(cfg *config.Config, prev *tracing.Provider) (*tracing.Provider, error) {
	if cfg.Tracing == nil {
		return nil, nil
	}
	if prev != nil && reflect.DeepEqual(prev.Config(), *cfg.Tracing) {
		return prev, nil
	}
	p, err := tracing.New(*cfg.Tracing, tracing.Options{Logger: s.logger, Version: s.opts.Build.Version, Counts: &s.traceCounts})
	if err != nil {
		return nil, err
	}
	s.logger.Info("tracing on", "endpoint", cfg.Tracing.OTLPEndpoint, "protocol", cfg.Tracing.Protocol,
		"sample_ratio", cfg.Tracing.SampleRatio)
	return p, nil
}

// flushTracing exports what p still queues (bounded by tracingFlush) and
// stops its exporter.
func (s *Server) flushTracing(p *tracing.Provider) {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlush)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		s.logger.Warn("tracing: spans still queued could not all be exported", "error", err)
	}
}

// retireTracing shuts p down once a reload replaced it: after grace, so
// that requests that began on it end their spans first, or at shutdown.
func (s *Server) retireTracing(p *tracing.Provider, grace time.Duration) {
	if p == nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		s.flushTracing(p)
	}()
}

// TraceSpans implements metrics.Source.
func (s *Server) TraceSpans() (exported, failed uint64) {
	return s.traceCounts.Exported.Load(), s.traceCounts.Failed.Load()
}

// listenerStats returns the counters of the listener in slot, made on
// first use and kept across reloads (nil for slot -1: too many listeners).
// Called with s.mu held.
func (s *Server) listenerStats(slot int) *proxy.ListenerStats {
	if slot < 0 || slot >= len(s.lstats) {
		return nil
	}
	if s.lstats[slot] == nil {
		s.lstats[slot] = new(proxy.ListenerStats)
	}
	return s.lstats[slot]
}
