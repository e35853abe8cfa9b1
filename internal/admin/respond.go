package admin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/sluice-lb/sluice/internal/state"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error": "encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// writeError answers {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// writeErr maps a Runtime error to its status: ErrNotFound 404, ErrConflict
// 409, state.ErrNotPersisted 500, ErrUnavailable 503, anything else 400
// (the request named something invalid).
func writeErr(w http.ResponseWriter, err error) {
	code, msg := http.StatusBadRequest, err.Error()
	switch {
	case errors.Is(err, ErrNotFound):
		code, msg = http.StatusNotFound, msg+": GET /api/v1/pools lists the pools and their backends"
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, state.ErrNotPersisted):
		code, msg = http.StatusInternalServerError, msg+"; fix the problem with admin.state_file (its directory, disk space, permissions) and try again"
	case errors.Is(err, ErrUnavailable):
		code = http.StatusServiceUnavailable
	}
	writeError(w, code, msg)
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(msg))
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// discard is a ResponseWriter that keeps headers and drops the body.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}
