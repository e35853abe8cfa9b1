// Package admin serves sluice's admin address: health probes, Prometheus
// metrics, the JSON API that inspects and changes pools and backends, and the
// live dashboard.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/state"
)

// Runtime is what the admin API needs from the running server.
type Runtime interface {
	// Pools returns the current pools in config order.
	Pools() []*pool.Pool
	// Ready reports whether every listener is bound, the config is loaded and
	// the server is not shutting down.
	Ready() bool
	// Reload reloads the config file as SIGHUP does; the error says why the
	// new config was refused (e.g. config errors, one FILE:LINE:COL per line).
	Reload() error
	// AddBackend adds a backend to a pool now.
	AddBackend(pool, address string, weight int) error
	// RemoveBackend drains a backend, then removes it.
	RemoveBackend(pool, address string) error
	// SetBackendState sets a backend's operator state (pool.Enabled,
	// pool.Draining or pool.Disabled).
	SetBackendState(pool, address string, st pool.Admin) error
	// SetBackendWeight sets a backend's weight.
	SetBackendWeight(pool, address string, weight int) error
	// State is admin.state_file: its entries, and those that name a pool
	// or backend that no longer exists.
	State() state.Report
	// ConfigJSON is the running config as JSON with the YAML key names and
	// its secrets left out (config.Config.PublicJSON).
	ConfigJSON() []byte
}

// Errors a Runtime wraps (fmt.Errorf("pool %q: %w", name, admin.ErrNotFound))
// so that the API answers with the right status; state.ErrNotPersisted is a
// 500. Any other error is the client's fault: 400 with the error's text.
var (
	// ErrNotFound: unknown pool or backend (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: e.g. the backend is already in the pool (409).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: a store the change needs (etcd) could not be
	// reached, and nothing changed (503).
	ErrUnavailable = errors.New("unavailable")
)

// Fleet is what the admin API needs of a Runtime that discovers backends:
// the state of each pool's discovery sources, and state changes written
// to a store that every instance of the fleet watches (?scope=fleet).
type Fleet interface {
	// Discovery returns the state of the pool's discovery sources (none
	// when it has no discovery).
	Discovery(pool string) []discovery.Status
	// SetFleetState and SetFleetWeight write the change for every
	// instance, and apply it here too. When the pool has no fleet-wide
	// store they return an error saying why, and change nothing.
	SetFleetState(pool, address string, st pool.Admin) error
	SetFleetWeight(pool, address string, weight int) error
}

// Options configure the admin handler.
type Options struct {
	// Address is the address the admin server listens on, e.g.
	// "127.0.0.1:9090"; the Host and Origin checks compare against it (see
	// hostRule). Prefer the bound address (listener.Addr().String()): with
	// port 0 or no port, any port is accepted. "" means an unspecified host
	// and any port.
	Address string
	// Token, when not empty, is required as "Authorization: Bearer TOKEN" on
	// every /api/ call, and, when Address is not loopback, on every endpoint
	// but /healthz and /readyz. Surrounding white space is ignored. "" means
	// no token (the server refuses a non-loopback Address without one).
	Token string
	// Metrics serves GET /metrics; nil answers 404.
	Metrics http.Handler
	// Logger receives one line per mutating call and refused requests at
	// debug level; nil discards.
	Logger *slog.Logger
	// Version is shown by the dashboard and in GET /api/v1/pools; "" omits it.
	Version string
	// Events feeds GET /api/v1/events; nil serves a stream that stays
	// silent.
	Events *events.Log
	// Done, when closed, ends every event stream (the server shuts down;
	// http.Server.Shutdown would otherwise wait for them). Nil: never.
	Done <-chan struct{}
	// Heartbeat is how often an event stream without news gets a comment,
	// so that proxies keep it open and a gone client is noticed; 0 means
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// Stats serves GET /api/v1/stats (the dashboard's charts); nil answers
	// 404.
	Stats StatsSource
	// Fleet, when not nil, adds each pool's discovery status to the pool
	// views and serves ?scope=fleet on state and weight changes; nil
	// answers ?scope=fleet with 400.
	Fleet Fleet
}

