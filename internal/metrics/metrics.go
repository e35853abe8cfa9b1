// Package metrics exposes sluice's state in the Prometheus text format from
// a private registry. The request path only adds to atomics on pools and
// backends (package pool); this collector reads them at scrape time, so a
// request pays for no label look-up, lock or allocation to be counted.
package metrics

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// HTTP2Counts are a listener's HTTP/2 streams that clients opened, and
// the RST_STREAM frames clients sent (ResetsReceived: a client cancelled a
// stream) and sluice sent (ResetsSent: a stream refused or failed).
type HTTP2Counts struct {
	Streams, ResetsReceived, ResetsSent uint64
}

// Listener is one listener as the collector sees it.
type Listener struct {
	Name string
	// Active is the number of open client connections.
	Active int64
	// NoPool counts requests answered without a pool (404, 400, …).
	NoPool *pool.Stats
	// TLS: handshakes by result, and each certificate's expiry (nil: no TLS).
	HandshakesOK, HandshakesFailed uint64
	Certificates                   []Certificate
	TLS                            bool
	// HTTP2Errors counts HTTP/2 stream and connection errors with clients.
	HTTP2Errors uint64
	// HTTP2Floods counts HTTP/2 connections closed for abuse, by reason.
	HTTP2Floods map[string]uint64
	// HTTP2 counts HTTP/2 streams and resets (nil: no HTTP/2 on the
	// listener).
	HTTP2 *HTTP2Counts
	// Stats are the listener's requests by protocol and status class and
	// their duration (nil: none yet).
	Stats *proxy.ListenerStats
	// Protocols: requests by HTTP version, HTTP/3 and ACME.
	Protocols Protocols
	// RateLimited counts requests a rate limit refused (429).
	RateLimited uint64
	// Rejected counts connections closed before any backend saw them, by
	// reason (a PROXY protocol header refused, no route or no backend on a
	// tcp listener); nil on a listener that rejects none of these ways.
	Rejected map[string]uint64
}

// Certificate is one certificate name a listener serves and when it expires.
type Certificate struct {
	Name     string
	NotAfter time.Time
}

// Build is what sluice_build_info says about the binary.
type Build struct {
	Version, Revision, GoVersion string
}

// Source is what the collector reads; the server implements it.
type Source interface {
	Pools() []*pool.Pool
	Listeners() []Listener
	// ListenerName returns the name of a counter slot (see pool.MaxListeners).
	ListenerName(slot int) string
	// Reloads returns the counts of successful and failed reloads and
	// whether the last one succeeded.
	Reloads() (ok, failed uint64, lastOK bool)
	// DiscoveryErrors calls fn for each (pool, source) error count.
	DiscoveryErrors(fn func(pool, source string, n uint64))
	// AccessLogDropped is the number of access log entries dropped because
	// the writer fell behind (0 when the access log is off).
	AccessLogDropped() uint64
	// Build describes the running binary (sluice_build_info).
	Build() Build
	// TraceSpans returns how many spans were exported and how many failed
	// to be (0, 0 when tracing was never on).
	TraceSpans() (exported, failed uint64)
	// RateLimitStore returns the failed calls to rate limit stores, whether
	// one is configured, and whether it answers now.
	RateLimitStore() (errors uint64, configured, up bool)
}

