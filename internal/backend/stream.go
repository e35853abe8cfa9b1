package backend

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

const (
	defaultStreamChunks   = 5
	maxStreamChunks       = 10000
	defaultStreamInterval = 100 * time.Millisecond
	defaultSSEInterval    = time.Second
	maxInterval           = 5 * time.Minute
)

// handleStream writes n lines "chunk K\n" (K from 1), flushing each and
// sleeping interval between them.
func handleStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := queryInt(q, "n", defaultStreamChunks, maxStreamChunks)
	if err != nil {
		writeText(w, http.StatusBadRequest, "stream: "+err.Error()+"\n")
		return
	}
	interval, err := queryDuration(q, "interval", defaultStreamInterval)
	if err != nil {
		writeText(w, http.StatusBadRequest, "stream: "+err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	for k := 1; k <= n; k++ {
		if k > 1 && !sleep(r, interval) {
			return
		}
		if _, err := fmt.Fprintf(w, "chunk %d\n", k); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// handleSSE sends server-sent events "id: K\ndata: tick K from NAME\n\n",
// the first at once and then one every interval, until n were sent (n 0:
// no limit), the client leaves or the server shuts down.
func (s *Server) handleSSE(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := queryInt(q, "n", 0, -1)
	if err != nil {
		writeText(w, http.StatusBadRequest, "sse: "+err.Error()+"\n")
		return
	}
	interval, err := queryDuration(q, "interval", defaultSSEInterval)
	if err == nil && interval <= 0 {
		err = fmt.Errorf("interval must be positive")
	}
	if err != nil {
		writeText(w, http.StatusBadRequest, "sse: "+err.Error()+"\n")
		return
	}
	name := s.nameFor(r)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for k := 1; n == 0 || k <= n; k++ {
		if k > 1 {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			case <-s.stopping.Done():
				return
			}
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: tick %d from %s\n\n", k, k, name); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// queryInt reads the query parameter key as an integer from 0 to max (max
// -1: no upper bound); def when it is absent.
func queryInt(q url.Values, key string, def, max int) (int, error) {
	raw := q.Get(key)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < 0 || (max >= 0 && v > max) {
		if max < 0 {
			return 0, fmt.Errorf("%s=%q: want a number from 0", key, raw)
		}
		return 0, fmt.Errorf("%s=%q: want a number from 0 to %d", key, raw, max)
	}
	return v, nil
}

// queryDuration reads the query parameter key as a duration (see
// parseDuration) up to maxInterval; def when it is absent.
func queryDuration(q url.Values, key string, def time.Duration) (time.Duration, error) {
	raw := q.Get(key)
	if raw == "" {
		return def, nil
	}
	d, err := parseDuration(raw, maxInterval)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	return d, nil
}
