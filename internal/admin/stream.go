package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-lb/sluice/internal/events"
)

// DefaultHeartbeat is how often an event stream with no news gets a
// comment line.
const DefaultHeartbeat = 15 * time.Second

// writeWait bounds one write to an event stream: a client that stops
// reading is dropped rather than holding its stream forever.
const writeWait = 30 * time.Second

// streamEvents serves GET /api/v1/events as Server-Sent Events: each
// decision as one "message" whose data is the event's JSON and whose id is
// the event's, so that EventSource resumes with Last-Event-ID after a
// reconnect. The stream starts with the events after Last-Event-ID (the
// header, or the last_event_id query parameter for clients that cannot
// set it: last_event_id=0 replays every event kept) that the ring still
// holds, or with new events only when neither is given. A comment line
// every heartbeat keeps it open through proxies. It ends when the client
// goes, the server shuts down (Done), or a write stalls.
func (h *handler) streamEvents(w http.ResponseWriter, r *http.Request) {
	after, replay, err := lastEventID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Subscribe before reading: an event published in between wakes us.
	wake, cancel := h.events.Subscribe()
	defer cancel()
	last := h.events.Last()
	var note string
	switch {
	case !replay:
		after = last
	case after > last:
		// An id from before a restart (ids start again at 1): everything
		// kept is news.
		note = fmt.Sprintf(": event %d is not from this sluice process (it restarted): replaying every event kept\n\n", after)
		after = 0
	}
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx in front: do not buffer
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	var buf bytes.Buffer
	buf.WriteString("retry: 3000\n: sluice events\n\n")
	buf.WriteString(note)
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	for {
		evs, complete := h.events.Since(after)
		if !complete {
			fmt.Fprintf(&buf, ": events after %d were missed: they are no longer kept\n\n", after)
		}
		for _, e := range evs {
			writeEvent(&buf, e)
			after = e.ID
		}
		if buf.Len() > 0 {
			rc.SetWriteDeadline(time.Now().Add(writeWait)) // ErrNotSupported: no deadline
			_, err := w.Write(buf.Bytes())
			if err == nil {
				err = rc.Flush()
			}
			if err != nil {
				return
			}
			buf.Reset()
		}
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-wake:
		case <-heartbeat.C:
			buf.WriteString(": heartbeat\n\n")
		}
	}
}

// writeEvent writes e as one SSE message.
func writeEvent(buf *bytes.Buffer, e events.Event) {
	data, err := json.Marshal(e)
	if err != nil {
		return // an Event always marshals
	}
	fmt.Fprintf(buf, "id: %d\ndata: %s\n\n", e.ID, data)
}

// lastEventID reads Last-Event-ID, or the last_event_id query parameter;
// replay is false when neither is given.
func lastEventID(r *http.Request) (id uint64, replay bool, err error) {
	v, name := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if v == "" {
		v, name = r.URL.Query().Get("last_event_id"), "last_event_id"
	}
	if v == "" {
		return 0, false, nil
	}
	id, err = strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, errors.New(name + " " + strconv.Quote(v) +
			" is not an event id: send the id of the last event received (0 for every event kept), or leave it out for new events only")
	}
	return id, true, nil
}