var (
	descRequests = prometheus.NewDesc("sluice_requests_total",
		"Requests answered, by listener, pool, backend and status code (backend is empty when none was tried).",
		[]string{"listener", "pool", "backend", "code"}, nil)
	descDuration = prometheus.NewDesc("sluice_request_duration_seconds",
		"Time from request start to the end of the response, by pool and backend.",
		[]string{"pool", "backend"}, nil)
	descUp = prometheus.NewDesc("sluice_backend_up",
		"1 when the backend takes new requests (healthy and enabled), else 0.",
		[]string{"pool", "backend"}, nil)
	descAdminState = prometheus.NewDesc("sluice_backend_admin_state",
		"1 for the backend's admin state (enabled, draining or disabled: set by the admin API, admin.state_file, a fleet-wide change, its agent, or discovery draining it), 0 for the other two. A backend down while enabled has failed; one draining or disabled was set aside.",
		[]string{"pool", "backend", "state"}, nil)
	descInFlight = prometheus.NewDesc("sluice_backend_in_flight",
		"Requests being served by the backend now.", []string{"pool", "backend"}, nil)
	descFailures = prometheus.NewDesc("sluice_backend_failures_total",
		"Attempts that failed at the backend (refused, reset, timeout, invalid response).",
		[]string{"pool", "backend"}, nil)
	descQueued = prometheus.NewDesc("sluice_pool_queued_requests",
		"Requests waiting for a backend slot (max_connections_per_backend).", []string{"pool"}, nil)
	descRetries = prometheus.NewDesc("sluice_retries_total",
		"Attempts retried on another backend.", []string{"pool"}, nil)
	descChecks = prometheus.NewDesc("sluice_health_checks_total",
		"Active health check results.", []string{"pool", "backend", "result"}, nil)
	descEjections = prometheus.NewDesc("sluice_backend_ejections_total",
		"Times the backend was taken out of rotation by passive health (failed requests).",
		[]string{"pool", "backend"}, nil)
	descConns = prometheus.NewDesc("sluice_connections_active",
		"Open client connections.", []string{"listener"}, nil)
	descReloads = prometheus.NewDesc("sluice_config_reloads_total",
		"Config reloads, by result (success or failure).", []string{"result"}, nil)
	descLastReload = prometheus.NewDesc("sluice_config_last_reload_successful",
		"1 when the last config reload succeeded (or none was tried), else 0.", nil, nil)
	descDiscovery = prometheus.NewDesc("sluice_discovery_errors_total",
		"Failed look-ups of a discovery source.", []string{"pool", "source"}, nil)
	descHandshakes = prometheus.NewDesc("sluice_tls_handshakes_total",
		"TLS handshakes with clients, by result (ok or error).", []string{"listener", "result"}, nil)
	descCertExpiry = prometheus.NewDesc("sluice_certificate_expiry_seconds",
		"When a listener's certificate expires (NotAfter, Unix time), by its first DNS name.", []string{"listener", "name"}, nil)
	descH2Errors = prometheus.NewDesc("sluice_http2_errors_total",
		"HTTP/2 protocol errors with clients (streams reset or connections ended for a protocol error).", []string{"listener"}, nil)
	descH2Floods = prometheus.NewDesc("sluice_http2_flood_closes_total",
		"HTTP/2 client connections closed for a flood (rapid reset, CONTINUATION, ping, settings, empty frames…), by reason.",
		[]string{"listener", "reason"}, nil)
	descH2Streams = prometheus.NewDesc("sluice_http2_streams_total",
		"HTTP/2 streams that clients opened (each a request, or one refused before it became one).", []string{"listener"}, nil)
	descH2Resets = prometheus.NewDesc("sluice_http2_resets_total",
		"HTTP/2 streams reset (RST_STREAM), by direction: received (a client cancelled) or sent (sluice refused or ended a stream).",
		[]string{"listener", "direction"}, nil)
	descBuild = prometheus.NewDesc("sluice_build_info",
		"Always 1; the labels say which sluice runs: its version, VCS revision and Go version.",
		[]string{"version", "revision", "goversion"}, nil)
	descBytesIn = prometheus.NewDesc("sluice_backend_bytes_in_total",
		"Request body bytes read from clients and sent to the backend (counted for the backend that answered); for a tcp:// backend, the bytes relayed to it.",
		[]string{"pool", "backend"}, nil)
	descBytesOut = prometheus.NewDesc("sluice_backend_bytes_out_total",
		"Response body bytes from the backend sent to clients; for a tcp:// backend, the bytes relayed from it.", []string{"pool", "backend"}, nil)
	descListenerDuration = prometheus.NewDesc("sluice_listener_request_duration_seconds",
		"Time from request start to the end of the response, by listener and status class (1xx to 5xx), every request included (those sluice answered itself too).",
		[]string{"listener", "code_class"}, nil)
	descListenerRequests = prometheus.NewDesc("sluice_listener_requests_total",
		"Requests answered, by listener, the client's protocol (HTTP/1.0, HTTP/1.1, HTTP/2.0, HTTP/3.0) and status class.",
		[]string{"listener", "protocol", "code_class"}, nil)
	descQueueWait = prometheus.NewDesc("sluice_pool_queue_wait_seconds",
		"Time requests waited in the queue for a backend slot (max_connections_per_backend), whether they got one or not.",
		[]string{"pool"}, nil)
	descBudgetExhausted = prometheus.NewDesc("sluice_retry_budget_exhausted_total",
		"Retries that retry_on asked for and the retry budget (budget_percent) refused.", []string{"pool"}, nil)
	descTraceSpans = prometheus.NewDesc("sluice_trace_spans_total",
		"Spans handed to the OTLP exporter, by result (exported, or failed: the collector refused them or could not be reached).",
		[]string{"result"}, nil)
	descRateLimited = prometheus.NewDesc("sluice_rate_limited_total",
		"Requests refused with 429 by the listener's or a route's rate_limit.", []string{"listener"}, nil)
	descStoreErrors = prometheus.NewDesc("sluice_rate_limit_store_errors_total",
		"Calls to the shared rate limit store (Redis) that failed; the requests were counted locally.", nil, nil)
	descStoreUp = prometheus.NewDesc("sluice_rate_limit_store_up",
		"1 while the shared rate limit store answers and limits are shared, 0 while each instance counts alone (only with rate_limit_store).", nil, nil)
	descRejected = prometheus.NewDesc("sluice_connections_rejected_total",
		"Client connections closed before any backend saw them, by reason: proxy_invalid, proxy_untrusted, proxy_timeout (PROXY protocol header missing or malformed, from a peer outside trusted_proxies, too slow), no_route, rate_limited, no_backend (tcp listeners).",
		[]string{"listener", "reason"}, nil)
	descTCPConns = prometheus.NewDesc("sluice_backend_connections_total",
		"Client connections relayed to a tcp:// backend (layer 4); their bytes count in sluice_backend_bytes_in_total and _out_total.",
		[]string{"pool", "backend"}, nil)
	descAccessDropped = prometheus.NewDesc("sluice_access_log_dropped_total",
		"Access log entries dropped because the writer fell behind (the request path never waits for it).", nil, nil)
)

