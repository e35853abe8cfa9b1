package proxy

import (
	"net/http"
	"strconv"
	"time"
)

// GRPCTimeout parses a grpc-timeout value ("100m", "5S": an integer of at
// most 8 digits and a unit H M S m u n); false when it is malformed.
func GRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// CapGRPCTimeout lowers the grpc-timeout a backend gets to sluice's
// request timeout (limit; 0: none), so that the backend does not work on
// past the point where sluice answers DEADLINE_EXCEEDED.
func CapGRPCTimeout(h http.Header, limit time.Duration) {
	if limit <= 0 {
		return
	}
	if d, ok := GRPCTimeout(h.Get("Grpc-Timeout")); ok && d <= limit {
		return
	}
	h.Set("Grpc-Timeout", strconv.FormatInt(max(1, limit.Milliseconds()), 10)+"m")
}

// GRPCStatus maps a status sluice answers with to a gRPC status code, as
// the gRPC HTTP/2 protocol document maps HTTP statuses: the codecs answer
// a gRPC (or gRPC-Web) call that sluice refuses or could not forward with
// it, in a trailers-only response.
func GRPCStatus(status int) int {
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusMisdirectedRequest:
		return 14 // UNAVAILABLE
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return 4 // DEADLINE_EXCEEDED
	case http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge, http.StatusTooManyRequests:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case 499:
		return 1 // CANCELLED
	}
	return 13 // INTERNAL
}