// New returns the admin handler.
func New(rt Runtime, o Options) http.Handler {
	h := &handler{
		rt:        rt,
		log:       o.Logger,
		version:   o.Version,
		mux:       http.NewServeMux(),
		guard:     newGuard(o.Address, o.Token),
		events:    o.Events,
		done:      o.Done,
		heartbeat: o.Heartbeat,
		statsSrc:  o.Stats,
		fleet:     o.Fleet,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.heartbeat <= 0 {
		h.heartbeat = DefaultHeartbeat
	}
	m := h.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeText(w, http.StatusOK, "ok") })
	m.HandleFunc("GET /readyz", h.readyz)
	if o.Metrics != nil {
		m.Handle("GET /metrics", o.Metrics)
	}
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { writeDashboard(w, http.StatusOK) })
	m.HandleFunc("GET /api/v1/pools", h.listPools)
	m.HandleFunc("GET /api/v1/pools/{pool}", h.getPool)
	m.HandleFunc("POST /api/v1/pools/{pool}/backends", h.addBackend)
	m.HandleFunc("GET /api/v1/pools/{pool}/backends/{address}", h.getBackend)
	m.HandleFunc("DELETE /api/v1/pools/{pool}/backends/{address}", h.removeBackend)
	m.HandleFunc("POST /api/v1/pools/{pool}/backends/{address}/{action}", h.setState)
	m.HandleFunc("POST /api/v1/pools/{pool}/backends/{address}/weight", h.setWeight)
	m.HandleFunc("POST /api/v1/reload", h.reload)
	m.HandleFunc("GET /api/v1/config", h.config)
	m.HandleFunc("GET /api/v1/events", h.streamEvents)
	m.HandleFunc("GET /api/v1/state", h.state)
	m.HandleFunc("GET /api/v1/stats", h.serveStats)
	return h
}

type handler struct {
	rt        Runtime
	log       *slog.Logger
	version   string
	mux       *http.ServeMux
	guard     guard
	events    *events.Log
	done      <-chan struct{}
	heartbeat time.Duration
	// statsSrc feeds GET /api/v1/stats; nil: 404.
	statsSrc StatsSource
	fleet    Fleet // nil: no discovery
}

var _ http.Handler = (*handler)(nil)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	if code, msg := h.guard.check(r); code != 0 {
		h.log.Debug("admin request refused", "method", r.Method, "path", r.URL.Path,
			"host", r.Host, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr, "status", code)
		h.refuse(w, r, code, msg)
		return
	}
	if !safeMethod(r.Method) {
		rec := &statusWriter{ResponseWriter: w}
		w = rec
		defer func() {
			h.log.Info("admin call", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", rec.code)
		}()
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		if msg := unescapedAddress(r); msg != "" {
			writeError(w, http.StatusBadRequest, msg)
			return
		}
		if p, clean := r.URL.EscapedPath(), cleanPath(r.URL.EscapedPath()); p != clean {
			// ServeMux would redirect to the clean path, which curl does
			// not follow for a POST: the call would silently do nothing.
			writeError(w, http.StatusBadRequest, fmt.Sprintf("path %q is not clean (empty segments, . or ..): call %s instead", p, clean))
			return
		}
		if mh, pattern := h.mux.Handler(r); pattern == "" {
			// No route: ServeMux would answer 404 or 405 in plain text (or
			// redirect to the clean path); an API client gets the same
			// status in JSON.
			rec := &statusWriter{ResponseWriter: discard{http.Header{}}}
			mh.ServeHTTP(rec, r)
			switch rec.code {
			case http.StatusNotFound:
				writeError(w, rec.code, fmt.Sprintf("no such endpoint %s: the API is under /api/v1/ (pools, pools/{pool}, pools/{pool}/backends/{address}, reload, config, events, state, stats)", r.URL.Path))
				return
			case http.StatusMethodNotAllowed:
				allow := rec.Header().Get("Allow")
				w.Header().Set("Allow", allow)
				writeError(w, rec.code, fmt.Sprintf("method %s not allowed on %s: use %s", r.Method, r.URL.EscapedPath(), allow))
				return
			}
		}
	}
	h.mux.ServeHTTP(w, r)
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
		if r.URL.Path == "/" && safeMethod(r.Method) {
			// The page carries no data; it shows the token form and sends
			// the token on its own requests.
			writeDashboard(w, code)
			return
		}
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeError(w, code, msg)
		return
	}
	writeText(w, code, msg)
}

