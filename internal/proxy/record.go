package proxy

import (
	"time"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/pool"
)

// Record is what the core keeps of one answered request, for the counters
// and the access log. Each codec fills it as the request goes; the strings
// are only read when the access log is on, so a codec may leave them empty
// otherwise.
type Record struct {
	Start time.Time
	// Target is the routed pool (nil: no route).
	Target *Target
	Info   *pool.PickInfo // nil: no route
	Result Result
	// Status is what the client got.
	Status int
	// Bytes is the body bytes sent to the client.
	Bytes int64
	// Client is the peer's address, host:port.
	Client                                          string
	ID, Method, Host, Path, Query, UserAgent, Proto string
}

// Finish counts an answered request (on the backend that answered, else on
// the pool that had none to offer, else on the listener) and hands it to
// the access log.
func (l *Listener) Finish(r *Record) {
	d := time.Since(r.Start)
	switch b := r.Result.Backend; {
	case b != nil:
		b.Stats.Observe(l.Slot, r.Status, d)
	case r.Target != nil:
		r.Target.Pool.NoBackend.Observe(l.Slot, r.Status, d)
	default:
		l.NoPool.Observe(l.Slot, r.Status, d)
	}
	if l.Access == nil {
		return
	}
	e := accesslog.Entry{Time: r.Start, Listener: l.Name, Method: r.Method, Host: r.Host, Path: r.Path, Query: r.Query, Proto: r.Proto,
		UserAgent: r.UserAgent, RequestID: r.ID, Client: r.Client, Status: r.Status, Duration: d,
		Bytes: r.Bytes, Tries: r.Result.Tries}
	if b := r.Result.Backend; b != nil {
		e.Backend = b.Address
	}
	if r.Target != nil {
		e.Pool = r.Target.Pool.Name
	}
	if r.Info != nil && r.Info.ClientIP.IsValid() {
		e.Client = r.Info.ClientIP.String()
	}
	l.Access.Log(&e)
}
