package admin

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/metrics"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// StatsSource is what GET /api/v1/stats reads: the counters /metrics
// exposes, which the server already provides for the metrics collector.
type StatsSource interface {
	Pools() []*pool.Pool
	Listeners() []metrics.Listener
	// Reloads returns the counts of successful and failed reloads and
	// whether the last one succeeded.
	Reloads() (ok, failed uint64, lastOK bool)
	// Addr is the bound address of a listener (nil when it has none).
	Addr(listener string) net.Addr
}

// statsView is GET /api/v1/stats: cumulative counters since start (as
// /metrics has them), in JSON so that the dashboard need not parse the
// Prometheus text format. A client takes rates and windowed quantiles from
// the difference of two answers; a counter that went down was reset (a
// backend removed by a reload takes its counts with it).
type statsView struct {
	// Time is when the counters were read.
	Time time.Time `json:"time"`
	// DurationBuckets are the upper bounds, in seconds, of the cumulative
	// duration bucket counts below (a last, implicit bucket is +Inf).
	DurationBuckets []float64       `json:"duration_buckets"`
	Reloads         reloadsView     `json:"reloads"`
	Listeners       []listenerStats `json:"listeners"`
	Pools           []poolStats     `json:"pools"`
}

type reloadsView struct {
	Success        uint64 `json:"success"`
	Failure        uint64 `json:"failure"`
	LastSuccessful bool   `json:"last_successful"`
}

// classCounts counts responses by status class: "1xx" … "5xx".
type classCounts map[string]uint64

func (c classCounts) add(status int, n uint64) {
	if status >= 100 && status < 600 {
		c[classNames[status/100-1]] += n
	}
}

var classNames = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func newClassCounts() classCounts {
	c := make(classCounts, len(classNames))
	for _, n := range classNames {
		c[n] = 0
	}
	return c
}

type listenerStats struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// Connections is the number of open client connections.
	Connections int64 `json:"connections"`
	// Requests counts the listener's answers by status class, whichever
	// pool (or none) answered (sluice_listener_requests_total).
	Requests classCounts `json:"requests"`
	TLS      bool        `json:"tls"`
}

type poolStats struct {
	Name string `json:"name"`
	// Requests counts the pool's answers by status class, those it gave
	// without a backend (503) included.
	Requests classCounts `json:"requests"`
	// Duration is the pool's request duration histogram: cumulative counts
	// by DurationBuckets, the total count and the sum in seconds.
	Duration  histogramView `json:"duration"`
	InFlight  int64         `json:"in_flight"`
	Queued    int64         `json:"queued"`
	Retries   uint64        `json:"retries"`
	NoBackend uint64        `json:"no_backend"`
}

type histogramView struct {
	Buckets []uint64 `json:"buckets"`
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`
}

func (h *histogramView) add(s *pool.Stats) {
	cum, count, sum := s.Histogram()
	for i, n := range cum {
		h.Buckets[i] += n
	}
	h.Count += count
	h.Sum += sum
}

func (h *handler) serveStats(w http.ResponseWriter, r *http.Request) {
	src := h.statsSrc
	if src == nil {
		writeError(w, http.StatusNotFound, "this server keeps no statistics")
		return
	}
	v := statsView{Time: time.Now().UTC(), DurationBuckets: pool.DurationBuckets[:]}
	ok, failed, lastOK := src.Reloads()
	v.Reloads = reloadsView{Success: ok, Failure: failed, LastSuccessful: lastOK}

	ls := src.Listeners()
	slices.SortFunc(ls, func(a, b metrics.Listener) int { return strings.Compare(a.Name, b.Name) })
	for _, l := range ls {
		ll := listenerStats{Name: l.Name, Connections: l.Active, Requests: newClassCounts(), TLS: l.TLS}
		if a := src.Addr(l.Name); a != nil {
			ll.Address = a.String()
		}
		for c, name := range classNames {
			for _, ver := range proxy.Versions() {
				ll.Requests[name] += l.Stats.Requests(ver, c+1)
			}
		}
		v.Listeners = append(v.Listeners, ll)
	}
	count := func(s *pool.Stats, pc classCounts) {
		s.EachCode(func(_, status int, n uint64) { pc.add(status, n) })
	}
	for _, p := range src.Pools() {
		ps := poolStats{Name: p.Name, Requests: newClassCounts(), Queued: p.Limit.Queued(),
			Retries: p.Retries.Load(), NoBackend: p.NoBackend.Requests.Load(),
			Duration: histogramView{Buckets: make([]uint64, len(pool.DurationBuckets))}}
		// As in /metrics, the duration histogram is the backends' only.
		count(&p.NoBackend, ps.Requests)
		for _, b := range p.Backends() {
			count(&b.Stats, ps.Requests)
			ps.Duration.add(&b.Stats)
			ps.InFlight += b.InFlight.Load()
		}
		v.Pools = append(v.Pools, ps)
	}
	if v.Listeners == nil {
		v.Listeners = []listenerStats{}
	}
	if v.Pools == nil {
		v.Pools = []poolStats{}
	}
	writeJSON(w, http.StatusOK, v)
}
