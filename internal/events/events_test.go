package events

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

func TestRingAndSince(t *testing.T) {
	var buf bytes.Buffer
	l := New(3, slog.New(slog.NewTextHandler(&buf, nil)))
	if evs, ok := l.Since(0); len(evs) != 0 || !ok {
		t.Fatalf("empty log: %v %v", evs, ok)
	}
	for i, k := range []Kind{BackendDown, BackendUp, Drained, Ejected} {
		if e := l.Publish(k, "web", "http://a", "r"); e.ID != uint64(i+1) {
			t.Fatalf("id %d, want %d", e.ID, i+1)
		}
	}
	evs, ok := l.Since(0)
	if ok || len(evs) != 3 || evs[0].ID != 2 || evs[2].Kind != Ejected {
		t.Fatalf("Since(0) after 4 in a ring of 3: %+v complete=%v", evs, ok)
	}
	evs, ok = l.Since(2)
	if !ok || len(evs) != 2 || evs[0].ID != 3 {
		t.Fatalf("Since(2): %+v complete=%v", evs, ok)
	}
	if evs, ok := l.Since(4); len(evs) != 0 || !ok {
		t.Fatalf("Since(last): %v %v", evs, ok)
	}
	if n := strings.Count(buf.String(), "msg=event"); n != 4 {
		t.Fatalf("%d log lines, want one per event:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "level=WARN msg=event kind=backend_down pool=web backend=http://a reason=r") {
		t.Fatalf("log line: %s", buf.String())
	}
}

func TestSubscribeWakes(t *testing.T) {
	l := New(0, nil)
	wake, cancel := l.Subscribe()
	l.Publish(ReloadOK, "", "", "1 pool changed")
	l.Publish(ReloadOK, "", "", "again")
	<-wake // coalesced: one wake-up for both
	if evs, _ := l.Since(0); len(evs) != 2 {
		t.Fatalf("got %d events", len(evs))
	}
	cancel()
	l.Publish(ReloadOK, "", "", "after cancel")
	select {
	case <-wake:
		t.Fatal("woken after cancel")
	default:
	}
}

func TestNilLog(t *testing.T) {
	var l *Log
	l.Publish(Added, "p", "b", "")
	if evs, ok := l.Since(0); evs != nil || !ok || l.Last() != 0 {
		t.Fatal("nil log holds events")
	}
	_, cancel := l.Subscribe()
	cancel()
}

// A subscriber woken by a backend's event finds the event's reason on the
// backend already (the admin API shows it with the state the event
// announced).
func TestBackendReasonBeforeSubscribersSeeIt(t *testing.T) {
	// The event's log line is written after subscribers are woken: a slow
	// one (a busy stderr) gives them time to look.
	l := New(4096, slog.New(slowHandler{slog.DiscardHandler}))
	u, _ := url.Parse("http://127.0.0.1:1")
	b := pool.NewBackend("http://127.0.0.1:1", u, 1)
	wake, cancel := l.Subscribe()
	defer cancel()
	const n = 200
	go func() {
		for i := 1; i <= n; i++ {
			l.Backend(BackendDown, "web", b, strconv.Itoa(i))
		}
	}()
	var last uint64
	for seen := 0; seen < n; {
		select {
		case <-wake:
		case <-time.After(10 * time.Second):
			t.Fatalf("woken for %d events of %d", seen, n)
		}
		evs, _ := l.Since(last)
		for _, e := range evs {
			last = e.ID
			seen++
			want, _ := strconv.Atoi(e.Reason)
			if got, _ := strconv.Atoi(b.Reason().Text); got < want {
				t.Fatalf("woken for event %d, the backend's reason is still %d's", want, got)
			}
		}
	}
}

// slowHandler takes its time over each log line.
type slowHandler struct{ slog.Handler }

func (slowHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h slowHandler) Handle(ctx context.Context, r slog.Record) error {
	time.Sleep(200 * time.Microsecond)
	return h.Handler.Handle(ctx, r)
}
