package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/events"
)

// sseStream is an open GET /api/v1/events.
type sseStream struct {
	t      *testing.T
	res    *http.Response
	lines  chan string
	cancel context.CancelFunc
}

// openStream opens path (an events URL path) with the headers in hdr and
// fails unless it answers 200 text/event-stream.
func openStream(t *testing.T, base, path string, hdr map[string]string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		res.Body.Close()
		cancel()
		t.Fatalf("GET %s = %d %q, want 200 text/event-stream", path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := &sseStream{t: t, res: res, lines: make(chan string, 64), cancel: cancel}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() {
	s.cancel()
	s.res.Body.Close()
	for range s.lines {
	}
}

// sseMessage is one message of the stream.
type sseMessage struct {
	ID    string
	Event events.Event
}

// next reads until the next message (skipping comments and retry:) and
// returns it; comments seen on the way are returned too. ok is false when
// the stream ended.
func (s *sseStream) next(timeout time.Duration) (m sseMessage, comments []string, ok bool) {
	s.t.Helper()
	var data string
	deadline := time.After(timeout)
	for {
		select {
		case line, open := <-s.lines:
			if !open {
				return m, comments, false
			}
			switch {
			case strings.HasPrefix(line, ":"):
				comments = append(comments, line)
			case strings.HasPrefix(line, "id: "):
				m.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && data != "":
				if err := json.Unmarshal([]byte(data), &m.Event); err != nil {
					s.t.Fatalf("data %q: %v", data, err)
				}
				return m, comments, true
			}
		case <-deadline:
			s.t.Fatalf("no message within %v (comments: %q)", timeout, comments)
		}
	}
}

// kinds reads n messages and returns "ID kind reason" for each.
func (s *sseStream) kinds(n int) []string {
	s.t.Helper()
	var out []string
	for range n {
		m, _, ok := s.next(10 * time.Second)
		if !ok {
			s.t.Fatalf("stream ended after %v", out)
		}
		if m.ID != strconv.FormatUint(m.Event.ID, 10) {
			s.t.Errorf("id: line %q, event id %d", m.ID, m.Event.ID)
		}
		out = append(out, m.ID+" "+string(m.Event.Kind)+" "+m.Event.Reason)
	}
	return out
}

func TestEventsStream(t *testing.T) {
	log := events.New(0, nil)
	done := make(chan struct{})
	srv := start(t, newFake(t), Options{Events: log, Done: done})
	log.Publish(events.BackendDown, "web", "http://127.0.0.1:8081", "one")
	log.Publish(events.Drained, "web", "http://127.0.0.1:8082", "two")
	log.Publish(events.ReloadOK, "", "", "three")

	t.Run("Last-Event-ID replays what followed it", func(t *testing.T) {
		s := openStream(t, srv.URL, "/api/v1/events", map[string]string{"Last-Event-ID": "1"})
		if diff := cmp.Diff([]string{"2 drained two", "3 reload_ok three"}, s.kinds(2)); diff != "" {
			t.Errorf("replay (-want +got):\n%s", diff)
		}
	})
	t.Run("last_event_id query, 0 replays everything kept", func(t *testing.T) {
		s := openStream(t, srv.URL, "/api/v1/events?last_event_id=0", nil)
		if diff := cmp.Diff([]string{"1 backend_down one", "2 drained two", "3 reload_ok three"}, s.kinds(3)); diff != "" {
			t.Errorf("replay (-want +got):\n%s", diff)
		}
	})
	t.Run("an id from before a restart replays everything kept", func(t *testing.T) {
		s := openStream(t, srv.URL, "/api/v1/events", map[string]string{"Last-Event-ID": "900"})
		m, comments, _ := s.next(10 * time.Second)
		if m.Event.ID != 1 || len(comments) == 0 || !strings.Contains(strings.Join(comments, "\n"), "restarted") {
			t.Errorf("first message %+v after comments %q, want event 1 after a comment saying sluice restarted", m, comments)
		}
	})
	t.Run("without an id, new events only, as JSON with every field", func(t *testing.T) {
		s := openStream(t, srv.URL, "/api/v1/events", nil)
		e := log.Publish(events.Ejected, "web", "http://127.0.0.1:8081", "5 consecutive failed requests")
		m, _, ok := s.next(10 * time.Second)
		if !ok {
			t.Fatal("stream ended")
		}
		if diff := cmp.Diff(e, m.Event); diff != "" {
			t.Errorf("event (-published +received):\n%s", diff)
		}
	})
	t.Run("every event has the contract's six fields, a reload's too", func(t *testing.T) {
		s := openStream(t, srv.URL, "/api/v1/events", map[string]string{"Last-Event-ID": "2"})
		for line := range s.lines {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var fields map[string]any
			if err := json.Unmarshal([]byte(data), &fields); err != nil {
				t.Fatalf("data %q: %v", data, err)
			}
			var keys []string
			for k := range fields {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if diff := cmp.Diff([]string{"backend", "id", "kind", "pool", "reason", "time"}, keys); diff != "" {
				t.Errorf("event %s: fields (-want +got):\n%s", data, diff)
			}
			if fields["pool"] != "" || fields["backend"] != "" {
				t.Errorf("reload event %s: want pool and backend empty", data)
			}
			return
		}
		t.Fatal("stream ended before the reload event")
	})
	t.Run("bad ids are a 400 that says what to send", func(t *testing.T) {
		for _, q := range []struct{ path, hdr string }{{"/api/v1/events", "x"}, {"/api/v1/events?last_event_id=-1", ""}} {
			hdr := map[string]string{}
			if q.hdr != "" {
				hdr["Last-Event-ID"] = q.hdr
			}
			got := call(t, srv, "GET", q.path, "", hdr)
			msg, _ := decode(t, got).(map[string]any)["error"].(string)
			if got.code != 400 || !strings.Contains(msg, "is not an event id: send the id of the last event received") {
				t.Errorf("GET %s (Last-Event-ID %q) = %d %q, want 400 saying what to send", q.path, q.hdr, got.code, msg)
			}
		}
	})
	t.Run("HEAD answers at once", func(t *testing.T) {
		got := call(t, srv, "HEAD", "/api/v1/events", "", nil)
		if got.code != 200 || got.header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("HEAD = %d %q", got.code, got.header.Get("Content-Type"))
		}
	})
	t.Run("Done ends every stream", func(t *testing.T) {
		s := openStream(t, srv.URL, "/api/v1/events", nil)
		close(done)
		for {
			select {
			case _, open := <-s.lines:
				if !open {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the stream did not end after Done was closed")
			}
		}
	})
}

func TestEventsHeartbeatAndGap(t *testing.T) {
	log := events.New(2, nil) // a ring of 2
	srv := start(t, newFake(t), Options{Events: log, Heartbeat: 20 * time.Millisecond})
	for i := range 4 {
		log.Publish(events.Enabled, "web", "http://127.0.0.1:8081", strconv.Itoa(i+1))
	}
	s := openStream(t, srv.URL, "/api/v1/events", map[string]string{"Last-Event-ID": "1"})
	m, comments, _ := s.next(10 * time.Second)
	if m.Event.ID != 3 || !strings.Contains(strings.Join(comments, "\n"), "events after 1 were missed") {
		t.Errorf("first message %d after comments %q, want 3 after a comment on the missed events", m.Event.ID, comments)
	}
	s.next(10 * time.Second) // 4
	// Nothing new: heartbeats.
	deadline := time.After(10 * time.Second)
	for beats := 0; beats < 2; {
		select {
		case line := <-s.lines:
			if line == ": heartbeat" {
				beats++
			}
		case <-deadline:
			t.Fatal("no heartbeat comments")
		}
	}
}

// The stream is an /api/ GET: the token when one is configured, and the Host
// check without one.
func TestEventsGuard(t *testing.T) {
	log := events.New(0, nil)
	open := start(t, newFake(t), Options{Events: log})
	tok := start(t, newFake(t), Options{Events: log, Token: "s3cret"})
	tests := []struct {
		name     string
		srv      string
		hdr      map[string]string
		wantCode int
	}{
		{"no token configured: foreign Host", "open", map[string]string{"Host": "evil.example:" + port(open)}, 403},
		{"token configured: none sent", "tok", nil, 401},
		{"token configured: wrong", "tok", map[string]string{"Authorization": "Bearer nope"}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := open
			if tt.srv == "tok" {
				srv = tok
			}
			got := call(t, srv, "GET", "/api/v1/events", "", tt.hdr)
			if got.code != tt.wantCode {
				t.Fatalf("GET /api/v1/events = %d %s, want %d", got.code, got.body, tt.wantCode)
			}
			decode(t, got) // JSON
		})
	}
	s := openStream(t, tok.URL, "/api/v1/events?last_event_id=0", map[string]string{"Authorization": "Bearer s3cret"})
	log.Publish(events.ReloadOK, "", "", "with the token")
	if got := s.kinds(1); got[0] != "1 reload_ok with the token" {
		t.Errorf("with the token: %q", got)
	}
}
