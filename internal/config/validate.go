package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
)

// notSupportedYet lists keys that decode but that sluice does not implement
// yet. Setting one to anything but its default is an error, never silently
// ignored. Delete a line when its feature lands.
var notSupportedYet = []struct {
	key      string               // field path below the listener or pool
	what     string               // how the message names it
	listener func(*Listener) bool // reports whether a listener uses the key
	pool     func(*Pool) bool     // reports whether a pool uses the key
	fix      string
}{}

// Validate checks the whole config, after ApplyDefaults, and fills the
// parsed forms: Listener.TrustedPrefixes, Backend.URL,
// HealthCheck.ExpectMin/ExpectMax and the Retries.On* fields. It returns nil
// or Errors holding every problem, at its FILE:LINE:COL when the config came
// from a file, else named by its field path ("pools[0].backends[1].address").
// It reads admin.token_file, upstream_tls.ca and the files of every tls
// block to check they are usable, and records what does not stop sluice
// (a certificate expired or about to) for Warnings.
func (c *Config) Validate() error {
	c.warnings = nil
	v := &validator{c: c, pools: map[string]string{}, usedBy: map[string]string{}, tcpUsedBy: map[string]string{}, now: time.Now(),
		limitNames: map[string]string{}}
	if len(c.Listeners) == 0 {
		v.errorf("listeners", "no listeners: add at least one under listeners")
	}
	if len(c.Pools) == 0 {
		v.errorf("pools", "no pools: add at least one under pools")
	}
	for i, p := range c.Pools {
		path := index("pools", i) + ".name"
		if c.src != nil && c.src.isBad(path) {
			v.poolsBad = true
		}
		if p.Name == "" {
			v.errorf(path, "pool needs a name")
		} else if first, dup := v.pools[p.Name]; dup {
			v.errorf(path, "duplicate pool name %q (first at %s): names must be unique", p.Name, v.where(first))
		} else {
			v.pools[p.Name] = path
			v.poolNames = append(v.poolNames, p.Name)
		}
	}
	names, addrs := map[string]string{}, map[string]string{}
	for i := range c.Listeners {
		v.listener(index("listeners", i), &c.Listeners[i], names, addrs)
	}
	for i := range c.Pools {
		v.pool(index("pools", i), &c.Pools[i])
	}
	v.admin(&c.Admin)
	v.rateLimitStore(c.RateLimitStore)
	v.oneOf("access_log.format", "access_log.format", c.AccessLog.Format, "json", "combined", "off")
	if c.AccessLog.Path == "" {
		v.errorf("access_log.path", `access_log.path is empty: use stdout, stderr or a file path`)
	}
	if c.Tracing != nil {
		v.tracing(c.Tracing)
	}
	v.oneOf("log.level", "log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", "log.format", c.Log.Format, "text", "json")
	atLeast(v, "shutdown_delay", c.ShutdownDelay, 0, "")
	atLeast(v, "shutdown_timeout", c.ShutdownTimeout, 0, "")
	v.inRange("event_loops", c.EventLoops, 0, 1024, "one per CPU")
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs.tidy()
}

type validator struct {
	collector
	c         *Config
	pools     map[string]string // pool name → path of its name
	poolNames []string          // in file order, for suggestions
	usedBy    map[string]string // pool name → the first http listener sending to it
	tcpUsedBy map[string]string // pool name → the first tcp listener sending to it
	poolsBad  bool              // a pool's name failed to decode
	now       time.Time         // for certificate expiry warnings

	limitNames map[string]string // rate_limit name → path of the first
	limits     int               // rate_limit blocks seen
}

// Warnings returns what the last Validate found wrong but not fatal, one
// line each, at FILE:LINE:COL (or the field path) like errors: a tls
// certificate that has expired, expires within CertExpiryWarning, or is
// not valid yet. sluice serves such a certificate and logs these at
// start-up and at each reload.
func (c *Config) Warnings() []string {
	return slices.Clone(c.warnings)
}

// errorf records a problem with the field at path, unless decoding already
// reported it.
func (v *validator) errorf(path, format string, args ...any) {
	e := &Error{File: path, Path: path, Msg: fmt.Sprintf(format, args...)}
	if s := v.c.src; s != nil {
		if s.isBad(path) {
			return
		}
		p := s.at(path)
		e.File, e.Line, e.Col = s.file, p.line, p.col
	}
	v.add(e)
}

