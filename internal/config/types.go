// Package config turns a sluice YAML file into a validated Config.
//
// The types here mirror the file one to one (the external contract in
// DESIGN.md). They are plain data: parsing of addresses, CIDRs and routes into
// runtime form happens once, in the packages that use them, when a snapshot is
// built. Defaults are applied in exactly one place (defaults.go), after
// decoding and before validation, so a zero value in a decoded Config always
// means "the file did not say".
package config

import (
	"net/netip"
	"net/url"
	"time"
)

// Config is a whole sluice configuration.
type Config struct {
	Listeners       []Listener    `yaml:"listeners"`
	Pools           []Pool        `yaml:"pools"`
	Admin           Admin         `yaml:"admin"`
	AccessLog       AccessLog     `yaml:"access_log"`
	Tracing         *Tracing      `yaml:"tracing"` // nil: off
	Log             Log           `yaml:"log"`
	ShutdownDelay   time.Duration `yaml:"shutdown_delay"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// EventLoops is how many event loops serve `engine: loop` listeners;
	// 0: one per CPU (GOMAXPROCS).
	EventLoops int `yaml:"event_loops"`
	// RateLimitStore shares rate limits among instances; nil: each
	// instance counts alone.
	RateLimitStore *RateLimitStore `yaml:"rate_limit_store"`

	// Path is the file the config was read from ("" for a config built from
	// flags). It is not a YAML key.
	Path string `yaml:"-"`

	// src records which keys the file gave and where; nil for a config
	// built in Go. See source.go.
	src *source
	// warnings are what Validate found that does not stop sluice; see
	// Warnings.
	warnings []string
}

// Listener is one address sluice accepts client connections on.
type Listener struct {
	Name     string `yaml:"name"`
	Address  string `yaml:"address"`
	Protocol string `yaml:"protocol"` // "http" (default) | "tcp": layer-4 balancing of raw connections
	TLS      *TLS   `yaml:"tls"`      // nil: plain HTTP
	H2C      bool   `yaml:"h2c"`      // HTTP/2 over cleartext; not with TLS
	// HTTP3 also serves HTTP/3 over QUIC on the listener's port (UDP), and
	// advertises it with Alt-Svc on HTTP/1.1 and HTTP/2 responses. Only
	// with TLS.
	HTTP3          bool             `yaml:"http3"`
	ProxyProtocol  bool             `yaml:"proxy_protocol"`
	TrustedProxies []string         `yaml:"trusted_proxies"`
	Timeouts       ListenerTimeouts `yaml:"timeouts"`
	Limits         Limits           `yaml:"limits"`
	Routes         []Route          `yaml:"routes"`
	Pool           string           `yaml:"pool"`       // default pool; "" means 404 when no route matches
	Engine         string           `yaml:"engine"`     // "loop" (default where it serves; defaultEngine): the engine on event loops | "h1": sluice's HTTP/1.1 engine | "std": net/http
	RateLimit      *RateLimit       `yaml:"rate_limit"` // every request of the listener; nil: none

	// TrustedPrefixes is TrustedProxies parsed; filled by Validate.
	TrustedPrefixes []netip.Prefix `yaml:"-"`
}

// TLS configures HTTPS on a listener (package tlsterm terminates it).
type TLS struct {
	// Certificates are chosen by SNI: an exact name, then a wildcard, else
	// the first, which is the default. At least one, unless ACME is set.
	Certificates []Certificate `yaml:"certificates"`
	// MinVersion is the lowest TLS version accepted: "1.2" (default) or
	// "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCA is a PEM file of CA certificates. When set, every client
	// must present a certificate one of them signed (mTLS); "" asks for
	// none.
	ClientCA string `yaml:"client_ca"`
	// ACME obtains and renews certificates for its domains automatically;
	// nil: none. With Certificates beside it, SNI picks among them all.
	ACME *ACME `yaml:"acme"`
}

// Certificate is one certificate/key pair in PEM files: Cert holds the
// leaf first, then any intermediates; Key its private key (ECDSA, RSA or
// Ed25519; PKCS #8, PKCS #1 or SEC 1).
type Certificate struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ACME configures certificates obtained and renewed through RFC 8555
// (package acme). One certificate covers every name in Domains; the first
// names it in logs and metrics.
type ACME struct {
	// Domains are the names the certificate covers; at least one.
	Domains []string `yaml:"domains"`
	// Email is the account's contact, for the CA's expiry notices; ""
	// registers without one.
	Email string `yaml:"email"`
	// Directory is the CA's ACME directory URL; the default is Let's
	// Encrypt's production directory.
	Directory string `yaml:"directory"`
	// CARoot is a PEM file of the certificates to trust for the ACME
	// server's own HTTPS (a private or test CA); "" trusts the system's.
	CARoot string `yaml:"ca_root"`
	// Storage is the directory (created 0700 when missing) that keeps the
	// account key and the certificates, so that a restart reuses them.
	Storage string `yaml:"storage"`
}

// LetsEncrypt is the default ACME directory: Let's Encrypt's production
// CA.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// ListenerTimeouts bound the client (downstream) side. Zero means no limit,
// except ReadHeader and Idle whose defaults are 10s and 120s.
type ListenerTimeouts struct {
	ReadHeader time.Duration `yaml:"read_header"`
	Read       time.Duration `yaml:"read"`
	Write      time.Duration `yaml:"write"`
	Idle       time.Duration `yaml:"idle"`
}

// DefaultMaxConcurrentStreams is limits.max_concurrent_streams when the
// file leaves it out (Go's and Envoy's defaults are 250 and 100).
const DefaultMaxConcurrentStreams = 250

// Limits bound what a client may send. MaxConnections and MaxBodyBytes of 0
// mean unlimited.
type Limits struct {
	MaxConnections int   `yaml:"max_connections"`
	MaxHeaderBytes int   `yaml:"max_header_bytes"`
	MaxHeaders     int   `yaml:"max_headers"`
	MaxURIBytes    int   `yaml:"max_uri_bytes"`
	MaxBodyBytes   int64 `yaml:"max_body_bytes"`
	// MaxConcurrentStreams bounds the requests one HTTP/2 or HTTP/3
	// connection has open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
}

// Route sends matching requests to a pool. All given conditions must match;
// an empty condition matches everything. On a protocol tcp listener a route
// has SNI and Pool only (SNI: the server name of the client's TLS
// ClientHello, exact or "*.example.com", read without terminating TLS); on
// an http listener it has no SNI.
type Route struct {
	Host       string            `yaml:"host"`
	PathPrefix string            `yaml:"path_prefix"`
	Headers    map[string]string `yaml:"headers"`
	SNI        string            `yaml:"sni"`
	Pool       string            `yaml:"pool"`
	RateLimit  *RateLimit        `yaml:"rate_limit"` // the requests this route matches; nil: none
}

// Pool is a set of backends that share a balancing policy and health checks.
type Pool struct {
	Name                     string        `yaml:"name"`
	Balance                  string        `yaml:"balance"`
	HashKey                  string        `yaml:"hash_key"`
	HashBalanceFactor        float64       `yaml:"hash_balance_factor"`
	Backends                 []Backend     `yaml:"backends"`
	Discovery                *Discovery    `yaml:"discovery"` // nil: the static backends only
	HealthCheck              *HealthCheck  `yaml:"health_check"`
	PassiveHealth            PassiveHealth `yaml:"passive_health"`
	Retries                  Retries       `yaml:"retries"`
	Timeouts                 PoolTimeouts  `yaml:"timeouts"`
	MaxConnectionsPerBackend int           `yaml:"max_connections_per_backend"`
	MaxQueue                 int           `yaml:"max_queue"`
	QueueTimeout             time.Duration `yaml:"queue_timeout"`
	Sticky                   *Sticky       `yaml:"sticky"`
	SlowStart                time.Duration `yaml:"slow_start"`
	UpstreamTLS              UpstreamTLS   `yaml:"upstream_tls"`
	UpstreamHTTP2            bool          `yaml:"upstream_http2"` // HTTP/2 to backends: ALPN for https://, h2c for http://
	LoadReport               *LoadReport   `yaml:"load_report"`    // backends report their own load; nil: off
	// GRPCWeb translates gRPC-Web requests (application/grpc-web and
	// -text) to gRPC for the pool's backends, and their responses back.
	GRPCWeb bool `yaml:"grpc_web"`
	// SendProxyProtocol, "v1" or "v2", writes a PROXY header with the
	// client's address first on each new backend connection; "": none.
	SendProxyProtocol string `yaml:"send_proxy_protocol"`
}

// LoadReport lets backends report their own load: in a response field in
// ORCA's text form, and on an agent port that speaks HAProxy's agent-check
// protocol, polled with the health checks.
type LoadReport struct {
	// Header is the response field that carries an ORCA report
	// (default endpoint-load-metrics); "" reads none. sluice removes it
	// from the response the client gets.
	Header string `yaml:"header"`
	// AgentPort is the TCP port of each backend's agent; 0: no agent.
	AgentPort int `yaml:"agent_port"`
}

// Backend is one upstream server as written in the file.
type Backend struct {
	Address string `yaml:"address"` // http://host:port, https://host:port or tcp://host:port
	Weight  int    `yaml:"weight"`  // default 1

	// URL is Address parsed; filled by Validate.
	URL *url.URL `yaml:"-"`
}

// Discovery finds backends at run time, beside the static ones; see
// package discovery. At least one source is set.
type Discovery struct {
	DNS  *DNSDiscovery  `yaml:"dns"`
	Etcd *EtcdDiscovery `yaml:"etcd"`
}

// DNSDiscovery re-resolves a name every Refresh (sooner when the records'
// TTL is shorter).
type DNSDiscovery struct {
	Name string `yaml:"name"`
	// Type is A, AAAA or SRV (default A).
	Type string `yaml:"type"`
	// Port of every address of an A or AAAA answer; SRV records carry
	// their own, so it must be 0 with SRV.
	Port int `yaml:"port"`
	// Scheme of the backend addresses: http (default), https or tcp.
	Scheme  string        `yaml:"scheme"`
	Refresh time.Duration `yaml:"refresh"` // default 30s
	// Resolver is the DNS server as "ip:port"; "" means the servers of
	// /etc/resolv.conf.
	Resolver string `yaml:"resolver"`
}

// EtcdDiscovery watches a key prefix: each key below it is one backend,
// its value JSON {"address": ..., "weight": N}. Keys below Prefix+"_fleet/"
// hold the fleet-wide admin state instead (see package discovery/etcd).
type EtcdDiscovery struct {
	Endpoints []string `yaml:"endpoints"`
	// Prefix ends with "/".
	Prefix string `yaml:"prefix"`
	// Username and PasswordFile authenticate to etcd; both or neither.
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	TLS          *EtcdTLS `yaml:"tls"` // nil: plain connections
}

// EtcdTLS configures TLS to etcd: CA verifies the servers (""; the system
// roots), Cert and Key are the client certificate (both or neither).
type EtcdTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// HealthCheck configures active checks. A pool without one has no active
// checks.
type HealthCheck struct {
	Type               string        `yaml:"type"` // http | tcp | grpc
	Path               string        `yaml:"path"` // http; "" with grpc
	Interval           time.Duration `yaml:"interval"`
	Timeout            time.Duration `yaml:"timeout"`
	HealthyThreshold   int           `yaml:"healthy_threshold"`
	UnhealthyThreshold int           `yaml:"unhealthy_threshold"`
	ExpectStatus       string        `yaml:"expect_status"` // http; "" with grpc
	Host               string        `yaml:"host"`
	// Service is the grpc.health.v1 service a grpc check asks about; ""
	// asks about the backend as a whole. Only with type grpc.
	Service string `yaml:"service"`

	// ExpectMin and ExpectMax are ExpectStatus parsed; filled by Validate.
	ExpectMin int `yaml:"-"`
	ExpectMax int `yaml:"-"`
}

// PassiveHealth configures outlier ejection from live traffic.
type PassiveHealth struct {
	ConsecutiveFailures int           `yaml:"consecutive_failures"`
	EjectionTime        time.Duration `yaml:"ejection_time"`
	MaxEjectionPercent  int           `yaml:"max_ejection_percent"`
}

// Retries configures the attempt loop. NumRetries is the number of tries
// after the first; 0 turns retries off.
type Retries struct {
	NumRetries    int      `yaml:"num_retries"`
	RetryOn       []string `yaml:"retry_on"`
	BudgetPercent int      `yaml:"budget_percent"`
	// BackoffBase and BackoffMax bound the wait before a retry after a
	// reset, timeout or retryable status: full jitter over
	// base×2^(retry-1), capped at max. Connect failures retry at once.
	BackoffBase time.Duration `yaml:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max"`

	// Parsed forms of RetryOn; filled by Validate.
	OnConnectFailure bool  `yaml:"-"`
	OnReset          bool  `yaml:"-"`
	OnTimeout        bool  `yaml:"-"`
	OnStatus         []int `yaml:"-"`
}

