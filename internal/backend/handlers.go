package backend

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

const (
	maxDelay = 5 * time.Minute
	maxBytes = 1 << 30 // 1 GiB
	// maxEchoBody is how much of a request body /echo returns; it still
	// reads and counts the rest.
	maxEchoBody = 1 << 20
)

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusOK, fmt.Sprintf("Hello from %s\n%s %s from %s\n",
		s.nameFor(r), r.Method, r.URL.RequestURI(), r.RemoteAddr))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.down.Load() {
		writeText(w, http.StatusServiceUnavailable, "down")
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// handleHealthSet returns the handler of POST /health/down (down true) or
// POST /health/up; the answer is what GET /health says from now on.
func (s *Server) handleHealthSet(down bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		state := "ok"
		if down {
			state = "down"
		}
		if s.down.Swap(down) != down {
			s.log.Info("health endpoint set", "backend", s.nameFor(r), "health", state)
		}
		writeText(w, http.StatusOK, state)
	}
}

func handleStatus(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("code")
	code, err := strconv.Atoi(raw)
	if err != nil {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("status code %q is not a number\n", raw))
		return
	}
	// 1xx are informational (and 101 needs an upgrade): not a final answer.
	if code < 200 || code > 599 {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("status code %d out of range: want 200-599\n", code))
		return
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	writeText(w, code, fmt.Sprintf("%d %s\n", code, http.StatusText(code)))
}

func handleDelay(w http.ResponseWriter, r *http.Request) {
	d, err := parseDuration(r.PathValue("duration"), maxDelay)
	if err != nil {
		writeText(w, http.StatusBadRequest, "delay: "+err.Error()+"\n")
		return
	}
	if !sleep(r, d) {
		return // the client went away
	}
	writeText(w, http.StatusOK, "delayed "+d.String())
}

func handleBytes(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("n")
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 0 || n > maxBytes {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("bytes: %q: want a number of bytes from 0 to %d\n", raw, maxBytes))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// The buffer holds whole alphabets, so every write starts on an 'a'.
	var buf [26 * 1260]byte
	for i := range buf {
		buf[i] = 'a' + byte(i%26)
	}
	for n > 0 {
		chunk := buf[:min(n, int64(len(buf)))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= int64(len(chunk))
	}
}

// echoReply is what /echo answers.
type echoReply struct {
	Backend          string      `json:"backend"`
	Method           string      `json:"method"`
	URI              string      `json:"uri"` // the request target as received
	Path             string      `json:"path"`
	RawQuery         string      `json:"raw_query"`
	Query            url.Values  `json:"query"`
	Proto            string      `json:"proto"`
	Host             string      `json:"host"`
	RemoteAddr       string      `json:"remote_addr"`
	Headers          http.Header `json:"headers"`
	ContentLength    int64       `json:"content_length"` // -1: unknown (chunked)
	TransferEncoding []string    `json:"transfer_encoding,omitempty"`
	Trailers         http.Header `json:"trailers,omitempty"`
	Body             string      `json:"body"`
	BodyBytes        int64       `json:"body_bytes"`
	BodyTruncated    bool        `json:"body_truncated"`
	BodySHA256       string      `json:"body_sha256"`
}

func (s *Server) handleEcho(w http.ResponseWriter, r *http.Request) {
	head := headWriter{max: maxEchoBody}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(&head, sum), r.Body)
	if err != nil {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("echo: reading the request body after %d bytes: %v\n", n, err))
		return
	}
	q, _ := url.ParseQuery(r.URL.RawQuery) // keep what parses
	reply := echoReply{
		Backend:          s.nameFor(r),
		Method:           r.Method,
		URI:              r.RequestURI,
		Path:             r.URL.Path,
		RawQuery:         r.URL.RawQuery,
		Query:            q,
		Proto:            r.Proto,
		Host:             r.Host,
		RemoteAddr:       r.RemoteAddr,
		Headers:          r.Header,
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
		Body:             head.buf.String(),
		BodyBytes:        n,
		BodyTruncated:    n > int64(head.buf.Len()),
		BodySHA256:       hex.EncodeToString(sum.Sum(nil)),
	}
	if len(r.Trailer) > 0 {
		reply.Trailers = r.Trailer
	}
	writeJSON(w, reply)
}

// headWriter keeps the first max bytes written to it and discards the rest.
type headWriter struct {
	buf bytes.Buffer
	max int
}

func (h *headWriter) Write(p []byte) (int, error) {
	if room := h.max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func handleHeaders(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, struct {
		Host    string      `json:"host"`
		Headers http.Header `json:"headers"`
	}{r.Host, r.Header})
}

// trailerBody is what /trailers sends before its trailers.
var trailerBody = []string{
	"this body is sent in chunks\n",
	"and followed by trailers:\n",
	"X-Trailer-One and X-Checksum (the SHA-256 of this body, in hex)\n",
}

func handleTrailers(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Trailer", "X-Trailer-One, X-Checksum")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	sum := sha256.New()
	for _, part := range trailerBody {
		if _, err := io.WriteString(io.MultiWriter(w, sum), part); err != nil {
			return
		}
		_ = rc.Flush()
	}
	w.Header().Set("X-Trailer-One", "1")
	w.Header().Set("X-Checksum", hex.EncodeToString(sum.Sum(nil)))
}

// parseDuration reads a Go duration ("250ms", "1.5s") or a plain number of
// seconds ("2", "0.5") between 0 and max.
func parseDuration(s string, max time.Duration) (time.Duration, error) {
	var d time.Duration
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || secs < 0 || secs > max.Seconds() {
			return 0, fmt.Errorf("%q out of range: want 0 to %v", s, max)
		}
		d = time.Duration(secs * float64(time.Second))
	} else {
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q: want a Go duration (250ms, 1.5s) or seconds (2)", s)
		}
	}
	if d < 0 || d > max {
		return 0, fmt.Errorf("%q out of range: want 0 to %v", s, max)
	}
	return d, nil
}

// sleep waits d, or until r's client goes away; it reports whether the
// whole d passed.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		writeText(w, http.StatusInternalServerError, "encoding the answer failed\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}
