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

	"github.com/sluice-lb/sluice/internal/pool"
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
	// ConfigJSON is the running config as JSON with the YAML key names and
	// its secrets left out (config.Config.PublicJSON).
	ConfigJSON() []byte
}

// Errors a Runtime wraps (fmt.Errorf("pool %q: %w", name, admin.ErrNotFound))
// so that the API answers with the right status. Any other error is the
// client's fault: 400 with the error's text.
var (
	// ErrNotFound: unknown pool or backend (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: e.g. the backend is already in the pool (409).
	ErrConflict = errors.New("conflict")
)

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
}

// New returns the admin handler.
func New(rt Runtime, o Options) http.Handler {
	h := &handler{
		rt:      rt,
		log:     o.Logger,
		version: o.Version,
		mux:     http.NewServeMux(),
		guard:   newGuard(o.Address, o.Token),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
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
	m.HandleFunc("POST /api/v1/reload", h.reload)
	m.HandleFunc("GET /api/v1/config", h.config)
	return h
}

type handler struct {
	rt      Runtime
	log     *slog.Logger
	version string
	mux     *http.ServeMux
	guard   guard
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
		if mh, pattern := h.mux.Handler(r); pattern == "" {
			// No route: ServeMux would answer 404 or 405 in plain text (or
			// redirect to the clean path); an API client gets the same
			// status in JSON.
			rec := &statusWriter{ResponseWriter: discard{http.Header{}}}
			mh.ServeHTTP(rec, r)
			switch rec.code {
			case http.StatusNotFound:
				writeError(w, rec.code, "no such endpoint")
				return
			case http.StatusMethodNotAllowed:
				w.Header().Set("Allow", rec.Header().Get("Allow"))
				writeError(w, rec.code, fmt.Sprintf("method %s not allowed", r.Method))
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
// average of the time to response header.
type poolView struct {
	Name      string        `json:"name"`
	Ready     int           `json:"ready"`
	Backends  []backendView `json:"backends"`
	Retries   uint64        `json:"retries"`
	NoBackend uint64        `json:"no_backend"`
}

type backendView struct {
	Address      string  `json:"address"`
	Weight       int     `json:"weight"`
	State        string  `json:"state"`
	InFlight     int64   `json:"in_flight"`
	Requests     uint64  `json:"requests"`
	Failures     uint64  `json:"failures"`
	Responses5xx uint64  `json:"responses_5xx"`
	LatencyMS    float64 `json:"latency_ms"`
	ChecksPassed uint64  `json:"checks_passed"`
	ChecksFailed uint64  `json:"checks_failed"`
	Ejections    uint64  `json:"ejections"`
}

type poolsView struct {
	Version string     `json:"version,omitempty"`
	Pools   []poolView `json:"pools"`
}

func viewPool(p *pool.Pool) poolView {
	bs := p.Backends()
	v := poolView{
		Name:      p.Name,
		Ready:     p.Ready(),
		Backends:  make([]backendView, 0, len(bs)),
		Retries:   p.Retries.Load(),
		NoBackend: p.NoBackend.Requests.Load(),
	}
	for _, b := range bs {
		v.Backends = append(v.Backends, viewBackend(b))
	}
	return v
}

func viewBackend(b *pool.Backend) backendView {
	return backendView{
		Address:      b.Address,
		Weight:       b.Weight(),
		State:        b.State(),
		InFlight:     b.InFlight.Load(),
		Requests:     b.Stats.Requests.Load(),
		Failures:     b.Stats.Failures.Load(),
		Responses5xx: b.Stats.CountStatus(500, 599),
		LatencyMS:    float64(b.Stats.Latency().Microseconds()) / 1e3,
		ChecksPassed: b.Stats.ChecksPassed.Load(),
		ChecksFailed: b.Stats.ChecksFailed.Load(),
		Ejections:    b.Stats.Ejections.Load(),
	}
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
	v := poolsView{Version: h.version, Pools: make([]poolView, 0, len(ps))}
	for _, p := range ps {
		v.Pools = append(v.Pools, viewPool(p))
	}
	writeJSON(w, http.StatusOK, v)
}

func (h *handler) getPool(w http.ResponseWriter, r *http.Request) {
	p, err := h.findPool(r.PathValue("pool"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewPool(p))
}

func (h *handler) getBackend(w http.ResponseWriter, r *http.Request) {
	b, err := h.findBackend(r.PathValue("pool"), r.PathValue("address"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewBackend(b))
}

// maxBody bounds the JSON body of POST .../backends.
const maxBody = 64 << 10

func (h *handler) addBackend(w http.ResponseWriter, r *http.Request) {
	poolName := r.PathValue("pool")
	var req struct {
		Address string `json:"address"`
		Weight  *int   `json:"weight"` // nil: 1
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid JSON body: %v", err))
		return
	}
	if req.Address == "" {
		writeError(w, http.StatusBadRequest, `"address" is required`)
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
	v := backendView{Address: req.Address, Weight: weight}
	if b, err := h.findBackend(poolName, req.Address); err == nil {
		v = viewBackend(b)
	}
	writeJSON(w, http.StatusCreated, v)
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
	writeJSON(w, http.StatusAccepted, viewBackend(b))
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
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown action %q: use drain, enable or disable", action))
		return
	}
	if err := h.rt.SetBackendState(poolName, address, st); err != nil {
		writeErr(w, err)
		return
	}
	b, err := h.findBackend(poolName, address)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewBackend(b))
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
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}
