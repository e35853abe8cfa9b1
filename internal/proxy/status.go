package proxy

import (
	"errors"
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

// Idempotent reports whether a request with method m may be sent twice
// (RFC 9110 §9.2.2); a request with an Idempotency-Key field is too.
func Idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

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