// PoolTimeouts bound the backend (upstream) side. Request of 0 means no
// total limit.
type PoolTimeouts struct {
	Connect        time.Duration `yaml:"connect"`
	ResponseHeader time.Duration `yaml:"response_header"`
	Request        time.Duration `yaml:"request"`
	Idle           time.Duration `yaml:"idle"`
}

// Sticky configures cookie affinity. Cookie defaults to SLUICE_AFFINITY;
// TTL 0 makes a session cookie. Secret keys the HMAC that names a backend
// in the cookie: give every instance of a fleet the same secret so their
// cookies agree; empty means a random secret per process.
//
// A field tagged secret:"redact" never leaves the process: the admin API's
// view of the config (PublicJSON) blanks it.
type Sticky struct {
	Cookie string        `yaml:"cookie"`
	TTL    time.Duration `yaml:"ttl"`
	Secret string        `yaml:"secret" secret:"redact"`
}

// UpstreamTLS configures TLS to https:// backends.
type UpstreamTLS struct {
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	CA                 string `yaml:"ca"`
	ServerName         string `yaml:"server_name"`
}

// RateLimit is a token bucket per key: Burst tokens at most, refilled at
// Rate per Per. Key is as hash_key (default client_ip); Burst defaults to
// Rate, Per to 1s, MaxKeys to 65536. Name identifies the limit to clients
// (RateLimit-Policy) and in the shared store; it defaults to the
// listener's name, or "LISTENER.routes[N]" for a route's.
type RateLimit struct {
	Key     string        `yaml:"key"`
	Rate    int64         `yaml:"rate"`
	Per     time.Duration `yaml:"per"`
	Burst   int64         `yaml:"burst"`
	Name    string        `yaml:"name"`
	MaxKeys int           `yaml:"max_keys"`
}

