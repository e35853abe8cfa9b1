package events

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
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
