package proxy

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// IsMediaType reports whether the content type ct is t (compared without
// case), alone or followed by a "+format" suffix or parameters:
// "application/grpc+proto" is application/grpc.
func IsMediaType(ct, t string) bool {
	if len(ct) < len(t) || !strings.EqualFold(ct[:len(t)], t) {
		return false
	}
	return len(ct) == len(t) || ct[len(t)] == '+' || ct[len(t)] == ';'
}

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

// GRPCStatus maps a status sluice answers with to the gRPC status code the
// codecs answer a gRPC (or gRPC-Web) call with, in a trailers-only
// response, when sluice refuses it or could not forward it. It follows the
// gRPC document's mapping of HTTP statuses, but for what sluice knows
// better: its own timeouts (504, 408) are DEADLINE_EXCEEDED and its rate
// limits and size limits (429, 413, 431) RESOURCE_EXHAUSTED.
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

// GRPCDeadline bounds ctx by a call's grpc-timeout v counted from start,
// the request's arrival, so that sluice gives up when the client does,
// with cause ErrRequestTimeout; ctx unchanged when v is absent or
// malformed.
func GRPCDeadline(ctx context.Context, start time.Time, v string) (context.Context, context.CancelFunc) {
	d, ok := GRPCTimeout(v)
	if !ok {
		return ctx, func() {}
	}
	return context.WithDeadlineCause(ctx, start.Add(d), ErrRequestTimeout)
}

// GRPCBroken is the status and message of a gRPC call whose backend
// stream (resp's body) broke off with err after its header went out:
// DEADLINE_EXCEEDED when one of sluice's timeouts, or the call's own
// deadline, ended it (read from the context of resp's request), else
// UNAVAILABLE. The client sees that status, not a reset stream it would
// read as INTERNAL.
func GRPCBroken(resp *http.Response, err error) (code int, msg string) {
	ctx := context.Background()
	if resp.Request != nil {
		ctx = resp.Request.Context()
	}
	if c := context.Cause(ctx); c == ErrRequestTimeout || c == ErrHeaderTimeout {
		return 4, GRPCEncode("sluice: " + c.Error())
	}
	if AtDeadline(ctx) {
		return 4, GRPCEncode("sluice: the call's deadline passed; the backend ended it: " + err.Error())
	}
	return 14, GRPCEncode("sluice: the backend's stream broke off: " + err.Error())
}

// GRPCEncode percent-encodes a grpc-message value (gRPC over HTTP/2:
// printable ASCII but '%' as is, the rest as %XX).
func GRPCEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&15])
	}
	return b.String()
}

// AtDeadline reports whether ctx's deadline has passed or is at most
// deadlineSlack away. A gRPC backend enforces the grpc-timeout it was
// sent, from when the call reached it: when it resets the stream within
// that slack of sluice's own deadline (timers fire late on a busy
// machine), the call ended at its deadline, and the client is told
// DEADLINE_EXCEEDED rather than UNAVAILABLE.
func AtDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) <= deadlineSlack
}

const deadlineSlack = 20 * time.Millisecond
