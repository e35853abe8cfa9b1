package h1

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestUpstreamBufferFollowsResponses: a backend connection reads with a
// small buffer while its responses fit one and with a large one after a
// response that did not, and every body arrives intact across the
// boundary, for each framing, on one client and one backend connection.
func TestUpstreamBufferFollowsResponses(t *testing.T) {
	skipOnLoops(t, "the goroutine engine's backend buffers (a loop's backend connections read with one size)")
	const fixedHead = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
	rb := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
		kind, size, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		n, _ := strconv.Atoi(size)
		data := randomBytes(n, uint64(n))
		switch kind {
		case "fixed":
			return fmt.Sprintf(fixedHead, n) + string(data), false
		case "chunked":
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", n, data), false
		}
		return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false
	}))
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	// idle reports, under the lock that orders it with the next request,
	// the buffer the idle connection holds and its size class.
	idle := func() (buf int, big bool) {
		h := connsOf(env.target.Upstream).host(env.backend[0])
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.idle) != 1 {
			t.Fatalf("%d idle backend connections, want 1", len(h.idle))
		}
		return cap(h.idle[0].buf), h.idle[0].big
	}
	headLen := len(fmt.Sprintf(fixedHead, 1000)) // the same for 4-digit lengths
	cases := []struct {
		path string
		size int
		big  bool // the next exchange takes a large buffer (fixed lengths only: known from the head)
	}{
		{"fixed", 10, false},
		{"fixed", readBufSize - headLen, false}, // head and body fill the small buffer exactly
		{"fixed", readBufSize - headLen + 1, true},
		{"fixed", 1000, false},
		{"fixed", 12000, true},
		{"fixed", 12000, true},
		{"fixed", upBufSize + 5000, true},
		{"fixed", 10, false},
		{"fixed", 200000, true}, // spliced past the buffer
		{"fixed", 10, false},
		{"chunked", 10, false},
		{"chunked", 5000, false},
		{"chunked", 70000, false},
		{"fixed", 10, false},
		{"chunked", 3000, false},
	}
	for i, tc := range cases {
		resp, body := c.get("/" + tc.path + "/" + strconv.Itoa(tc.size))
		if resp.StatusCode != 200 || !bytes.Equal(body, randomBytes(tc.size, uint64(tc.size))) {
			t.Fatalf("%d: %s %d: status %d, %d bytes, want the backend's %d bytes", i, tc.path, tc.size,
				resp.StatusCode, len(body), tc.size)
		}
		waitFor(t, "the backend connection to be idle", func() bool { return env.idleUpstream(env.backend[0]) == 1 })
		buf, big := idle()
		if buf != 0 {
			t.Errorf("%d: an idle backend connection holds a %d-byte buffer", i, buf)
		}
		if tc.path == "fixed" && big != tc.big {
			t.Errorf("%d: after a %d-byte fixed-length body big = %v, want %v", i, tc.size, big, tc.big)
		}
	}
	if got := rb.conns.Load(); got != 1 {
		t.Errorf("backend connections = %d, want 1", got)
	}
}

// TestUpstreamBufferSizes: the buffer an exchange takes, and growing one
// keeps what it holds.
func TestUpstreamBufferSizes(t *testing.T) {
	var uc upConn
	uc.takeBuf()
	if cap(uc.buf) != readBufSize {
		t.Fatalf("a connection whose last response fit took a %d-byte buffer, want %d", cap(uc.buf), readBufSize)
	}
	uc.r, uc.w = 10, copy(uc.buf, "0123456789abcdef")
	uc.grow()
	if cap(uc.buf) != upBufSize || !uc.big || string(uc.buf[uc.r:uc.w]) != "abcdef" {
		t.Fatalf("grown: %d bytes, big %v, holding %q; want %d, true, %q", cap(uc.buf), uc.big,
			uc.buf[uc.r:uc.w], upBufSize, "abcdef")
	}
	uc.dropBuf()
	uc.takeBuf()
	if cap(uc.buf) != upBufSize {
		t.Fatalf("after a large response: a %d-byte buffer, want %d", cap(uc.buf), upBufSize)
	}
	uc.sized(100)
	uc.dropBuf()
	uc.takeBuf()
	if cap(uc.buf) != readBufSize {
		t.Fatalf("after a small response: a %d-byte buffer, want %d", cap(uc.buf), readBufSize)
	}
	uc.dropBuf()
}