// warnf records a warning about the field at path, formatted as an Error.
func (v *validator) warnf(path, format string, args ...any) {
	e := &Error{File: path, Path: path, Msg: fmt.Sprintf(format, args...)}
	if s := v.c.src; s != nil {
		p := s.at(path)
		e.File, e.Line, e.Col = s.file, p.line, p.col
	}
	v.c.warnings = append(v.c.warnings, e.Error())
}

// where names path for "first at ..." notes: its line, or its field path.
func (v *validator) where(path string) string {
	if s := v.c.src; s != nil {
		return fmt.Sprintf("line %d", s.at(path).line)
	}
	return path
}

func (v *validator) listener(p string, l *Listener, names, addrs map[string]string) {
	addrDup := false
	if l.Address == "" {
		v.errorf(p+".address", `listener needs an address, e.g. ":8080"`)
	} else if err := checkHostPort("address", l.Address); err != nil {
		v.errorf(p+".address", "%v", err)
	} else if first, dup := addrs[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
		v.errorf(p+".address", "duplicate listener address %q (first at %s): each listener needs its own", l.Address, v.where(first))
		addrDup = true
	} else {
		addrs[l.Address] = p + ".address"
	}
	// A name defaulted from a duplicate address is reported as the address.
	if first, dup := names[l.Name]; dup && l.Name != "" && !(addrDup && l.Name == l.Address) {
		v.errorf(p+".name", "duplicate listener name %q (first at %s): names must be unique", l.Name, v.where(first))
	} else {
		names[l.Name] = p + ".name"
	}
	if l.Protocol != "tcp" {
		v.oneOf(p+".protocol", "protocol", l.Protocol, "http", "tcp")
	}
	v.oneOf(p+".engine", "engine", l.Engine, "h1", "std", "loop")
	if l.Engine == "loop" {
		// The loops serve HTTP/1.1 connections, in the clear or over TLS
		// past its handshake (HTTP/2 goes to sluice's HTTP/2 server, as
		// on engine: h1); a PROXY header is not read on them yet.
		if l.ProxyProtocol {
			v.errorf(p+".proxy_protocol", "engine: loop does not read the PROXY protocol yet: use engine: h1 on this listener")
		}
		if runtime.GOOS != "linux" {
			v.errorf(p+".engine", "engine: loop needs Linux (epoll); this system is %s: use engine: h1", runtime.GOOS)
		}
	}
	if l.TLS != nil {
		v.tls(p+".tls", l.TLS)
		if l.H2C {
			v.errorf(p+".h2c", "h2c has no effect on a tls listener, which offers HTTP/2 through ALPN: remove it")
		}
	} else if l.HTTP3 {
		v.errorf(p+".http3", "http3 needs tls (HTTP/3 runs over QUIC, which is always encrypted): add a tls block, or remove http3")
	}
	l.TrustedPrefixes = nil
	for i, s := range l.TrustedProxies {
		pfx, err := parsePrefix(s)
		if err != nil {
			v.errorf(index(p+".trusted_proxies", i), `trusted proxy %q is not a CIDR or an IP address: write e.g. "10.0.0.0/8" or "192.0.2.1"`, s)
			continue
		}
		l.TrustedPrefixes = append(l.TrustedPrefixes, pfx)
	}
	t := &l.Timeouts
	atLeast(v, p+".timeouts.read_header", t.ReadHeader, 0, "no limit")
	atLeast(v, p+".timeouts.read", t.Read, 0, "no limit")
	atLeast(v, p+".timeouts.write", t.Write, 0, "no limit")
	atLeast(v, p+".timeouts.idle", t.Idle, 0, "no limit")
	lim := &l.Limits
	atLeast(v, p+".limits.max_connections", lim.MaxConnections, 0, "no limit")
	atLeast(v, p+".limits.max_header_bytes", lim.MaxHeaderBytes, 1, "")
	atLeast(v, p+".limits.max_headers", lim.MaxHeaders, 1, "")
	atLeast(v, p+".limits.max_uri_bytes", lim.MaxURIBytes, 1, "")
	atLeast(v, p+".limits.max_body_bytes", lim.MaxBodyBytes, 0, "no limit")
	v.inRange(p+".limits.max_concurrent_streams", lim.MaxConcurrentStreams, 1, 1<<20, "")
	if l.Protocol != "tcp" && l.TLS == nil && !l.H2C && lim.MaxConcurrentStreams != DefaultMaxConcurrentStreams {
		v.errorf(p+".limits.max_concurrent_streams", "max_concurrent_streams has no effect on a listener without tls or h2c, "+
			"which serves HTTP/1.1 only: remove it, or add h2c: true")
	}
	v.rateLimit(p+".rate_limit", l.RateLimit)
	for i, r := range l.Routes {
		v.route(index(p+".routes", i), &r, l)
	}
	if l.Pool != "" {
		v.poolRef(p+".pool", l.Pool, l)
	}
	if l.Protocol == "tcp" {
		v.tcpListener(p, l)
	}
	for _, ns := range notSupportedYet {
		if ns.listener != nil && ns.listener(l) {
			v.errorf(p+"."+ns.key, "%s is not supported yet: %s", ns.what, ns.fix)
		}
	}
}