func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.rt.Ready() {
		writeText(w, http.StatusOK, "ready")
		return
	}
	writeText(w, http.StatusServiceUnavailable, "not ready")
}

// poolView and backendView are the API's JSON. latency_ms is the moving
// average of the time to response header. source is where the backend
// came from (config, runtime, dns, etcd); override says an admin.state_file
// entry applies to it; reason is why it is in its state (the reason of the
// last event about it) and since when (RFC 3339; null before anything
// happened to it).
type poolView struct {
	Name      string        `json:"name"`
	Ready     int           `json:"ready"`
	Backends  []backendView `json:"backends"`
	Retries   uint64        `json:"retries"`
	NoBackend uint64        `json:"no_backend"`
	// Discovery is the state of the pool's discovery sources.
	Discovery []discovery.Status `json:"discovery,omitempty"`
}

type backendView struct {
	Address      string     `json:"address"`
	Weight       int        `json:"weight"`
	State        string     `json:"state"`
	Source       string     `json:"source"`
	Override     bool       `json:"override"`
	Reason       string     `json:"reason"`
	Since        *time.Time `json:"since"`
	InFlight     int64      `json:"in_flight"`
	Requests     uint64     `json:"requests"`
	Failures     uint64     `json:"failures"`
	Responses5xx uint64     `json:"responses_5xx"`
	LatencyMS    float64    `json:"latency_ms"`
	ChecksPassed uint64     `json:"checks_passed"`
	ChecksFailed uint64     `json:"checks_failed"`
	Ejections    uint64     `json:"ejections"`
	// Scope says where a state or weight change applied: "local" (this
	// instance) or "fleet" (every instance); only in their answers.
	Scope string `json:"scope,omitempty"`
}

// poolsView is GET /api/v1/pools. state_stale lists the admin.state_file
// entries that name a pool or backend that no longer exists (left out
// when there are none).
type poolsView struct {
	Version    string        `json:"version,omitempty"`
	Pools      []poolView    `json:"pools"`
	StateStale []state.Stale `json:"state_stale,omitempty"`
}

// overrides is the set of backends an admin.state_file entry applies to,
// by pool and address.
type overrides map[[2]string]bool

func (h *handler) overrides() (overrides, []state.Stale) {
	r := h.rt.State()
	o := make(overrides, len(r.Entries))
	for _, e := range r.Entries {
		o[[2]string{e.Pool, e.Address}] = true
	}
	for _, st := range r.Stale {
		delete(o, [2]string{st.Pool, st.Address})
	}
	return o, r.Stale
}

func viewPool(p *pool.Pool, o overrides) poolView {
	bs := p.Backends()
	v := poolView{
		Name:      p.Name,
		Ready:     p.Ready(),
		Backends:  make([]backendView, 0, len(bs)),
		Retries:   p.Retries.Load(),
		NoBackend: p.NoBackend.Requests.Load(),
	}
	for _, b := range bs {
		v.Backends = append(v.Backends, viewBackend(p.Name, b, o))
	}
	return v
}