// RateLimitStore holds counts shared by every instance.
type RateLimitStore struct {
	Redis *RedisStore `yaml:"redis"`
}

// RedisStore is a Redis server that holds the shared counts. Every key
// sluice writes starts with Prefix (default "sluice:"); Timeout (default
// 100ms) bounds each call, after which the request is counted locally.
type RedisStore struct {
	Address      string        `yaml:"address"`
	PasswordFile string        `yaml:"password_file"`
	Prefix       string        `yaml:"prefix"`
	Timeout      time.Duration `yaml:"timeout"`
}

// Admin configures the admin listener.
type Admin struct {
	Address   string `yaml:"address"`
	TokenFile string `yaml:"token_file"`
	// StateFile keeps the changes made through the admin API, re-applied
	// on top of the config at every start and reload ("": none, changes
	// last until the next reload).
	StateFile string `yaml:"state_file"`
}

// AccessLog configures the per-request log.
type AccessLog struct {
	Path   string `yaml:"path"`   // "stdout" (default), "stderr" or a file path
	Format string `yaml:"format"` // json (default) | combined | off
}

// Tracing exports one OpenTelemetry span per request over OTLP. Without
// it, W3C traceparent and tracestate fields still pass to backends
// untouched.
type Tracing struct {
	// OTLPEndpoint is the collector's host:port: "127.0.0.1:4317" for
	// grpc, "127.0.0.1:4318" for http (which posts to /v1/traces on it).
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Protocol is "grpc" (default) or "http" (OTLP/HTTP, protobuf).
	Protocol string `yaml:"protocol"`
	// SampleRatio is the share of requests without a sampled parent that
	// are recorded (0 to 1, default 0.01); a request whose traceparent says
	// sampled is always recorded, one that says not sampled never.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name of the spans (default "sluice").
	ServiceName string `yaml:"service_name"`
}

// Log configures the process log.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text (default) | json
}