func (v *validator) route(p string, r *Route, l *Listener) {
	if r.Pool == "" {
		v.errorf(p+".pool", "route needs a pool")
	} else {
		v.poolRef(p+".pool", r.Pool, l)
	}
	if l.Protocol == "tcp" {
		v.tcpRoute(p, r)
		return
	}
	if r.SNI != "" {
		v.errorf(p+".sni", "sni routes are for protocol tcp listeners, which read the server name without terminating TLS: use host on listener %q", l.Name)
	}
	if h := strings.TrimPrefix(r.Host, "*."); r.Host != "" && !validHost(h) {
		v.errorf(p+".host", `route host %q is not a host name: write e.g. "api.example.com" or "*.example.com", without a port`, r.Host)
	}
	if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
		v.errorf(p+".path_prefix", "path_prefix %q must start with \"/\"", r.PathPrefix)
	}
	for name := range r.Headers {
		if !isToken(name) {
			v.errorf(p+".headers."+name, "%q is not a valid header name", name)
		}
	}
	v.rateLimit(p+".rate_limit", r.RateLimit)
}

// poolRef checks a listener's or route's pool exists, and remembers which
// http or tcp listener sends to it.
func (v *validator) poolRef(path, name string, l *Listener) {
	if _, ok := v.pools[name]; !ok {
		if v.poolsBad {
			return // the pool may be the one that did not decode
		}
		v.errorf(path, "pool %q is not defined under pools%s", name, didYouMean(closest(name, v.poolNames)))
		return
	}
	used := v.usedBy
	if l.Protocol == "tcp" {
		used = v.tcpUsedBy
	}
	if _, ok := used[name]; !ok {
		used[name] = l.Name
	}
}