func viewBackend(poolName string, b *pool.Backend, o overrides) backendView {
	r := b.Reason()
	v := backendView{
		Address:      b.Address,
		Weight:       b.Weight(),
		State:        b.State(),
		Source:       b.Source.String(),
		Override:     o[[2]string{poolName, b.Address}],
		Reason:       r.Text,
		InFlight:     b.InFlight.Load(),
		Requests:     b.Stats.Requests.Load(),
		Failures:     b.Stats.Failures.Load(),
		Responses5xx: b.Stats.CountStatus(500, 599),
		LatencyMS:    float64(b.Stats.Latency().Microseconds()) / 1e3,
		ChecksPassed: b.Stats.ChecksPassed.Load(),
		ChecksFailed: b.Stats.ChecksFailed.Load(),
		Ejections:    b.Stats.Ejections.Load(),
	}
	if !r.Since.IsZero() {
		since := r.Since.Round(0)
		v.Since = &since
	}
	return v
}

func (h *handler) findPool(name string) (*pool.Pool, error) {
	for _, p := range h.rt.Pools() {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("pool %q: %w", name, ErrNotFound)
}

func (h *handler) findBackend(poolName, address string) (*pool.Backend, error) {
	p, err := h.findPool(poolName)
	if err != nil {
		return nil, err
	}
	if b := p.Find(address); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("backend %q in pool %q: %w", address, poolName, ErrNotFound)
}

func (h *handler) listPools(w http.ResponseWriter, r *http.Request) {
	ps := h.rt.Pools()
	o, stale := h.overrides()
	v := poolsView{Version: h.version, Pools: make([]poolView, 0, len(ps)), StateStale: stale}
	for _, p := range ps {
		v.Pools = append(v.Pools, h.withDiscovery(viewPool(p, o)))
	}
	writeJSON(w, http.StatusOK, v)
}

func (h *handler) getPool(w http.ResponseWriter, r *http.Request) {
	p, err := h.findPool(r.PathValue("pool"))
	if err != nil {
		writeErr(w, err)
		return
	}
	o, _ := h.overrides()
	writeJSON(w, http.StatusOK, h.withDiscovery(viewPool(p, o)))
}

// withDiscovery adds the pool's discovery status to v.
func (h *handler) withDiscovery(v poolView) poolView {
	if h.fleet != nil {
		v.Discovery = h.fleet.Discovery(v.Name)
	}
	return v
}

// writeBackend answers the view of a backend (or the error of finding it).
func (h *handler) writeBackend(w http.ResponseWriter, code int, poolName, address string) {
	h.writeChanged(w, code, poolName, address, "")
}

// writeChanged is writeBackend after a change that applied in scope
// ("local" or "fleet"; "" says nothing).
func (h *handler) writeChanged(w http.ResponseWriter, code int, poolName, address, scope string) {
	b, err := h.findBackend(poolName, address)
	if err != nil {
		writeErr(w, err)
		return
	}
	o, _ := h.overrides()
	v := viewBackend(poolName, b, o)
	v.Scope = scope
	writeJSON(w, code, v)
}

// scope reads ?scope= of a state or weight change: "local" (the default)
// or "fleet". It answers 400 and returns "" when the value is unknown, or
// when it is fleet and there is no fleet.
func (h *handler) scope(w http.ResponseWriter, r *http.Request) string {
	switch sc := r.URL.Query().Get("scope"); sc {
	case "", "local":
		return "local"
	case "fleet":
		if h.fleet == nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("pool %q has no etcd discovery, so there is no fleet-wide store: drop ?scope=fleet to change this instance only", r.PathValue("pool")))
			return ""
		}
		return sc
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown scope %q: use local (this instance, the default) or fleet (every instance sharing the pool's etcd prefix)", sc))
		return ""
	}
}

func (h *handler) getBackend(w http.ResponseWriter, r *http.Request) {
	h.writeBackend(w, http.StatusOK, r.PathValue("pool"), r.PathValue("address"))
}