// Collector implements prometheus.Collector over a Source.
type Collector struct{ src Source }

// NewHandler returns the /metrics handler: sluice's collector plus the Go
// runtime and process collectors, on a registry of its own.
func NewHandler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&Collector{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// OpenMetrics, when the scraper asks for it, carries the exemplars.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// Describe sends every metric description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descDuration, descUp, descAdminState, descInFlight, descFailures,
		descRetries, descQueued, descChecks, descEjections, descConns, descReloads, descLastReload, descDiscovery, descAccessDropped, descHandshakes, descCertExpiry, descH2Errors, descH2Floods, descH2Streams, descH2Resets, descBuild,
		descBytesIn, descBytesOut, descListenerDuration, descListenerRequests, descQueueWait, descBudgetExhausted, descTraceSpans,
		descRateLimited, descStoreErrors, descStoreUp, descRejected, descTCPConns} {
		ch <- d
	}
	for _, d := range protocolDescs {
		ch <- d
	}
}

// Collect reads the current state.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	requests := func(s *pool.Stats, poolName, backend string) {
		s.EachCode(func(slot, status int, n uint64) {
			counter(descRequests, n, c.src.ListenerName(slot), poolName, backend, strconv.Itoa(status))
		})
	}
	for _, l := range c.src.Listeners() {
		gauge(descConns, float64(l.Active), l.Name)
		if l.TLS {
			counter(descHandshakes, l.HandshakesOK, l.Name, "ok")
			counter(descHandshakes, l.HandshakesFailed, l.Name, "error")
		}
		for _, ct := range l.Certificates {
			gauge(descCertExpiry, float64(ct.NotAfter.Unix()), l.Name, ct.Name)
		}
		counter(descH2Errors, l.HTTP2Errors, l.Name)
		counter(descRateLimited, l.RateLimited, l.Name)
		for reason, n := range l.HTTP2Floods {
			counter(descH2Floods, n, l.Name, reason)
		}
		if h := l.HTTP2; h != nil {
			counter(descH2Streams, h.Streams, l.Name)
			counter(descH2Resets, h.ResetsReceived, l.Name, "received")
			counter(descH2Resets, h.ResetsSent, l.Name, "sent")
		}
		for reason, n := range l.Rejected {
			counter(descRejected, n, l.Name, reason)
		}
		if l.NoPool != nil {
			requests(l.NoPool, "", "")
		}
		if st := l.Stats; st != nil {
			for c := 1; c <= 5; c++ {
				class := codeClasses[c-1]
				histogram(ch, descListenerDuration, &st.Duration[c-1], l.Name, class)
				for _, v := range proxy.Versions() {
					if n := st.Requests(v, c); n > 0 {
						counter(descListenerRequests, n, l.Name, v.String(), class)
					}
				}
			}
		}
		collectProtocols(l.Name, l.Protocols, counter, gauge)
	}
	for _, p := range c.src.Pools() {
		counter(descRetries, p.Retries.Load(), p.Name)
		counter(descBudgetExhausted, p.Budget.Exhausted(), p.Name)
		gauge(descQueued, float64(p.Limit.Queued()), p.Name)
		histogram(ch, descQueueWait, &p.QueueWait, p.Name)
		requests(&p.NoBackend, p.Name, "")
		for _, b := range p.Backends() {
			s := &b.Stats
			requests(s, p.Name, b.Address)
			histogram(ch, descDuration, &s.Duration, p.Name, b.Address)
			counter(descBytesIn, s.BytesIn.Load(), p.Name, b.Address)
			counter(descBytesOut, s.BytesOut.Load(), p.Name, b.Address)
			up := 0.0
			if b.Eligible() {
				up = 1
			}
			gauge(descUp, up, p.Name, b.Address)
			// Every state's series, so that a change is seen at once
			// rather than as a series that goes stale.
			admin := b.AdminState()
			for _, a := range adminStates {
				v := 0.0
				if a == admin {
					v = 1
				}
				gauge(descAdminState, v, p.Name, b.Address, a.String())
			}
			gauge(descInFlight, float64(b.InFlight.Load()), p.Name, b.Address)
			counter(descFailures, s.Failures.Load(), p.Name, b.Address)
			counter(descChecks, s.ChecksPassed.Load(), p.Name, b.Address, "success")
			counter(descChecks, s.ChecksFailed.Load(), p.Name, b.Address, "failure")
			counter(descEjections, s.Ejections.Load(), p.Name, b.Address)
			if b.URL != nil && b.URL.Scheme == "tcp" {
				counter(descTCPConns, s.Connections.Load(), p.Name, b.Address)
			}
		}
	}
	ok, failed, lastOK := c.src.Reloads()
	counter(descReloads, ok, "success")
	counter(descReloads, failed, "failure")
	last := 0.0
	if lastOK {
		last = 1
	}
	gauge(descLastReload, last)
	c.src.DiscoveryErrors(func(poolName, source string, n uint64) {
		counter(descDiscovery, n, poolName, source)
	})
	counter(descAccessDropped, c.src.AccessLogDropped())
	exported, failed := c.src.TraceSpans()
	counter(descTraceSpans, exported, "exported")
	counter(descTraceSpans, failed, "failed")
	storeErrors, store, storeUp := c.src.RateLimitStore()
	counter(descStoreErrors, storeErrors)
	if store {
		up := 0.0
		if storeUp {
			up = 1
		}
		gauge(descStoreUp, up)
	}
	b := c.src.Build()
	gauge(descBuild, 1, b.Version, b.Revision, b.GoVersion)
}

// adminStates are the values of sluice_backend_admin_state's state label.
var adminStates = [...]pool.Admin{pool.Enabled, pool.Draining, pool.Disabled}

// codeClasses are the values of the code_class label, by status / 100 - 1.
var codeClasses = [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// histogram sends h as a histogram with the labels, carrying each bucket's
// latest exemplar (a sampled request's trace id) when tracing is on.
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h *pool.Histogram, labels ...string) {
	cum, count, sum := h.Snapshot()
	buckets := make(map[float64]uint64, len(cum))
	for i, ub := range pool.DurationBuckets {
		buckets[ub] = cum[i]
	}
	m := prometheus.MustNewConstHistogram(d, count, sum, buckets, labels...)
	if exs := h.Exemplars(); len(exs) > 0 {
		list := make([]prometheus.Exemplar, len(exs))
		for i, e := range exs {
			list[i] = prometheus.Exemplar{Value: e.Value.Seconds(), Timestamp: e.At,
				Labels: prometheus.Labels{"trace_id": hex.EncodeToString(e.TraceID[:])}}
		}
		if mx, err := prometheus.NewMetricWithExemplars(m, list...); err == nil {
			m = mx
		}
	}
	ch <- m
}