func (v *validator) pool(p string, pl *Pool) {
	v.policy(p, pl)
	atLeast(v, p+".max_connections_per_backend", pl.MaxConnectionsPerBackend, 0, "no limit")
	atLeast(v, p+".max_queue", pl.MaxQueue, 0, "503 at once when every backend is full")
	atLeast(v, p+".queue_timeout", pl.QueueTimeout, 0, "")
	if st := pl.Sticky; st != nil {
		if !isToken(st.Cookie) {
			v.errorf(p+".sticky.cookie", "sticky cookie name %q is not a valid cookie name: use letters, digits and -_.", st.Cookie)
		}
		atLeast(v, p+".sticky.ttl", st.TTL, 0, "a session cookie")
	}
	if len(pl.Backends) == 0 && pl.Discovery == nil {
		v.errorf(p+".backends", "pool %q has no backends: add at least one under backends", pl.Name)
	}
	seen := map[string]string{}
	for i := range pl.Backends {
		b, bp := &pl.Backends[i], index(p+".backends", i)
		b.URL = nil
		v.inRange(bp+".weight", b.Weight, 1, 1000, "")
		u, err := ParseBackendAddress(b.Address)
		if err != nil {
			v.errorf(bp+".address", "%v", err)
			continue
		}
		b.URL = u
		key := u.Scheme + "://" + strings.ToLower(u.Host)
		if first, dup := seen[key]; dup {
			v.errorf(bp+".address", "duplicate backend %q in pool %q (first at %s): remove one, or raise its weight", b.Address, pl.Name, v.where(first))
		}
		seen[key] = bp + ".address"
		if l, ok := v.usedBy[pl.Name]; ok && u.Scheme == "tcp" {
			v.errorf(bp+".address", "backend %q is tcp:// but http listener %q sends to pool %q: use http:// or https://", b.Address, l, pl.Name)
		}
		if l, ok := v.tcpUsedBy[pl.Name]; ok && u.Scheme != "tcp" {
			v.errorf(bp+".address", "backend %q is %s:// but tcp listener %q sends to pool %q: use tcp://host:port", b.Address, u.Scheme, l, pl.Name)
		}
	}
	v.sendProxy(p, pl)
	if pl.GRPCWeb && !pl.UpstreamHTTP2 && !v.isTCPPool(pl) {
		v.errorf(p+".grpc_web", "grpc_web needs HTTP/2 to the backends, which gRPC servers speak: set upstream_http2: true on pool %q", pl.Name)
	}
	if v.isTCPPool(pl) {
		v.tcpPool(p, pl)
	}
	if pl.Discovery != nil {
		v.discovery(p+".discovery", pl)
	}
	if pl.HealthCheck != nil {
		v.healthCheck(p+".health_check", pl.HealthCheck, pl)
	}
	v.loadReport(p, pl)
	ph := &pl.PassiveHealth
	atLeast(v, p+".passive_health.consecutive_failures", ph.ConsecutiveFailures, 1, "")
	v.positive(p+".passive_health.ejection_time", ph.EjectionTime, "")
	v.inRange(p+".passive_health.max_ejection_percent", ph.MaxEjectionPercent, 0, 100, "")
	v.retries(p+".retries", &pl.Retries)
	t := &pl.Timeouts
	atLeast(v, p+".timeouts.connect", t.Connect, 0, "no limit")
	atLeast(v, p+".timeouts.response_header", t.ResponseHeader, 0, "no limit")
	atLeast(v, p+".timeouts.request", t.Request, 0, "no limit")
	atLeast(v, p+".timeouts.idle", t.Idle, 0, "no limit")
	if ca := pl.UpstreamTLS.CA; ca != "" {
		if _, err := loadCA(ca); err != nil {
			v.errorf(p+".upstream_tls.ca", "upstream_tls.ca: %v", err)
		}
	}
	for _, ns := range notSupportedYet {
		if ns.pool != nil && ns.pool(pl) {
			v.errorf(p+"."+ns.key, "%s is not supported yet: %s", ns.what, ns.fix)
		}
	}
}

// policy checks the pool's balance policy, and the keys whose meaning
// depends on it, against the table of policies in package balance.
func (v *validator) policy(p string, pl *Pool) {
	v.oneOf(p+".balance", "balance", pl.Balance, balance.Names(nil)...)
	spec, known := balance.Lookup(pl.Balance)
	if !validHashKey(pl.HashKey) {
		v.errorf(p+".hash_key", "hash_key %q is not valid: use client_ip, path, header:NAME, cookie:NAME or query:NAME", pl.HashKey)
	}
	if err := balance.CheckBalanceFactor(pl.HashBalanceFactor); err != nil {
		v.errorf(p+".hash_balance_factor", "%v", err)
	} else if known && pl.HashBalanceFactor != 0 && !spec.BalanceFactor {
		v.errorf(p+".hash_balance_factor", "hash_balance_factor has no effect with balance %q: remove it, or set balance to %s",
			pl.Balance, orList(balance.Names(func(s balance.Spec) bool { return s.BalanceFactor })))
	}
	atLeast(v, p+".slow_start", pl.SlowStart, 0, "off")
	if known && pl.SlowStart > 0 && !spec.SlowStart {
		v.errorf(p+".slow_start", "slow_start has no effect with balance %q, which keeps each key on its backend: remove it, or set balance to %s",
			pl.Balance, orList(balance.Names(func(s balance.Spec) bool { return s.SlowStart })))
	}
}

