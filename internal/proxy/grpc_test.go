package proxy

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestGRPCTimeout(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"100m": 100 * time.Millisecond, "5S": 5 * time.Second, "1H": time.Hour, "2M": 2 * time.Minute,
		"7u": 7 * time.Microsecond, "9n": 9, "99999999m": 99999999 * time.Millisecond,
	} {
		if got, ok := GRPCTimeout(v); !ok || got != want {
			t.Errorf("GRPCTimeout(%q) = %v, %v; want %v", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "m", "100", "100x", "-1S", "123456789S", "1.5S"} {
		if _, ok := GRPCTimeout(v); ok {
			t.Errorf("GRPCTimeout(%q) accepted a malformed value", v)
		}
	}
}

func TestCapGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit time.Duration
		want  string
	}{{"", time.Second, "1000m"}, {"5S", time.Second, "1000m"}, {"200m", time.Second, "200m"}, {"5S", 0, "5S"}, {"junk", time.Second, "1000m"}} {
		h := http.Header{}
		if tc.in != "" {
			h.Set("Grpc-Timeout", tc.in)
		}
		CapGRPCTimeout(h, tc.limit)
		if got := h.Get("Grpc-Timeout"); got != tc.want {
			t.Errorf("grpc-timeout %q under %v: %q, want %q", tc.in, tc.limit, got, tc.want)
		}
	}
}

func TestGRPCDeadlineAndBroken(t *testing.T) {
	start := time.Now().Add(-time.Second)
	ctx, cancel := GRPCDeadline(context.Background(), start, "500m")
	defer cancel()
	<-ctx.Done() // from start: already past
	if code, msg := GRPCBroken(respIn(ctx), errors.New("x")); code != 4 || msg == "" {
		t.Errorf("broken past the deadline: %d %q, want 4 (DEADLINE_EXCEEDED)", code, msg)
	}
	if code, msg := GRPCBroken(&http.Response{}, errors.New("reset\n")); code != 14 || msg != "sluice: the backend's stream broke off: reset%0A" {
		t.Errorf("broken: %d %q, want 14 and the error, encoded", code, msg)
	}
	if c2, _ := GRPCDeadline(context.Background(), start, ""); c2 != context.Background() {
		t.Error("no grpc-timeout: the context changed")
	}
}

func TestGRPCEncode(t *testing.T) {
	if got := GRPCEncode("ok 100% é\n"); got != "ok 100%25 %C3%A9%0A" {
		t.Errorf("GRPCEncode = %q", got)
	}
}

func TestAtDeadline(t *testing.T) {
	if AtDeadline(context.Background()) {
		t.Error("no deadline: at it")
	}
	far, c1 := context.WithTimeout(context.Background(), time.Hour)
	defer c1()
	near, c2 := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer c2()
	if AtDeadline(far) || !AtDeadline(near) {
		t.Errorf("AtDeadline: an hour away %v, 5ms away %v; want false, true", AtDeadline(far), AtDeadline(near))
	}
	if code, _ := GRPCBroken(respIn(near), errors.New("stream reset")); code != 4 {
		t.Errorf("broken 5ms before the deadline: %d, want 4 (DEADLINE_EXCEEDED)", code)
	}
}

func TestIsMediaType(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "Application/GRPC; charset=x": true,
		"application/grpc-web": false, "application/grpcx": false, "application/gr": false, "": false,
	} {
		if got := IsMediaType(ct, "application/grpc"); got != want {
			t.Errorf("IsMediaType(%q, application/grpc) = %v, want %v", ct, got, want)
		}
	}
}

// respIn is a response to a request made with ctx.
func respIn(ctx context.Context) *http.Response {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://backend/", nil)
	return &http.Response{Request: req}
}
