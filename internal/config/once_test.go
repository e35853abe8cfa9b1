package config

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMaxConnectionsPerBackendOnce: a negative max_connections_per_backend
// is one problem, reported once (it used to be reported twice, by two
// checks of the same field), in a file and in a config built in Go.
func TestMaxConnectionsPerBackendOnce(t *testing.T) {
	yaml := listener1 + "pools: [{name: web, backends: [{address: \"http://127.0.0.1:8081\"}], max_connections_per_backend: -1}]\n"
	_, err := Parse("t.yaml", []byte(yaml))
	want := []string{"t.yaml:2:98: max_connections_per_backend must be 0 (no limit) or more, got -1"}
	if diff := cmp.Diff(want, lines(err)); diff != "" {
		t.Errorf("Parse errors (-want +got):\n%s", diff)
	}

	c := &Config{
		Listeners: []Listener{{Address: ":8080", Pool: "web"}},
		Pools:     []Pool{{Name: "web", Backends: []Backend{{Address: "http://127.0.0.1:8081"}}, MaxConnectionsPerBackend: -1}},
	}
	c.ApplyDefaults()
	var errs Errors
	if !errors.As(c.Validate(), &errs) {
		t.Fatalf("Validate() = %v, want Errors", c.Validate())
	}
	wantErrs := Errors{{File: "pools[0].max_connections_per_backend", Path: "pools[0].max_connections_per_backend",
		Msg: "max_connections_per_backend must be 0 (no limit) or more, got -1"}}
	if diff := cmp.Diff(wantErrs, errs); diff != "" {
		t.Errorf("Validate() errors (-want +got):\n%s", diff)
	}
}

