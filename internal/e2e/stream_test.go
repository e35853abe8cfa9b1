package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/config"
)

// gatedBackend is an httptest backend whose handler writes a first part,
// flushes, and writes the rest only once the test opens the gate: through a
// proxy that buffers, the client never sees the first part before the gate
// opens, so the test fails instead of passing by luck of timing.
func gatedBackend(t *testing.T, contentType, first, rest string) (url string, open func()) {
	t.Helper()
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, first)
		http.NewResponseController(w).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
			return
		}
		io.WriteString(w, rest)
	}))
	var once bool
	t.Cleanup(func() {
		if !once {
			close(gate)
		}
		srv.Close()
	})
	return srv.URL, func() {
		if !once {
			once = true
			close(gate)
		}
	}
}

func poolAt(name string, urls ...string) config.Pool {
	p := config.Pool{Name: name, Balance: "round_robin"}
	for _, u := range urls {
		p.Backends = append(p.Backends, config.Backend{Address: u})
	}
	return p
}

// readLine reads one line with the body's context bound; it fails the test
// when the line does not come.
func readLine(t *testing.T, br *bufio.Reader, what string) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v (partial %q)", what, err, line)
	}
	return strings.TrimRight(line, "\r\n")
}

func TestFlushedPartsArriveBeforeTheResponseEnds(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, first, rest, wantFirst string
	}{
		{"sse", "text/event-stream", "data: one\n\n", "data: two\n\n", "data: one"},
		{"chunked", "text/plain", "chunk one\n", "chunk two\n", "chunk one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, open := gatedBackend(t, tc.contentType, tc.first, tc.rest)
			s := startSluice(t, oneListener(poolAt("web", url)))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("public")+"/", nil)
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if got := readLine(t, br, "the first part, before the backend sends the rest"); got != tc.wantFirst {
				t.Fatalf("first line %q, want %q", got, tc.wantFirst)
			}
			open()
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("reading the rest: %v", err)
			}
			if want := strings.TrimPrefix(tc.first, tc.wantFirst+"\n") + tc.rest; string(rest) != want {
				t.Fatalf("rest %q, want %q", rest, want)
			}
		})
	}
}

func TestServerSentEventsThroughTheProxy(t *testing.T) {
	b := startBackend(t, "sse")
	s := startSluice(t, oneListener(poolOf("web", b)))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("public")+"/sse?interval=200ms&n=5", nil)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatalf("GET /sse: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, Content-Type %q; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	var events []string
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data:") {
			events = append(events, strings.TrimSpace(strings.TrimPrefix(line, "data:")))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(events), err)
		}
	}
	want := []string{"tick 1 from sse", "tick 2 from sse", "tick 3 from sse", "tick 4 from sse", "tick 5 from sse"}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

func TestChunkedStreamArrivesChunkByChunk(t *testing.T) {
	b := startBackend(t, "stream")
	s := startSluice(t, oneListener(poolOf("web", b)))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("public")+"/stream?n=3&interval=300ms", nil)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatalf("GET /stream: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if first := readLine(t, br, "the first chunk"); first != "chunk 1" {
		t.Fatalf("first chunk %q, want %q", first, "chunk 1")
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading the rest: %v", err)
	}
	if want := "chunk 2\nchunk 3\n"; string(rest) != want {
		t.Fatalf("rest %q, want %q", rest, want)
	}
}

func TestWebSocketEchoThroughTheProxy(t *testing.T) {
	b := startBackend(t, "ws")
	s := startSluice(t, oneListener(poolOf("web", b)))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws://"+s.Addr("public")+"/ws", &websocket.DialOptions{HTTPClient: newClient(t)})
	if err != nil {
		t.Fatalf("dial ws through sluice: %v (response %v)", err, resp)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	for _, m := range []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello through sluice")},
		{websocket.MessageBinary, []byte{0, 1, 2, 0xfe, 0xff}},
		{websocket.MessageBinary, bytes.Repeat([]byte{7}, 100<<10)},
	} {
		if err := conn.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("write %v message: %v", m.typ, err)
		}
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read the echo of a %v message: %v", m.typ, err)
		}
		if typ != m.typ || !bytes.Equal(data, m.data) {
			t.Fatalf("echo: %v of %d bytes, want %v of %d bytes", typ, len(data), m.typ, len(m.data))
		}
	}
	if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestTrailersPassThrough(t *testing.T) {
	b := startBackend(t, "tr")
	s := startSluice(t, oneListener(poolOf("web", b)))
	c := newClient(t)
	direct := get(t, c, b.URL()+"/trailers")
	if len(direct.Trailer) == 0 {
		t.Fatalf("the backend's /trailers sent no trailers (header %v)", direct.Header)
	}
	proxied := get(t, c, s.URL("public")+"/trailers")
	if proxied.Status != 200 {
		t.Fatalf("status %d, want 200", proxied.Status)
	}
	if diff := cmp.Diff(direct.Trailer, proxied.Trailer); diff != "" {
		t.Fatalf("trailers through sluice differ from the backend's (-direct +proxied):\n%s", diff)
	}
	if proxied.Body != direct.Body {
		t.Errorf("body %q, want %q", proxied.Body, direct.Body)
	}
}
