package proxy

import (
	"crypto/tls"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/pool"
)

// Record is what the core keeps of one request, from its head to its end,
// for the attempt loop, the counters, the span and the access log. Each
// codec fills it as the request goes; the strings are only read when the
// listener is Verbose (access log or tracing on), so a codec may leave them
// empty otherwise.
type Record struct {
	Start time.Time
	// Target is the routed pool (nil: no route); Resolve sets it.
	Target *Target
	// Info is the request's PickInfo, which Resolve fills; the codec
	// points it at its own before calling Resolve.
	Info   *pool.PickInfo
	Result Result
	// Status is what the client got.
	Status int
	// Bytes is the body bytes sent to the client; BytesIn the request body
	// bytes read from it (and passed on).
	Bytes, BytesIn int64
	// Version is the client's HTTP version.
	Version Version
	// TLSVersion is the client connection's TLS version (tls.VersionTLS13…;
	// 0: plain). Read only when the access log is on.
	TLSVersion uint16
	// ClientSubject is the subject of the client's verified certificate
	// (mTLS; "": none). Read only when the access log is on.
	ClientSubject string
	// Trace is the request's span (see Listener.StartTrace).
	Trace Trace
	// Client is the peer's address, host:port.
	Client                                   string
	ID, Method, Host, Path, Query, UserAgent string
	// End says why a layer-4 connection ended (accesslog.Entry.End).
	End string
}

// Version is an HTTP version a client speaks. The zero value is HTTP/1.1.
type Version uint8

const (
	HTTP11 Version = iota
	HTTP10
	HTTP2
	HTTP3
	numVersions
)

// String is the version as the request line writes it ("HTTP/1.1"); the
// access log and the protocol label of sluice_listener_requests_total show
// this.
func (v Version) String() string {
	switch v {
	case HTTP10:
		return "HTTP/1.0"
	case HTTP2:
		return "HTTP/2.0"
	case HTTP3:
		return "HTTP/3.0"
	}
	return "HTTP/1.1"
}

// number is the version as OpenTelemetry's network.protocol.version has it.
func (v Version) number() string {
	switch v {
	case HTTP10:
		return "1.0"
	case HTTP2:
		return "2"
	case HTTP3:
		return "3"
	}
	return "1.1"
}

// ListenerStats are a listener's own lock-free counters, kept across
// reloads by the server: request duration by status class, with exemplars
// when tracing is on, and requests by protocol and status class.
type ListenerStats struct {
	// Duration[c] is the duration of requests whose status is in class
	// c+1 (1xx…5xx).
	Duration [5]pool.Histogram
	requests [numVersions][5]atomic.Uint64
}

// Requests returns how many requests of version v got a status of class c
// (1 to 5).
func (s *ListenerStats) Requests(v Version, c int) uint64 {
	if s == nil || c < 1 || c > 5 || v >= numVersions {
		return 0
	}
	return s.requests[v][c-1].Load()
}

// Versions lists the versions Requests counts.
func Versions() []Version { return []Version{HTTP10, HTTP11, HTTP2, HTTP3} }

// Observe counts one request and returns the duration histogram it went
// to (nil when its status has no class).
func (s *ListenerStats) Observe(v Version, status int, d time.Duration) *pool.Histogram {
	if s == nil || status < 100 || status > 599 || v >= numVersions {
		return nil
	}
	c := status/100 - 1
	s.requests[v][c].Add(1)
	h := &s.Duration[c]
	h.Observe(d)
	return h
}

// FinishConn hands a finished layer-4 connection (package tcp) to the
// access log: r.Host is the server name of its ClientHello, Bytes and
// BytesIn what went to the client and came from it, End why it ended. Its
// backend's counters moved while it relayed.
func (l *Listener) FinishConn(r *Record) {
	if l.Access == nil {
		return
	}
	e := accesslog.Entry{Time: r.Start, Listener: l.Name, Client: r.Client, Host: r.Host, Proto: accesslog.ProtoTCP,
		Duration: time.Since(r.Start), Bytes: r.Bytes, BytesIn: r.BytesIn, End: r.End, Tries: r.Result.Tries}
	if b := r.Result.Backend; b != nil {
		e.Backend = b.Address
	}
	if r.Target != nil {
		e.Pool = r.Target.Pool.Name
	}
	l.Access.Log(&e)
}

// Finish counts an answered request (on the backend that answered, else on
// the pool that had none to offer, else on the listener), ends its span and
// hands it to the access log.
func (l *Listener) Finish(r *Record) {
	end := time.Now()
	d := end.Sub(r.Start)
	var bh *pool.Histogram // the backend's duration histogram
	switch b := r.Result.Backend; {
	case b != nil:
		b.Stats.Observe(l.Slot, r.Status, d)
		b.Stats.BytesIn.Add(uint64(r.BytesIn))
		b.Stats.BytesOut.Add(uint64(r.Bytes))
		bh = &b.Stats.Duration
	case r.Target != nil:
		r.Target.Pool.NoBackend.Observe(l.Slot, r.Status, d)
	default:
		l.NoPool.Observe(l.Slot, r.Status, d)
	}
	lh := l.Stats.Observe(r.Version, r.Status, d)
	if r.Trace.On() {
		r.Trace.end(r, end, d, lh, bh)
	}
	if l.Access == nil {
		return
	}
	res := &r.Result
	e := accesslog.Entry{Time: r.Start, Listener: l.Name, Method: r.Method, Host: r.Host, Path: r.Path, Query: r.Query,
		UserAgent: r.UserAgent, RequestID: r.ID, Client: r.Client, Status: r.Status, Duration: d,
		Bytes: r.Bytes, BytesIn: r.BytesIn, Tries: res.Tries, TraceID: r.Trace.TraceID(), Proto: r.Version.String()}
	if r.TLSVersion != 0 {
		e.TLS = tlsVersion(r.TLSVersion)
		e.ClientSubject = r.ClientSubject
	}
	if b := res.Backend; b != nil {
		e.Backend = b.Address
		e.Connect, e.Header = res.Connect, res.Header
	}
	if r.Target != nil {
		e.Pool = r.Target.Pool.Name
	}
	if r.Info != nil && r.Info.ClientIP.IsValid() {
		e.Client = r.Info.ClientIP.String()
	}
	l.Access.Log(&e)
}

// tlsVersion names a TLS version as the config does ("1.2", "1.3").
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS10:
		return "1.0"
	}
	return "unknown"
}