// TestOneErrorPerProblem checks that a config with one bad field gets
// exactly one error, at that field's FILE:LINE:COL: no field is checked
// twice, whether twice by validation, or once when decoding (a wrong type,
// a misspelt key) and again by validation on the zero value left behind,
// or once for itself and again for a key that depends on it.
func TestOneErrorPerProblem(t *testing.T) {
	tests := []struct {
		at   string // where the line goes: "listener", "pool" or "top"
		line string // YAML, indented by the test; "\n" starts a key of the same block
		want string
	}{
		// Listeners.
		{"listener", "timeouts: {read_header: -1s}", `t.yaml:4:29: read_header must be 0s (no limit) or more, got -1s`},
		{"listener", "timeouts: {idle: 10}", `t.yaml:4:22: idle: 10 has no unit: write a duration such as "10s" or "10ms"`},
		{"listener", "limits: {max_connections: -1}", `t.yaml:4:31: max_connections must be 0 (no limit) or more, got -1`},
		{"listener", "limits: {max_header_bytes: 0}", `t.yaml:4:32: max_header_bytes must be 1 or more, got 0`},
		{"listener", "limits: {max_body_bytes: -1}", `t.yaml:4:30: max_body_bytes must be 0 (no limit) or more, got -1`},
		{"listener", "limits: {max_headers: \"100\"}", `t.yaml:4:27: max_headers must be a whole number, not "100"`},
		{"listener", "engine: h2", `t.yaml:4:13: engine "h2" is not valid: use h1, std or loop (did you mean "h1"?)`},
		{"listener", "engine: loop\n    proxy_protocol: true", `t.yaml:5:21: engine: loop does not read the PROXY protocol yet: use engine: h1 on this listener`},
		{"listener", "protocol: udp", `t.yaml:4:15: protocol "udp" is not valid: use http or tcp`},
		{"listener", "protocol: tcp", `t.yaml:7:26: backend "http://127.0.0.1:8081" is http:// but tcp listener ":8080" sends to pool "web": use tcp://host:port`},
		{"listener", "tls: {acme: {domains: [example.com]}}", `t.yaml:4:11: tls.acme.storage is empty: give a directory for the account key and certificates, e.g. /var/lib/sluice/acme`},
		{"listener", "tls: {}", `t.yaml:4:5: tls has no certificates: add certificates: [{cert: FILE, key: FILE}] (the first is the default)`},
		{"listener", "tls: {certificates: []}", `t.yaml:4:11: tls has no certificates: add certificates: [{cert: FILE, key: FILE}] (the first is the default)`},
		{"listener", "tls: {acme: {storage: acme}, min_version: 1.3}", `t.yaml:4:11: tls.acme.domains is empty: list the names to obtain a certificate for, e.g. ["example.com", "www.example.com"]`},
		{"listener", "trusted_proxies: [bogus]", `t.yaml:4:23: trusted proxy "bogus" is not a CIDR or an IP address: write e.g. "10.0.0.0/8" or "192.0.2.1"`},
		{"listener", "routes: [{path_prefix: /a, pool: wbe}]", `t.yaml:4:38: pool "wbe" is not defined under pools (did you mean "web"?)`},
		// Pools. A wrong type or a misspelt key is decoding's to report; validation
		// stays quiet about the zero value left behind.
		{"pool", "max_connections_per_backend: -1", `t.yaml:7:34: max_connections_per_backend must be 0 (no limit) or more, got -1`},
		{"pool", "max_connections_per_backend: \"8\"", `t.yaml:7:34: max_connections_per_backend must be a whole number, not "8"`},
		{"pool", "max_connections_per_backend: 1.5", `t.yaml:7:34: max_connections_per_backend must be a whole number, not the number 1.5`},
		{"pool", "max_conections_per_backend: -1", `t.yaml:7:5: unknown key "max_conections_per_backend" in pool (did you mean "max_connections_per_backend"?)`},
		{"pool", "max_queue: -1", `t.yaml:7:16: max_queue must be 0 (503 at once when every backend is full) or more, got -1`},
		{"pool", "queue_timeout: -1s", `t.yaml:7:20: queue_timeout must be 0s or more, got -1s`},
		// The policy and the keys whose meaning depends on it (package balance
		// holds the table): an unknown policy is the only problem reported, and
		// a bad value is reported as such, not also as having no effect.
		{"pool", "balance: p2cc", `t.yaml:7:14: balance "p2cc" is not valid: use round_robin, random, least_requests, p2c, consistent_hash or ip_hash (did you mean "p2c"?)`},
		{"pool", "balance: [p2c]", `t.yaml:7:14: balance must be a string, not a list`},
		{"pool", "hash_key: \"header:\"", `t.yaml:7:15: hash_key "header:" is not valid: use client_ip, path, header:NAME, cookie:NAME or query:NAME`},
		{"pool", "hash_balance_factor: 0.5", `t.yaml:7:26: hash_balance_factor 0.5 is out of range: use 0 (off) or a factor from 1 to 100, e.g. 1.25`},
		{"pool", "hash_balance_factor: 101", `t.yaml:7:26: hash_balance_factor 101 is out of range: use 0 (off) or a factor from 1 to 100, e.g. 1.25`},
		{"pool", "hash_balance_factor: 1.25", `t.yaml:7:26: hash_balance_factor has no effect with balance "round_robin": remove it, or set balance to consistent_hash or ip_hash`},
		{"pool", "balance: p2c\n    hash_balance_factor: 2", `t.yaml:8:26: hash_balance_factor has no effect with balance "p2c": remove it, or set balance to consistent_hash or ip_hash`},
		{"pool", "balance: consistent_hash\n    slow_start: 30s", `t.yaml:8:17: slow_start has no effect with balance "consistent_hash", which keeps each key on its backend: remove it, or set balance to round_robin, random, least_requests or p2c`},
		{"pool", "slow_start: -1s", `t.yaml:7:17: slow_start must be 0s (off) or more, got -1s`},
		{"pool", "balance: ip_hash\n    slow_start: -1s", `t.yaml:8:17: slow_start must be 0s (off) or more, got -1s`},
		{"pool", "balance: ip_hsah\n    slow_start: 30s\n    hash_balance_factor: 1.5", `t.yaml:7:14: balance "ip_hsah" is not valid: use round_robin, random, least_requests, p2c, consistent_hash or ip_hash (did you mean "ip_hash"?)`},
		// Sticky, retries, health.
		{"pool", "sticky: {ttl: -1s}", `t.yaml:7:19: ttl must be 0s (a session cookie) or more, got -1s`},
		{"pool", "sticky: {cookie: \"a b\"}", `t.yaml:7:22: sticky cookie name "a b" is not a valid cookie name: use letters, digits and -_.`},
		{"pool", "retries: {num_retries: 11}", `t.yaml:7:28: num_retries 11 is out of range: use 0 (off) to 10`},
		{"pool", "retries: {budget_percent: -1}", `t.yaml:7:31: budget_percent -1 is out of range: use 0 to 100`},
		{"pool", "retries: {backoff_base: -1ms}", `t.yaml:7:29: backoff_base must be 0s or more, got -1ms`},
		{"pool", "retries: {backoff_max: -1ms}", `t.yaml:7:28: backoff_max must be 0s or more, got -1ms`},
		{"pool", "retries: {backoff_base: 1s, backoff_max: 500ms}", `t.yaml:7:46: backoff_max 500ms is shorter than backoff_base 1s: raise it, or lower backoff_base`},
		{"pool", "retries: {backoff_max: 1 s}", `t.yaml:7:28: backoff_max: bad duration "1 s": write a Go duration such as "500ms", "10s" or "1m30s"`},
		{"pool", "retries: {retry_on: [reset, \"404\"]}", `t.yaml:7:33: retry_on "404" is not valid: use connect_failure, reset, timeout or a status from "500" to "599"`},
		{"pool", "passive_health: {ejection_time: 0s}", `t.yaml:7:37: ejection_time must be more than 0, got 0s`},
		{"pool", "passive_health: {max_ejection_percent: 101}", `t.yaml:7:44: max_ejection_percent 101 is out of range: use 0 to 100`},
		{"pool", "passive_health: {consecutive_failures: 0}", `t.yaml:7:44: consecutive_failures must be 1 or more, got 0`},
		{"pool", "timeouts: {request: -1s}", `t.yaml:7:25: request must be 0s (no limit) or more, got -1s`},
		{"pool", "health_check: {interval: 0s}", `t.yaml:7:30: interval must be more than 0, got 0s: remove the health_check block to turn checks off`},
		{"pool", "health_check: {timeout: 0s}", `t.yaml:7:29: timeout must be more than 0, got 0s`},
		{"pool", "health_check: {interval: 1s, timeout: 2s}", `t.yaml:7:43: health_check.timeout 2s is longer than its interval 1s: shorten it`},
		{"pool", "health_check: {interval: 10}", `t.yaml:7:30: interval: 10 has no unit: write a duration such as "10s" or "10ms"`},
		{"pool", "health_check: {healthy_threshold: 0}", `t.yaml:7:39: healthy_threshold must be 1 or more, got 0`},
		{"pool", "health_check: {expect_status: 600}", `t.yaml:7:35: expect_status "600" is not a status or a range: write e.g. "200" or "200-399" (100 to 599)`},
		{"pool", "health_check: {type: icmp}", `t.yaml:7:26: health_check.type "icmp" is not valid: use http, tcp or grpc`},
		{"pool", "health_check: {type: grpc}", `t.yaml:7:26: health_check.type grpc needs HTTP/2 to the backends: set upstream_http2: true on pool "web", or use type http or tcp`},
		{"pool", "upstream_http2: true\n    health_check: {type: grpc, path: /health}", `t.yaml:8:38: health_check.path has no effect with type grpc: remove it (name a grpc.health.v1 service with service)`},
		{"pool", "upstream_http2: true\n    health_check: {type: grpc, expect_status: 200}", `t.yaml:8:47: health_check.expect_status has no effect with type grpc, which passes on SERVING: remove it`},
		{"pool", "health_check: {service: web.v1.Web}", `t.yaml:7:29: health_check.service has no effect with type "http": remove it, or set type: grpc`},
		{"pool", "grpc_web: true", `t.yaml:7:15: grpc_web needs HTTP/2 to the backends, which gRPC servers speak: set upstream_http2: true on pool "web"`},
		{"pool", "upstream_tls: {ca: /nonexistent/ca.pem}", `t.yaml:7:24: upstream_tls.ca: stat /nonexistent/ca.pem: no such file or directory`},
		// The top level.
		{"top", "event_loops: 2000", `t.yaml:7:14: event_loops 2000 is out of range: use 0 (one per CPU) to 1024`},
		{"top", "shutdown_delay: -1s", `t.yaml:7:17: shutdown_delay must be 0s or more, got -1s`},
		{"top", "shutdown_timeout: 1m30", `t.yaml:7:19: shutdown_timeout: bad duration "1m30": write a Go duration such as "500ms", "10s" or "1m30s"`},
		{"top", "log: {level: verbose}", `t.yaml:7:14: log.level "verbose" is not valid: use debug, info, warn or error`},
		{"top", "access_log: {format: jsno}", `t.yaml:7:22: access_log.format "jsno" is not valid: use json, combined or off (did you mean "json"?)`},
		{"top", "admin: {address: \"0.0.0.0:9090\"}", `t.yaml:7:18: admin address "0.0.0.0:9090" is not loopback: set admin.token_file`},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			yaml := oneProblem(tt.at, tt.line)
			_, err := Parse("t.yaml", []byte(yaml))
			if diff := cmp.Diff([]string{tt.want}, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s\nfile:\n%s", diff, yaml)
			}
		})
	}
}

// oneProblem returns a valid config with line added to its only listener
// (at line 4), its only pool (at line 7) or its top level (at line 7).
func oneProblem(at, line string) string {
	var l, p, top string
	switch at {
	case "listener":
		l = "    " + line + "\n"
	case "pool":
		p = "    " + line + "\n"
	case "top":
		top = line + "\n"
	default:
		panic("oneProblem: bad place " + at)
	}
	return "listeners:\n  - address: \":8080\"\n    pool: web\n" + l +
		"pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n" + p +
		top
}
