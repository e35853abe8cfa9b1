package proxy

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Causes a codec reports in an Outcome, shared so that logs read the same
// whatever the codec.
var (
	ErrHeaderTimeout  = errors.New("no response header within the response_header timeout")
	ErrRequestTimeout = errors.New("request timeout expired")
	ErrBodyTooLarge   = errors.New("request body over max_body_bytes")
)

// StatusText is the short plain-text body of an answer sluice produces
// itself: no internals.
func StatusText(status int) string {
	switch status {
	case http.StatusBadGateway:
		return "bad gateway: the backend failed to answer"
	case http.StatusServiceUnavailable:
		return "service unavailable: no healthy backend"
	case http.StatusGatewayTimeout:
		return "gateway timeout: the backend did not answer in time"
	case http.StatusTooManyRequests:
		return "too many requests: retry after the seconds Retry-After gives"
	case 499:
		return "client closed request"
	}
	return strings.ToLower(http.StatusText(status))
}

// ReasonPhrase is the reason phrase of a status line sluice writes itself.
func ReasonPhrase(status int) string {
	switch status {
	case 413:
		return "Request Entity Too Large"
	case 414:
		return "Request-URI Too Long"
	case 499:
		return "Client Closed Request"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Error"
}

// Idempotent reports whether a request may be sent twice: its method is
// idempotent (RFC 9110 §9.2.2), or its first Idempotency-Key field is not
// empty (the IETF httpapi idempotency-key draft: the backend deduplicates).
func Idempotent(method string, h Fields) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	v, _ := h.Value("Idempotency-Key", 0)
	return v != ""
}

// Failed decides how a codec answers a request that Forward did not
// deliver: the status (StatusFor), whether the client is gone (499: nobody
// to answer), and whether the client connection must close after the
// answer (the client's own error). The cause goes to the debug log, once.
func Failed(res Result, t *Target, logger *slog.Logger, requestID string) (status int, gone, closeConn bool) {
	status = StatusFor(res)
	if status == 499 {
		return status, true, true
	}
	if res.Class != ClientError && res.Err != nil {
		backend := ""
		if res.Backend != nil {
			backend = res.Backend.Address
		}
		logger.Debug("request failed", "pool", t.Pool.Name, "backend", backend, "status", status,
			"tries", res.Tries, "error", res.Err, "request_id", requestID)
	}
	return status, false, res.Class == ClientError
}

// ErrTunnelRefused: a backend accepted an upgrade that sluice will not
// relay, because shutdown began or a reload removed the backend meanwhile.
// The client gets a 503; the backend is not blamed.
var ErrTunnelRefused = errors.New("upgrade refused: sluice is shutting down or the backend left its pool")

// ReplayMax bounds the bytes of a request body a codec keeps so that the
// request can be sent again to another backend.
const ReplayMax = 64 << 10

// ParseRetryAfter reads a Retry-After value in seconds or as an HTTP date
// (0 when absent or unreadable).
func ParseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}
