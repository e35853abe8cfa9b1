package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTCPRules: a tcp listener takes tcp:// pools and sni routes only, an
// http listener neither, and the keys that have no effect at layer 4 are
// errors at their FILE:LINE:COL.
func TestTCPRules(t *testing.T) {
	const tcpPool = "pools:\n  - name: db\n    backends: [{address: \"tcp://127.0.0.1:5432\"}]\n"
	tcpListener := func(extra string) string {
		return "listeners:\n  - address: \":5432\"\n    protocol: tcp\n    pool: db\n" + extra + tcpPool
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"valid", tcpListener("    proxy_protocol: true\n    trusted_proxies: [10.0.0.0/8]\n    routes:\n      - {sni: \"db.example.com\", pool: db}\n      - {sni: \"*.example.com\", pool: db}\n"), nil},
		{"valid pool keys", "listeners: [{address: \":5432\", protocol: tcp, pool: db}]\n" +
			"pools:\n  - name: db\n    balance: ip_hash\n    send_proxy_protocol: v2\n    retries: {num_retries: 1, retry_on: [connect_failure]}\n" +
			"    timeouts: {connect: 1s, idle: 1h}\n    max_connections_per_backend: 100\n    health_check: {interval: 2s}\n" +
			"    backends: [{address: \"tcp://127.0.0.1:5432\"}]\n", nil},
		{"http pool on a tcp listener", "listeners: [{address: \":5432\", protocol: tcp, pool: web}]\n" + pool1, []string{
			`t.yaml:2:42: backend "http://127.0.0.1:8081" is http:// but tcp listener ":5432" sends to pool "web": use tcp://host:port`}},
		{"tcp pool on an http listener", `listeners: [{address: ":8080", pool: db}]` + "\n" + tcpPool, []string{
			`t.yaml:4:26: backend "tcp://127.0.0.1:5432" is tcp:// but http listener ":8080" sends to pool "db": use http:// or https://`}},
		{"sni route on an http listener", "listeners:\n  - address: \":8080\"\n    pool: web\n    routes: [{sni: a.example.com, pool: web}]\n" + pool1, []string{
			`t.yaml:4:20: sni routes are for protocol tcp listeners, which read the server name without terminating TLS: use host on listener ":8080"`}},
		{"http route keys on a tcp listener", tcpListener("    routes:\n      - {host: a.example.com, path_prefix: /x, headers: {X-A: b}, pool: db}\n"), []string{
			`t.yaml:6:9: a route of a tcp listener needs sni: write e.g. sni: "db.example.com" or "*.example.com" (the listener's pool takes the rest)`,
			`t.yaml:6:16: host has no meaning on a tcp listener, which reads no HTTP request: route on sni, the server name of the TLS ClientHello`,
			`t.yaml:6:44: path_prefix has no meaning on a tcp listener, which reads no HTTP request: route on sni, the server name of the TLS ClientHello`,
			`t.yaml:6:48: headers has no meaning on a tcp listener, which reads no HTTP request: route on sni, the server name of the TLS ClientHello`}},

		{"bad sni", tcpListener("    routes:\n      - {sni: \"db.example.com:443\", pool: db}\n      - {sni: \"127.0.0.1\", pool: db}\n      - {sni: \"a.*.example.com\", pool: db}\n"), []string{
			`t.yaml:6:15: sni "db.example.com:443" is not a server name: write e.g. "db.example.com" or "*.example.com", without a port`,
			`t.yaml:7:15: sni "127.0.0.1" is an IP address, which TLS clients never send as a server name (RFC 6066): use a host name`,
			`t.yaml:8:15: sni "a.*.example.com" is not a server name: write e.g. "db.example.com" or "*.example.com", without a port`}},
		{"http keys on a tcp listener", tcpListener("    h2c: true\n    engine: std\n    timeouts: {read: 1s, write: 1s, read_header: 1s, idle: 1m}\n    limits: {max_header_bytes: 10, max_headers: 1, max_uri_bytes: 1, max_body_bytes: 1, max_connections: 10}\n"), []string{
			`t.yaml:5:10: h2c has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:6:13: engine has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:7:22: timeouts.read has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:7:33: timeouts.write has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:8:32: limits.max_header_bytes has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:8:49: limits.max_headers has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:8:67: limits.max_uri_bytes has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`,
			`t.yaml:8:86: limits.max_body_bytes has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`}},
		{"http keys on a tcp pool", "listeners: [{address: \":5432\", protocol: tcp, pool: db}]\n" +
			"pools:\n  - name: db\n    hash_key: \"header:X-A\"\n    sticky: {}\n    upstream_http2: true\n    upstream_tls: {insecure_skip_verify: true}\n" +
			"    timeouts: {response_header: 1s, request: 1s}\n    retries: {retry_on: [connect_failure, reset, \"502\"]}\n" +
			"    backends: [{address: \"tcp://127.0.0.1:5432\"}]\n", []string{
			`t.yaml:4:15: hash_key "header:X-A" has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: use client_ip (the default), the only key a connection has`,
			`t.yaml:5:5: sticky has no effect on a pool of tcp:// backends, which relays connections without reading HTTP (its cookie is HTTP): remove it; balance: ip_hash keeps a client on one backend`,
			`t.yaml:6:21: upstream_http2 has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: remove it`,
			`t.yaml:7:5: upstream_tls has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: remove it (sluice relays TLS untouched, or terminates it on a tcp listener with tls)`,
			`t.yaml:8:33: timeouts.response_header has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: remove it (timeouts.connect and timeouts.idle apply)`,
			`t.yaml:8:46: timeouts.request has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: remove it (timeouts.connect and timeouts.idle apply)`,
			`t.yaml:9:43: retry_on "reset" has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: only connect_failure is retried, before any byte was relayed`,
			`t.yaml:9:50: retry_on "502" has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: only connect_failure is retried, before any byte was relayed`}},
		{"grpc_web on a tcp pool", "listeners: [{address: \":5432\", protocol: tcp, pool: db}]\n" +
			"pools:\n  - name: db\n    grpc_web: true\n    backends: [{address: \"tcp://127.0.0.1:5432\"}]\n", []string{
			`t.yaml:4:15: grpc_web has no effect on a pool of tcp:// backends, which relays connections without reading HTTP: remove it`}},
		{"rate_limit on a tcp listener counts connections by client", tcpListener("    rate_limit: {rate: 10}\n    routes:\n      - {sni: a.example.com, pool: db, rate_limit: {rate: 5, key: \"header:X-A\"}}\n"), []string{
			`t.yaml:7:67: rate_limit.key "header:X-A" has no meaning on a tcp listener, which reads no request: use client_ip (the default), which counts connections by client`}},
		{"mixed pool", listener1 + "pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n" +
			"  - name: mixed\n    backends: [{address: \"tcp://127.0.0.1:1\"}, {address: \"http://127.0.0.1:2\"}]\n", []string{
			`t.yaml:6:58: pool "mixed" mixes tcp:// backends with http:// ones: a pool is either layer 4 (tcp://) or HTTP`}},
		{"send_proxy_protocol", listener1 + "pools:\n  - name: web\n    send_proxy_protocol: v3\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n" +
			"  - name: h2\n    send_proxy_protocol: v1\n    upstream_http2: true\n    backends: [{address: \"http://127.0.0.1:8082\"}]\n", []string{
			`t.yaml:4:26: send_proxy_protocol "v3" is not valid: use v1 or v2 (did you mean "v1"?)`,
			`t.yaml:7:26: send_proxy_protocol cannot go with upstream_http2: a PROXY header names one client, and an HTTP/2 connection carries the requests of many; remove one of them`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if diff := cmp.Diff(tt.want, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s\nfile:\n%s", diff, tt.yaml)
			}
		})
	}
}

// TestTCPRulesInGo: a config built in Go (no file) follows the same rules
// for the keys it sets.
func TestTCPRulesInGo(t *testing.T) {
	c := &Config{
		Listeners: []Listener{{Name: "db", Address: "127.0.0.1:0", Protocol: "tcp", Pool: "db", Engine: "std"}},
		Pools:     []Pool{{Name: "db", Backends: []Backend{{Address: "tcp://127.0.0.1:1"}}}},
	}
	c.ApplyDefaults()
	want := []string{`listeners[0].engine: engine has no effect on a tcp listener, which relays bytes without reading HTTP: remove it`}
	if diff := cmp.Diff(want, lines(c.Validate())); diff != "" {
		t.Errorf("Validate (-want +got):\n%s", diff)
	}
	c.Listeners[0].Engine = ""
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if hc := (&Pool{Backends: c.Pools[0].Backends, HealthCheck: &HealthCheck{}}); true {
		c.Pools[0].HealthCheck = hc.HealthCheck
		c.ApplyDefaults()
		if got := c.Pools[0].HealthCheck.Type; got != "tcp" {
			t.Errorf("health_check.type of a tcp:// pool = %q, want tcp", got)
		}
	}
}
