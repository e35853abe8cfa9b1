package backend

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// maxPaths bounds the per-path counters so that a scan of random paths
// cannot grow them without limit; requests to further paths are counted
// under otherPaths.
const (
	maxPaths   = 1024
	otherPaths = "(other)"
)

// Stats is a snapshot of a backend's counters. Requests to /stats and
// /stats/reset are not counted, so reading the counters does not change them.
type Stats struct {
	// Backend is the backend's name, as in X-Backend.
	Backend string `json:"backend"`
	// Requests counts every request that reached the backend, whatever its
	// path or outcome.
	Requests int64 `json:"requests"`
	// InFlight is the number of requests being handled now, open
	// WebSockets and streams included.
	InFlight int64 `json:"in_flight"`
	// Paths counts requests by URL path (decoded, as routed). After 1024
	// distinct paths, the rest are counted under "(other)".
	Paths map[string]int64 `json:"paths"`
	// Drops counts connections closed by /drop without an answer.
	Drops int64 `json:"drops"`
	// Resets counts connections reset by /reset.
	Resets int64 `json:"resets"`
	// WebSockets counts WebSocket connections accepted on /ws.
	WebSockets int64 `json:"websockets"`
}

// counters are the live numbers behind Stats. The per-path map is a
// sync.Map of *atomic.Int64 so that counting a known path takes no lock.
type counters struct {
	requests   atomic.Int64
	inFlight   atomic.Int64
	paths      sync.Map // string → *atomic.Int64
	npaths     atomic.Int64
	drops      atomic.Int64
	resets     atomic.Int64
	websockets atomic.Int64
}

// request counts a request for path and marks it in flight; the caller
// decrements inFlight when it is done.
func (c *counters) request(path string) {
	c.requests.Add(1)
	c.inFlight.Add(1)
	if n, ok := c.paths.Load(path); ok {
		n.(*atomic.Int64).Add(1)
		return
	}
	if c.npaths.Load() >= maxPaths {
		path = otherPaths
	}
	n, loaded := c.paths.LoadOrStore(path, new(atomic.Int64))
	if !loaded && path != otherPaths {
		c.npaths.Add(1)
	}
	n.(*atomic.Int64).Add(1)
}

// reset zeroes every counter except inFlight, which describes the present.
func (c *counters) reset() {
	c.requests.Store(0)
	c.paths.Clear()
	c.npaths.Store(0)
	c.drops.Store(0)
	c.resets.Store(0)
	c.websockets.Store(0)
}

// Stats returns a snapshot of the backend's counters. Counters that change
// while it is taken may be read a request apart from one another.
func (s *Server) Stats() Stats {
	st := Stats{
		Backend:    s.Name(),
		Requests:   s.stats.requests.Load(),
		InFlight:   s.stats.inFlight.Load(),
		Paths:      make(map[string]int64),
		Drops:      s.stats.drops.Load(),
		Resets:     s.stats.resets.Load(),
		WebSockets: s.stats.websockets.Load(),
	}
	s.stats.paths.Range(func(k, v any) bool {
		st.Paths[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return st
}

// ResetStats zeroes the counters (all but InFlight), as POST /stats/reset does.
func (s *Server) ResetStats() { s.stats.reset() }

func isStatsPath(path string) bool {
	return path == "/stats" || strings.HasPrefix(path, "/stats/")
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	st := s.Stats()
	st.Backend = s.nameFor(r)
	writeJSON(w, st)
}

func (s *Server) handleStatsReset(w http.ResponseWriter, r *http.Request) {
	s.ResetStats()
	writeText(w, http.StatusOK, "counters reset\n")
}
