package h1

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestShutdownServesTLSReadAhead: two pipelined requests, each in its
// own TLS record, reach the loop in one segment. crypto/tls reads both
// records but returns only the first; when Shutdown begins during the first
// request, the second, sent in good faith, is served (the loop pulls what
// crypto/tls read ahead before it decides the connection is done), on the
// loop and on the goroutine engine (pullTLS).
func TestShutdownServesTLSReadAhead(t *testing.T) {
	for _, onLoops := range []bool{true, false} {
		t.Run(map[bool]string{true: "loop", false: "goroutine"}[onLoops], func(t *testing.T) {
			be, gate := slowFirstBackend(t)
			s := defaultSetup()
			s.TLS, s.OnLoops = true, onLoops
			env := startEngine(t, s, be.URL)

			raw, held, tc := dialHeld(t, env.addr, true)
			time.Sleep(50 * time.Millisecond) // the engine took it (onto its loop)
			held.hold(true)
			io.WriteString(tc, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
			io.WriteString(tc, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			both := held.take()
			held.hold(false)
			if _, err := raw.Write(both); err != nil { // two records, one write
				t.Fatal(err)
			}
			br := bufio.NewReader(tc)
			c := &testClient{tb: t, nc: tc, br: br}
			if head := parseHead(t, c.rawHead(), "GET"); head.StatusCode != 200 || head.Close {
				t.Fatalf("head of the first response: %d, close %v", head.StatusCode, head.Close)
			}
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				shut <- env.engine.Shutdown(ctx)
			}()
			waitFor(t, "Shutdown to begin", env.engine.shutting.Load)
			close(gate)
			first := make([]byte, 10)
			if _, err := io.ReadFull(br, first); err != nil || string(first) != "first-done" {
				t.Fatalf("body of the first response: %q, %v", first, err)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Errorf("the second pipelined request (its own record, read by crypto/tls with the first) was dropped: %v", err)
			} else {
				b, _ := io.ReadAll(resp.Body)
				t.Logf("second: %d %q", resp.StatusCode, b)
			}
			recv(t, shut, "Shutdown to return")
		})
	}
}
