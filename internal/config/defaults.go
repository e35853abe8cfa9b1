package config

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
)

// Default returns a config with nothing but defaults: no listeners and no
// pools, so it does not validate until some are added.
func Default() *Config {
	c := &Config{}
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills every key the config leaves out with the default from
// DESIGN.md; it is the one place defaults are set. For a config decoded from
// a file, "leaves out" means the key is absent, so `num_retries: 0` stays 0.
// For a config built in Go it means the field is zero (a nil RetryOn, but
// not an empty one, gets the default list). Load and Parse call it;
// calling it again changes nothing.
func (c *Config) ApplyDefaults() {
	s := c.src
	for i := range c.Listeners {
		l, p := &c.Listeners[i], index("listeners", i)
		if l.Name == "" {
			l.Name = l.Address
		}
		def(s, p+".protocol", &l.Protocol, "http")
		def(s, p+".engine", &l.Engine, defaultEngine(l))
		def(s, p+".timeouts.read_header", &l.Timeouts.ReadHeader, 10*time.Second)
		def(s, p+".timeouts.idle", &l.Timeouts.Idle, 120*time.Second)
		def(s, p+".limits.max_header_bytes", &l.Limits.MaxHeaderBytes, 65536)
		def(s, p+".limits.max_headers", &l.Limits.MaxHeaders, 100)
		def(s, p+".limits.max_uri_bytes", &l.Limits.MaxURIBytes, 8192)
		def(s, p+".limits.max_concurrent_streams", &l.Limits.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
		if l.TLS != nil {
			def(s, p+".tls.min_version", &l.TLS.MinVersion, "1.2")
			if a := l.TLS.ACME; a != nil {
				def(s, p+".tls.acme.directory", &a.Directory, LetsEncrypt)
			}
		}
		rateLimitDefaults(s, p+".rate_limit", l.RateLimit, l.Name)
		for j := range l.Routes {
			rp := index(p+".routes", j)
			rateLimitDefaults(s, rp+".rate_limit", l.Routes[j].RateLimit, l.Name+".routes["+strconv.Itoa(j)+"]")
		}
	}
	for i := range c.Pools {
		pl, p := &c.Pools[i], index("pools", i)
		def(s, p+".balance", &pl.Balance, balance.Default)
		def(s, p+".hash_key", &pl.HashKey, "client_ip")
		for j := range pl.Backends {
			def(s, index(p+".backends", j)+".weight", &pl.Backends[j].Weight, 1)
		}
		if d := pl.Discovery; d != nil && d.DNS != nil {
			dp := p + ".discovery.dns"
			def(s, dp+".type", &d.DNS.Type, "A")
			def(s, dp+".scheme", &d.DNS.Scheme, "http")
			def(s, dp+".refresh", &d.DNS.Refresh, 30*time.Second)
		}
		if hc := pl.HealthCheck; hc != nil {
			hp := p + ".health_check"
			typ := "http"
			if allTCP(pl.Backends) {
				typ = "tcp"
			}
			def(s, hp+".type", &hc.Type, typ)
			if hc.Type != "grpc" { // grpc asks a service, not a path, and passes on SERVING
				def(s, hp+".path", &hc.Path, "/health")
				def(s, hp+".expect_status", &hc.ExpectStatus, "200-399")
			}
			def(s, hp+".interval", &hc.Interval, 10*time.Second)
			def(s, hp+".timeout", &hc.Timeout, 2*time.Second)
			def(s, hp+".healthy_threshold", &hc.HealthyThreshold, 2)
			def(s, hp+".unhealthy_threshold", &hc.UnhealthyThreshold, 3)
		}
		if lr := pl.LoadReport; lr != nil {
			def(s, p+".load_report.header", &lr.Header, "endpoint-load-metrics")
		}
		if st := pl.Sticky; st != nil {
			def(s, p+".sticky.cookie", &st.Cookie, "SLUICE_AFFINITY")
		}
		ph := &pl.PassiveHealth
		def(s, p+".passive_health.consecutive_failures", &ph.ConsecutiveFailures, 5)
		def(s, p+".passive_health.ejection_time", &ph.EjectionTime, 30*time.Second)
		def(s, p+".passive_health.max_ejection_percent", &ph.MaxEjectionPercent, 50)
		r := &pl.Retries
		def(s, p+".retries.num_retries", &r.NumRetries, 2)
		if !s.given(p+".retries.retry_on", r.RetryOn != nil) {
			r.RetryOn = slices.Clone(defaultRetryOn)
		}
		def(s, p+".retries.budget_percent", &r.BudgetPercent, 20)
		def(s, p+".retries.backoff_base", &r.BackoffBase, 25*time.Millisecond)
		def(s, p+".retries.backoff_max", &r.BackoffMax, 250*time.Millisecond)
		def(s, p+".max_queue", &pl.MaxQueue, 1024)
		def(s, p+".queue_timeout", &pl.QueueTimeout, 5*time.Second)
		t := &pl.Timeouts
		def(s, p+".timeouts.connect", &t.Connect, 3*time.Second)
		def(s, p+".timeouts.response_header", &t.ResponseHeader, 30*time.Second)
		def(s, p+".timeouts.idle", &t.Idle, 90*time.Second)
	}
	if st := c.RateLimitStore; st != nil && st.Redis != nil {
		def(s, "rate_limit_store.redis.prefix", &st.Redis.Prefix, "sluice:")
		def(s, "rate_limit_store.redis.timeout", &st.Redis.Timeout, 100*time.Millisecond)
	}
	def(s, "admin.address", &c.Admin.Address, "127.0.0.1:9090")
	def(s, "access_log.path", &c.AccessLog.Path, "stdout")
	def(s, "access_log.format", &c.AccessLog.Format, "json")
	if t := c.Tracing; t != nil {
		def(s, "tracing.protocol", &t.Protocol, "grpc")
		endpoint := "127.0.0.1:4317"
		if t.Protocol == "http" {
			endpoint = "127.0.0.1:4318"
		}
		def(s, "tracing.otlp_endpoint", &t.OTLPEndpoint, endpoint)
		def(s, "tracing.sample_ratio", &t.SampleRatio, 0.01)
		def(s, "tracing.service_name", &t.ServiceName, "sluice")
	}
	def(s, "log.level", &c.Log.Level, "info")
	def(s, "log.format", &c.Log.Format, "text")
	def(s, "shutdown_timeout", &c.ShutdownTimeout, 30*time.Second)
}

// rateLimitDefaults fills a rate_limit block at p (nil: none); name is the
// limit's default name.
func rateLimitDefaults(s *source, p string, rl *RateLimit, name string) {
	if rl == nil {
		return
	}
	def(s, p+".key", &rl.Key, "client_ip")
	def(s, p+".per", &rl.Per, time.Second)
	def(s, p+".burst", &rl.Burst, rl.Rate)
	def(s, p+".name", &rl.Name, name)
	def(s, p+".max_keys", &rl.MaxKeys, 65536)
}

// defaultRetryOn is retries.retry_on when the file leaves it out.
var defaultRetryOn = []string{"connect_failure", "reset"}

// def sets *v to d unless the key at path was given.
func def[T comparable](s *source, path string, v *T, d T) {
	var zero T
	if !s.given(path, *v != zero) {
		*v = d
	}
}

// allTCP reports whether a pool's backends are all tcp:// ones, whose
// health check defaults to a plain connect.
func allTCP(bs []Backend) bool {
	for _, b := range bs {
		if !strings.HasPrefix(strings.ToLower(b.Address), "tcp://") {
			return false
		}
	}
	return len(bs) > 0
}

// defaultEngine is the engine of a listener that names none: the event
// loops wherever they serve (HTTP/1.1 in the clear or over TLS, on Linux),
// else the goroutine engine. Issue 15 chose the loops by measurement
// (docs/benchmarks.md).
func defaultEngine(l *Listener) string {
	if runtime.GOOS == "linux" && l.Protocol == "http" && !l.ProxyProtocol {
		return "loop"
	}
	return "h1"
}
