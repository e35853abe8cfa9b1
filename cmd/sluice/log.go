package main

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"github.com/sluice-lb/sluice/internal/config"
)

// newLogger returns the process log the config asks for. When w is the
// stream systemd's journal reads (JOURNAL_STREAM names it), lines carry
// their syslog priority as a "<N>" prefix, which journald turns into the
// entry's PRIORITY (so `journalctl -p warning` works), and the text format
// leaves out time=, which the journal records already.
func newLogger(c config.Log, w io.Writer, journal bool) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	var pw *priorityWriter
	if journal {
		pw = &priorityWriter{w: w}
		w = pw
		if c.Format != "json" {
			opts.ReplaceAttr = dropTime
		}
	}
	var h slog.Handler
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	if pw != nil {
		h = priorityHandler{h, pw}
	}
	return slog.New(h)
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// priorityWriter writes each record with the "<N>" prefix of its level.
// prefix is set by priorityHandler, which holds mu around the one Write
// slog's handlers make per record.
type priorityWriter struct {
	mu     sync.Mutex // held from setting prefix to the end of the write
	w      io.Writer
	prefix string
}

func (p *priorityWriter) Write(b []byte) (int, error) {
	buf := make([]byte, 0, len(p.prefix)+len(b))
	buf = append(append(buf, p.prefix...), b...)
	if _, err := p.w.Write(buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// priorityHandler sets the writer's prefix from each record's level.
type priorityHandler struct {
	slog.Handler
	w *priorityWriter
}

func (h priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prefix = syslogPriority(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h priorityHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return priorityHandler{h.Handler.WithAttrs(as), h.w}
}

func (h priorityHandler) WithGroup(name string) slog.Handler {
	return priorityHandler{h.Handler.WithGroup(name), h.w}
}

// syslogPriority maps a level to sd-daemon(3)'s prefixes.
func syslogPriority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	default:
		return "<7>"
	}
}