func validHashKey(k string) bool {
	if k == "client_ip" || k == "path" {
		return true
	}
	kind, name, _ := strings.Cut(k, ":")
	switch kind {
	case "header", "cookie":
		return isToken(name)
	case "query":
		return name != ""
	}
	return false
}

func (v *validator) healthCheck(p string, hc *HealthCheck, pl *Pool) {
	v.oneOf(p+".type", "health_check.type", hc.Type, "http", "tcp", "grpc")
	grpc := hc.Type == "grpc"
	switch {
	case grpc:
		if !pl.UpstreamHTTP2 {
			v.errorf(p+".type", "health_check.type grpc needs HTTP/2 to the backends: set upstream_http2: true on pool %q, or use type http or tcp", pl.Name)
		}
		if hc.Path != "" {
			v.errorf(p+".path", "health_check.path has no effect with type grpc: remove it (name a grpc.health.v1 service with service)")
		}
		if hc.ExpectStatus != "" {
			v.errorf(p+".expect_status", "health_check.expect_status has no effect with type grpc, which passes on SERVING: remove it")
		}
	case hc.Service != "":
		v.errorf(p+".service", "health_check.service has no effect with type %q: remove it, or set type: grpc", hc.Type)
	}
	if !grpc && !strings.HasPrefix(hc.Path, "/") {
		v.errorf(p+".path", "health_check.path %q must start with \"/\"", hc.Path)
	}
	interval := v.positive(p+".interval", hc.Interval, "remove the health_check block to turn checks off")
	if v.positive(p+".timeout", hc.Timeout, "") && interval && hc.Timeout > hc.Interval {
		v.errorf(p+".timeout", "health_check.timeout %s is longer than its interval %s: shorten it", hc.Timeout, hc.Interval)
	}
	atLeast(v, p+".healthy_threshold", hc.HealthyThreshold, 1, "")
	atLeast(v, p+".unhealthy_threshold", hc.UnhealthyThreshold, 1, "")
	hc.ExpectMin, hc.ExpectMax = 0, 0
	if grpc {
		return
	}
	lo, hi, ok := parseStatusRange(hc.ExpectStatus)
	if !ok {
		v.errorf(p+".expect_status", `expect_status %q is not a status or a range: write e.g. "200" or "200-399" (100 to 599)`, hc.ExpectStatus)
	}
	hc.ExpectMin, hc.ExpectMax = lo, hi
}

// parseStatusRange parses "NNN" or "NNN-NNN" within 100-599.
func parseStatusRange(s string) (lo, hi int, ok bool) {
	a, b, isRange := strings.Cut(s, "-")
	lo, ok1 := parseStatus(a, 100)
	hi, ok2 := lo, true
	if isRange {
		hi, ok2 = parseStatus(b, 100)
	}
	if !ok1 || !ok2 || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

// parseStatus parses a three-digit status code from min to 599.
func parseStatus(s string, min int) (int, bool) {
	n, err := strconv.Atoi(s)
	if len(s) != 3 || err != nil || n < min || n > 599 {
		return 0, false
	}
	return n, true
}

func (v *validator) retries(p string, r *Retries) {
	v.inRange(p+".num_retries", r.NumRetries, 0, 10, "off")
	v.inRange(p+".budget_percent", r.BudgetPercent, 0, 100, "")
	atLeast(v, p+".backoff_base", r.BackoffBase, 0, "")
	atLeast(v, p+".backoff_max", r.BackoffMax, 0, "")
	if r.BackoffBase >= 0 && r.BackoffMax >= 0 && r.BackoffMax < r.BackoffBase {
		v.errorf(p+".backoff_max", "backoff_max %v is shorter than backoff_base %v: raise it, or lower backoff_base", r.BackoffMax, r.BackoffBase)
	}
	r.OnConnectFailure, r.OnReset, r.OnTimeout, r.OnStatus = false, false, false, nil
	for i, on := range r.RetryOn {
		switch on {
		case "connect_failure":
			r.OnConnectFailure = true
		case "reset":
			r.OnReset = true
		case "timeout":
			r.OnTimeout = true
		default:
			code, ok := parseStatus(on, 500)
			if !ok {
				v.errorf(index(p+".retry_on", i), `retry_on %q is not valid: use connect_failure, reset, timeout or a status from "500" to "599"`, on)
				continue
			}
			if !slices.Contains(r.OnStatus, code) {
				r.OnStatus = append(r.OnStatus, code)
			}
		}
	}
}

func (v *validator) admin(a *Admin) {
	if err := checkHostPort("admin address", a.Address); err != nil {
		v.errorf("admin.address", "%v", err)
		return
	}
	if a.TokenFile != "" {
		tok, err := readSmallFile(a.TokenFile)
		if err == nil && strings.TrimSpace(string(tok)) == "" {
			err = fmt.Errorf("%s is empty", a.TokenFile)
		}
		if err != nil {
			v.errorf("admin.token_file", "admin.token_file: %v", err)
		}
	} else if !isLoopback(a.Address) {
		v.errorf("admin.address", "admin address %q is not loopback: set admin.token_file", a.Address)
	}
	if a.StateFile != "" {
		// The file itself may not exist yet (the first change creates it);
		// its directory must, since the file is replaced by a rename there.
		dir := filepath.Dir(a.StateFile)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			v.errorf("admin.state_file", "admin.state_file: directory %q does not exist: create it (writable by sluice only) or choose another path", dir)
		} else if fi, err := os.Stat(a.StateFile); err == nil && !fi.Mode().IsRegular() {
			v.errorf("admin.state_file", "admin.state_file: %s is not a regular file", a.StateFile)
		}
	}
}

