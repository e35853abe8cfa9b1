package backend

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// open starts a GET and returns the response with its body unread; the
// request ends when the returned cancel is called.
func (b *testBackend) open(t *testing.T, path string) (*http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	req, _ := http.NewRequestWithContext(ctx, "GET", b.url+path, nil)
	resp, err := b.client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, cancel
}

func TestStreamSendsEveryChunk(t *testing.T) {
	b := startBackend(t, "b1")
	tests := []struct {
		path string
		want string
	}{
		{"/stream?n=3&interval=1ms", "chunk 1\nchunk 2\nchunk 3\n"},
		{"/stream?interval=0", "chunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n"},
		{"/stream?n=0", ""},
		{"/stream?n=2&interval=0.001", "chunk 1\nchunk 2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := b.get(t, tt.path)
			if resp.StatusCode != 200 || body != tt.want {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, tt.want)
			}
		})
	}
}

// The first chunk must arrive while the handler is still sleeping towards
// the second: with five minutes between chunks, reading it at all proves that
// chunks are flushed one by one. Then the client leaves, and so must the
// handler.
func TestStreamFlushesEachChunk(t *testing.T) {
	b := startBackend(t, "b1")
	resp, cancel := b.open(t, "/stream?n=3&interval=5m")
	defer cancel()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "chunk 1\n" {
		t.Fatalf("first line: got %q, %v; want %q", line, err, "chunk 1\n")
	}
	if got := b.Stats().InFlight; got != 1 {
		t.Errorf("in flight after the first chunk: got %d, want 1 (the stream)", got)
	}
	cancel()
	waitFor(t, "the stream handler returns", func() bool { return b.Stats().InFlight == 0 })
}

func TestSSEEventFormat(t *testing.T) {
	b := startBackend(t, "b1")
	resp, body := b.get(t, "/sse?n=3&interval=1ms")
	want := "id: 1\ndata: tick 1 from b1\n\n" +
		"id: 2\ndata: tick 2 from b1\n\n" +
		"id: 3\ndata: tick 3 from b1\n\n"
	if body != want {
		t.Errorf("body: got %q, want %q", body, want)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type: got %q, want text/event-stream", got)
	}
	if got := resp.Header.Get("X-Backend"); got != "b1" {
		t.Errorf("X-Backend: got %q, want b1", got)
	}
}

// readEvent reads one server-sent event, up to its blank line.
func readEvent(r *bufio.Reader) (string, error) {
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		ev.WriteString(line)
		if err != nil || line == "\n" {
			return ev.String(), err
		}
	}
}

func TestSSEUnlimitedFlushesAndEndsAtShutdown(t *testing.T) {
	b := startBackend(t, "b1")
	resp, cancel := b.open(t, "/sse?interval=5m")
	defer cancel()
	r := bufio.NewReader(resp.Body)
	ev, err := readEvent(r)
	if want := "id: 1\ndata: tick 1 from b1\n\n"; err != nil || ev != want {
		t.Fatalf("first event: got %q, %v; want %q", ev, err, want)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.stop() }()
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) != 0 {
		t.Errorf("after shutdown: got %q, %v; want a clean end of the stream", rest, err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve: got %v, want nil", err)
	}
}