// maxBody bounds the JSON body of a POST.
const maxBody = 64 << 10

// decodeBody reads the JSON body of r into v, refusing unknown fields; on
// error it answers 400 (saying what to send: example) and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, example string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid JSON body: %v; send %s", err, example))
		return false
	}
	return true
}

func (h *handler) addBackend(w http.ResponseWriter, r *http.Request) {
	poolName := r.PathValue("pool")
	var req struct {
		Address string `json:"address"`
		Weight  *int   `json:"weight"` // nil: 1
	}
	const example = `{"address": "http://HOST:PORT", "weight": 1}`
	if !decodeBody(w, r, &req, example) {
		return
	}
	if req.Address == "" {
		writeError(w, http.StatusBadRequest, `"address" is required: send `+example)
		return
	}
	weight := 1
	if req.Weight != nil {
		weight = *req.Weight
	}
	if err := h.rt.AddBackend(poolName, req.Address, weight); err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/pools/"+url.PathEscape(poolName)+"/backends/"+url.PathEscape(req.Address))
	h.writeBackend(w, http.StatusCreated, poolName, req.Address)
}

func (h *handler) removeBackend(w http.ResponseWriter, r *http.Request) {
	poolName, address := r.PathValue("pool"), r.PathValue("address")
	b, err := h.findBackend(poolName, address)
	if err == nil {
		err = h.rt.RemoveBackend(poolName, address)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	// Accepted: the backend drains and is removed once idle.
	o, _ := h.overrides()
	writeJSON(w, http.StatusAccepted, viewBackend(poolName, b, o))
}

var actions = map[string]pool.Admin{
	"drain":   pool.Draining,
	"enable":  pool.Enabled,
	"disable": pool.Disabled,
}

func (h *handler) setState(w http.ResponseWriter, r *http.Request) {
	poolName, address, action := r.PathValue("pool"), r.PathValue("address"), r.PathValue("action")
	st, ok := actions[action]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown action %q: use drain, enable, disable or weight", action))
		return
	}
	h.change(w, r, poolName, address,
		func() error { return h.fleet.SetFleetState(poolName, address, st) },
		func() error { return h.rt.SetBackendState(poolName, address, st) })
}

func (h *handler) setWeight(w http.ResponseWriter, r *http.Request) {
	poolName, address := r.PathValue("pool"), r.PathValue("address")
	var req struct {
		Weight *int `json:"weight"`
	}
	const example = `{"weight": N} with N from 1 to 1000`
	if !decodeBody(w, r, &req, example) {
		return
	}
	if req.Weight == nil {
		writeError(w, http.StatusBadRequest, `"weight" is required: send `+example)
		return
	}
	h.change(w, r, poolName, address,
		func() error { return h.fleet.SetFleetWeight(poolName, address, *req.Weight) },
		func() error { return h.rt.SetBackendWeight(poolName, address, *req.Weight) })
}

// change makes a state or weight change of a backend in the scope ?scope=
// asks for, fleet (every instance) or local (this one), and answers with
// the backend as it now is.
func (h *handler) change(w http.ResponseWriter, r *http.Request, poolName, address string, fleet, local func() error) {
	scope := h.scope(w, r)
	if scope == "" {
		return
	}
	apply := local
	if scope == "fleet" {
		apply = fleet
	}
	if err := apply(); err != nil {
		writeErr(w, err)
		return
	}
	h.writeChanged(w, http.StatusOK, poolName, address, scope)
}

// state answers admin.state_file: every entry, and the stale ones with
// what is missing.
func (h *handler) state(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.rt.State())
}

// config answers the running config: what `sluice diff` compares a file
// with.
func (h *handler) config(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(h.rt.ConfigJSON())
}

func (h *handler) reload(w http.ResponseWriter, r *http.Request) {
	if err := h.rt.Reload(); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("reload refused, the previous config keeps serving: %v; fix the file and reload again", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}