func (v *validator) tracing(t *Tracing) {
	if host, port, err := net.SplitHostPort(t.OTLPEndpoint); err != nil || host == "" || port == "0" {
		v.errorf("tracing.otlp_endpoint", `tracing.otlp_endpoint %q is not the collector's host:port: write e.g. "127.0.0.1:4317" (no scheme, no path)`, t.OTLPEndpoint)
	} else if err := checkHostPort("tracing.otlp_endpoint", t.OTLPEndpoint); err != nil {
		v.errorf("tracing.otlp_endpoint", "%v", err)
	}
	v.oneOf("tracing.protocol", "tracing.protocol", t.Protocol, "grpc", "http")
	if !(t.SampleRatio >= 0 && t.SampleRatio <= 1) {
		v.errorf("tracing.sample_ratio", "sample_ratio %v is out of range: use 0 (only requests whose parent is sampled) to 1 (every request)", t.SampleRatio)
	}
	if strings.TrimSpace(t.ServiceName) == "" {
		v.errorf("tracing.service_name", `tracing.service_name is empty: name the service, e.g. "sluice"`)
	}
}

// readSmallFile reads a regular file of at most 1 MiB, so a path such as
// /dev/zero cannot hang validation.
func readSmallFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file", path)
	case fi.Size() > 1<<20:
		return nil, fmt.Errorf("%s is larger than 1 MiB", path)
	}
	return os.ReadFile(path)
}

// oneOf checks val is one of allowed; key names it in the message.
func (v *validator) oneOf(path, key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.errorf(path, "%s %q is not valid: use %s%s", key, val, orList(allowed), didYouMean(closest(val, allowed)))
	}
}

// atLeast checks n is min or more; means, when not "", says what min
// means ("no limit").
func atLeast[N int | int64 | time.Duration](v *validator, path string, n, min N, means string) {
	if n < min {
		v.errorf(path, "%s must be %v%s or more, got %v", lastKey(path), min, paren(means), n)
	}
}

// inRange checks n is from lo to hi; means, when not "", says what lo
// means ("off").
func (v *validator) inRange(path string, n, lo, hi int, means string) {
	if n < lo || n > hi {
		v.errorf(path, "%s %d is out of range: use %d%s to %d", lastKey(path), n, lo, paren(means), hi)
	}
}

// positive checks d is more than 0, and reports whether it is; fix, when
// not "", says what to do instead.
func (v *validator) positive(path string, d time.Duration, fix string) bool {
	if d > 0 {
		return true
	}
	if fix != "" {
		fix = ": " + fix
	}
	v.errorf(path, "%s must be more than 0, got %s%s", lastKey(path), d, fix)
	return false
}

// paren returns " (s)", or "" for "".
func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// lastKey returns the last key of a field path: "idle" for
// "pools[0].timeouts.idle".
func lastKey(path string) string {
	return path[strings.LastIndex(path, ".")+1:]
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
