// Package discovery finds backends at run time and keeps a pool's
// membership in step with what it finds.
//
// A Source (DNS here, etcd in package discovery/etcd) looks backends up and
// reports each complete set it finds, or the error of a failed look-up.
// Members, one per pool, owns the sources' goroutines and merges their sets
// with the pool's static backends: a backend found is added (a full member:
// health checks, slow start, sticky, metrics, the admin API), a backend no
// longer found is drained and removed once its requests in flight have
// finished, and a failed look-up changes nothing — the last set found stays,
// so a registry that is down never empties a pool. Sources that keep a
// fleet-wide admin state (etcd) report it with their set, and Members
// applies it to the pool's backends.
package discovery

import (
	"context"
	"net/url"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Backend is one backend a source found.
type Backend struct {
	// Address is scheme://host:port: the backend's identity in the pool, its
	// metric label and its name in the admin API.
	Address string
	// URL is Address parsed.
	URL *url.URL
	// Weight is from 1 to 1000.
	Weight int
	// Priority is the backend's priority level (0, the zero value, is the
	// most preferred; see pool.Backend.Priority). DNS SRV records set it.
	Priority int
}

// Fleet is the admin state that every instance of a fleet applies to one
// backend (see package discovery/etcd). The zero value changes nothing.
type Fleet struct {
	// State is "enabled", "draining", "disabled", or "" (each instance
	// keeps its own).
	State string `json:"state,omitempty"`
	// Weight, when not 0, replaces the backend's weight (1 to 1000).
	Weight int `json:"weight,omitempty"`
}

// AdminState returns the pool.Admin that f.State names, and false when it
// names none.
func (f Fleet) AdminState() (pool.Admin, bool) {
	for _, a := range []pool.Admin{pool.Enabled, pool.Draining, pool.Disabled} {
		if f.State == a.String() {
			return a, true
		}
	}
	return 0, false
}

// Set is one complete answer of a source.
type Set struct {
	// Backends are every backend the source knows now.
	Backends []Backend
	// Fleet holds the fleet-wide admin state by backend address; nil from
	// sources that keep none (DNS).
	Fleet map[string]Fleet
}

// Reporter receives what a source finds. Its methods block until the
// report is taken, and return at once when the source's context has ended.
type Reporter interface {
	// Found reports the complete current set, which replaces the previous
	// one. A source reports after every successful look-up, changed or not.
	Found(Set)
	// Failed reports a failed look-up; the last set found stays.
	Failed(err error)
}

// Source finds the backends of one pool.
type Source interface {
	// Kind tags the backends it finds (pool.SourceDNS, pool.SourceEtcd) and
	// labels its errors in sluice_discovery_errors_total.
	Kind() pool.Source
	// Describe says what it watches, for the admin API and the log: "SRV
	// _http._tcp.web.internal".
	Describe() string
	// Run looks backends up and reports to r until ctx ends; it returns
	// once every goroutine it started has exited.
	Run(ctx context.Context, r Reporter)
}

// FleetWriter is implemented by a Source that stores a fleet-wide admin
// state (etcd), which every instance watching the same source applies.
type FleetWriter interface {
	// WriteFleet merges change into the stored state of the backend at
	// address: its non-zero fields replace the stored ones.
	WriteFleet(ctx context.Context, address string, change Fleet) error
}

// Status is what the admin API shows of one source of a pool.
type Status struct {
	// Source is the kind: "dns" or "etcd".
	Source string `json:"source"`
	// Watching says what it watches (Source.Describe).
	Watching string `json:"watching"`
	// OK is false from a failed look-up until the next successful one,
	// and before the first answer.
	OK bool `json:"ok"`
	// Backends is the number of backends of the last answer.
	Backends int `json:"backends"`
	// Errors counts failed look-ups (sluice_discovery_errors_total).
	Errors uint64 `json:"errors"`
	// LastError is the error of the last failed look-up, and LastErrorAt
	// its time; they stay after the source recovers.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// UpdatedAt is the time of the last successful answer.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}
