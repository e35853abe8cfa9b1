package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/balance"
)

// listener1 and pool1 are one-line valid listeners and pools sections.
const (
	listener1 = `listeners: [{address: ":8080", pool: web}]` + "\n"
	pool1     = `pools: [{name: web, backends: [{address: "http://127.0.0.1:8081"}]}]` + "\n"
)

// TestParseErrors checks each class of problem is reported, with the
// position of the offending key or value, and nothing else.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		// The file as a whole.
		{"empty file", "", []string{
			"t.yaml:1:1: the config is empty: it needs at least listeners and pools"}},
		{"only comments", "# nothing yet\n", []string{
			"t.yaml:1:1: the config is empty: it needs at least listeners and pools"}},
		{"a list", "- listeners\n", []string{
			"t.yaml:1:1: the config must be a mapping with keys such as listeners and pools, not a list"}},
		{"a scalar", "\nhello\n", []string{
			`t.yaml:2:1: the config must be a mapping with keys such as listeners and pools, not "hello"`}},
		{"yaml syntax", listener1 + "pools: [\n", []string{
			"t.yaml:2:1: invalid YAML: did not find expected node content"}},
		{"tab indent", "listeners:\n\t- address: x\n", []string{
			"t.yaml:2:1: tabs are not allowed, indent with spaces"}},
		{"tabs after spaces", "listeners:\n  - name: a\n  \taddress: x\n\t# a comment\n", []string{
			"t.yaml:3:3: tabs are not allowed, indent with spaces"}},
		{"two documents", minimal + "---\nlog: {level: debug}\n", []string{
			"t.yaml:3:1: invalid YAML: a second YAML document starts here: put the whole config in one document"}},
		{"empty mapping", "{}\n", []string{
			"t.yaml:1:1: no listeners: add at least one under listeners",
			"t.yaml:1:1: no pools: add at least one under pools"}},
		{"empty lists", "listeners: []\npools: []\n", []string{
			"t.yaml:1:1: no listeners: add at least one under listeners",
			"t.yaml:2:1: no pools: add at least one under pools"}},

		// Keys.
		{"unknown key, did you mean", "listeners:\n  - adress: \":8080\"\n    pool: web\n" + pool1, []string{
			`t.yaml:2:5: unknown key "adress" in listener (did you mean "address"?)`}},
		{"unknown top-level key, did you mean", minimal + "listner: []\n", []string{
			`t.yaml:3:1: unknown key "listner" at the top level (did you mean "listeners"?)`}},
		{"unknown key, no close match", minimal + "colour: blue\n", []string{
			`t.yaml:3:1: unknown key "colour" at the top level`}},
		{"x- keys at the top level are for anchors", minimal + "x-common: {anything: 1}\n", nil},
		{"x- keys elsewhere are unknown", minimal + "log: {x-level: debug}\n", []string{
			`t.yaml:3:7: unknown key "x-level" in log`}},
		{"duplicate key", listener1 + "pools:\n  - name: web\n    name: www\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n", []string{
			`t.yaml:4:5: duplicate key "name" in pool (first at line 3): remove one`}},
		{"duplicate top-level key", minimal + "log: {level: info}\nlog: {level: debug}\n", []string{
			`t.yaml:4:1: duplicate key "log" at the top level (first at line 3): remove one`}},
		{"duplicate header", listener1[:len(listener1)-3] + `, routes: [{headers: {X-A: "1", X-A: "2"}, pool: web}]}]` + "\n" + pool1, []string{
			`t.yaml:1:73: duplicate key "X-A" in headers (first at line 1): remove one`}},
		{"key that is not a word", minimal + "[a]: 1\n", []string{
			"t.yaml:3:1: a key must be a plain word, not a list"}},

		// Types.
		{"string for an integer", listener1 + "pools:\n  - name: web\n    backends:\n      - address: \"http://127.0.0.1:8081\"\n        weight: \"3\"\n", []string{
			`t.yaml:6:17: weight must be a whole number, not "3"`}},
		{"float for an integer", listener1 + "pools:\n  - name: web\n    backends:\n      - address: \"http://127.0.0.1:8081\"\n        weight: 1.5\n", []string{
			`t.yaml:6:17: weight must be a whole number, not the number 1.5`}},
		{"bad durations", "listeners:\n  - address: \":8080\"\n    pool: web\n    timeouts: {idle: 10 s, read: 10}\n" + pool1, []string{
			`t.yaml:4:22: idle: bad duration "10 s": write a Go duration such as "500ms", "10s" or "1m30s"`,
			`t.yaml:4:34: read: 10 has no unit: write a duration such as "10s" or "10ms"`}},
		{"mapping for a list", listener1 + `pools: [{name: web, backends: {address: "http://127.0.0.1:8081"}}]` + "\n", []string{
			`t.yaml:2:31: backends must be a list, not a mapping`}},
		{"list for a mapping", minimal + "admin: [127.0.0.1:9090]\n", []string{
			`t.yaml:3:8: admin must be a mapping of keys, not a list`}},
		{"scalar for a list item", listener1 + "pools: [web]\n", []string{
			`t.yaml:2:9: pools[0] must be a mapping of keys, not "web"`}},
		{"yes is not a boolean", listener1[:len(listener1)-3] + ", h2c: yes}]\n" + pool1, []string{
			`t.yaml:1:48: h2c must be true or false, not "yes"`}},
		{"quoted boolean", listener1[:len(listener1)-3] + `, proxy_protocol: "false"}]` + "\n" + pool1, []string{
			`t.yaml:1:59: proxy_protocol must be true or false, not "false"`}},
		{"list for a string", listener1 + "pools: [{name: [web], backends: [{address: \"http://127.0.0.1:8081\"}]}]\n", []string{
			`t.yaml:2:16: name must be a string, not a list`}},
		{"key without a value", listener1 + "pools:\n  - name:\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n", []string{
			`t.yaml:3:5: name has no value: give one or remove the key`}},
		{"too big for an integer", listener1 + "pools: [{name: web, backends: [{address: \"http://127.0.0.1:8081\", weight: 99999999999999999999}]}]\n", []string{
			`t.yaml:2:75: weight must be a whole number, not the number 99999999999999999999`}},

		// Listeners.
		{"duplicate listener names and addresses", "listeners:\n" +
			"  - {name: a, address: \":8080\", pool: web}\n" +
			"  - {name: a, address: \":8080\", pool: web}\n" +
			"  - {address: \":8081\", pool: web}\n" +
			"  - {address: \":8081\", pool: web}\n" + pool1, []string{
			`t.yaml:3:12: duplicate listener name "a" (first at line 2): names must be unique`,
			`t.yaml:3:24: duplicate listener address ":8080" (first at line 2): each listener needs its own`,
			`t.yaml:5:15: duplicate listener address ":8081" (first at line 4): each listener needs its own`}},
		{"bad listener addresses", "listeners:\n" +
			"  - {address: \"8080\", pool: web}\n" +
			"  - {address: \":99999\", pool: web}\n" +
			"  - {address: \"bad host:80\", pool: web}\n" + pool1, []string{
			`t.yaml:2:15: address "8080" is not host:port: write e.g. ":8080" or "127.0.0.1:8080"`,
			`t.yaml:3:15: address ":99999" has a bad port "99999": use 0 to 65535`,
			`t.yaml:4:15: address "bad host:80" has a bad host "bad host": use an IP address or a host name`}},
		{"listener without an address", "listeners: [{pool: web}]\n" + pool1, []string{
			`t.yaml:1:13: listener needs an address, e.g. ":8080"`}},
		{"unknown pool, did you mean", `listeners: [{address: ":8080", pool: wbe}]` + "\n" + pool1, []string{
			`t.yaml:1:38: pool "wbe" is not defined under pools (did you mean "web"?)`}},
		{"bad protocol", listener1[:len(listener1)-3] + ", protocol: udp}]\n" + pool1, []string{
			`t.yaml:1:53: protocol "udp" is not valid: use http or tcp`}},
		{"bad trusted proxies", listener1[:len(listener1)-3] + `, trusted_proxies: [10.0.0.0/8, 192.0.2.1, "::1", 10.0.0.0/33, bogus]}]` + "\n" + pool1, []string{
			`t.yaml:1:91: trusted proxy "10.0.0.0/33" is not a CIDR or an IP address: write e.g. "10.0.0.0/8" or "192.0.2.1"`,
			`t.yaml:1:104: trusted proxy "bogus" is not a CIDR or an IP address: write e.g. "10.0.0.0/8" or "192.0.2.1"`}},
		{"limits", listener1[:len(listener1)-3] + ", limits: {max_uri_bytes: 0, max_headers: 0, max_body_bytes: -1, max_connections: -1}}]\n" + pool1, []string{
			`t.yaml:1:67: max_uri_bytes must be 1 or more, got 0`,
			`t.yaml:1:83: max_headers must be 1 or more, got 0`,
			`t.yaml:1:102: max_body_bytes must be 0 (no limit) or more, got -1`,
			`t.yaml:1:123: max_connections must be 0 (no limit) or more, got -1`}},
		{"routes", "listeners:\n  - address: \":8080\"\n    routes:\n" +
			"      - {path_prefix: /api}\n" +
			"      - {host: \"api.example.com:443\", path_prefix: api, headers: {\"X Bad\": \"1\"}, pool: web}\n" +
			"      - {host: \"*.example.com\", pool: web}\n" + pool1, []string{
			`t.yaml:4:9: route needs a pool`,
			`t.yaml:5:16: route host "api.example.com:443" is not a host name: write e.g. "api.example.com" or "*.example.com", without a port`,
			`t.yaml:5:52: path_prefix "api" must start with "/"`,
			`t.yaml:5:67: "X Bad" is not a valid header name`}},

		// Pools.
		{"pool names", listener1 + "pools:\n" +
			"  - backends: [{address: \"http://127.0.0.1:8081\"}]\n" +
			"  - name: web\n" +
			"  - name: web\n" +
			"    backends: [{address: \"http://127.0.0.1:8082\"}]\n", []string{
			`t.yaml:3:5: pool needs a name`,
			`t.yaml:4:5: pool "web" has no backends: add at least one under backends`,
			`t.yaml:5:11: duplicate pool name "web" (first at line 4): names must be unique`}},
		{"backends", listener1 + "pools:\n  - name: web\n    backends:\n" +
			"      - address: \"ftp://a:21\"\n" +
			"      - address: \"http://a\"\n" +
			"      - address: \"http://a:80/x\"\n" +
			"      - {address: \"http://127.0.0.1:8081\", weight: 0}\n" +
			"      - {address: \"http://127.0.0.1:8081\", weight: 1001}\n" +
			"      - address: \"tcp://10.0.0.1:5432\"\n", []string{
			`t.yaml:5:18: backend address "ftp://a:21" has scheme "ftp": use http, https or tcp`,
			`t.yaml:6:18: backend address "http://a" has no port: add one, e.g. "http://a:8080"`,
			`t.yaml:7:18: backend address "http://a:80/x" has a path or query: remove it (sluice forwards the client's path unchanged)`,
			`t.yaml:8:52: weight 0 is out of range: use 1 to 1000`,
			`t.yaml:9:19: duplicate backend "http://127.0.0.1:8081" in pool "web" (first at line 8): remove one, or raise its weight`,
			`t.yaml:9:52: weight 1001 is out of range: use 1 to 1000`,
			`t.yaml:10:18: backend "tcp://10.0.0.1:5432" is tcp:// but http listener ":8080" sends to pool "web": use http:// or https://`}},
		{"balance and hash_key", listener1 + "pools:\n" +
			"  - {name: web, balance: round_robbin, hash_key: \"header:\", backends: [{address: \"http://127.0.0.1:8081\"}]}\n" +
			"  - {name: two, balance: p2c, hash_key: \"cookie:sid\", backends: [{address: \"http://127.0.0.1:8081\"}]}\n", []string{
			`t.yaml:3:26: balance "round_robbin" is not valid: use round_robin, random, least_requests, p2c, consistent_hash or ip_hash (did you mean "round_robin"?)`,
			`t.yaml:3:50: hash_key "header:" is not valid: use client_ip, path, header:NAME, cookie:NAME or query:NAME`}},
		{"health checks", listener1 + "pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n" +
			"    health_check:\n" +
			"      type: icmp\n" +
			"      path: health\n" +
			"      interval: 0s\n" +
			"      healthy_threshold: 0\n" +
			"      expect_status: \"200-99\"\n" +
			"  - {name: two, backends: [{address: \"http://127.0.0.1:8081\"}], health_check: {interval: 1s, timeout: 2s, expect_status: 600}}\n", []string{
			`t.yaml:6:13: health_check.type "icmp" is not valid: use http, tcp or grpc`,
			`t.yaml:7:13: health_check.path "health" must start with "/"`,
			`t.yaml:8:17: interval must be more than 0, got 0s: remove the health_check block to turn checks off`,
			`t.yaml:9:26: healthy_threshold must be 1 or more, got 0`,
			`t.yaml:10:22: expect_status "200-99" is not a status or a range: write e.g. "200" or "200-399" (100 to 599)`,
			`t.yaml:11:103: health_check.timeout 2s is longer than its interval 1s: shorten it`,
			`t.yaml:11:122: expect_status "600" is not a status or a range: write e.g. "200" or "200-399" (100 to 599)`}},
		{"retries and passive health", listener1 + "pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n" +
			"    retries: {num_retries: 11, retry_on: [reset, \"502\", 404, gateway_error], budget_percent: 101}\n" +
			"    passive_health: {consecutive_failures: 0, max_ejection_percent: -1, ejection_time: 0s}\n", []string{
			`t.yaml:5:28: num_retries 11 is out of range: use 0 (off) to 10`,
			`t.yaml:5:57: retry_on "404" is not valid: use connect_failure, reset, timeout or a status from "500" to "599"`,
			`t.yaml:5:62: retry_on "gateway_error" is not valid: use connect_failure, reset, timeout or a status from "500" to "599"`,
			`t.yaml:5:94: budget_percent 101 is out of range: use 0 to 100`,
			`t.yaml:6:44: consecutive_failures must be 1 or more, got 0`,
			`t.yaml:6:69: max_ejection_percent -1 is out of range: use 0 to 100`,
			`t.yaml:6:88: ejection_time must be more than 0, got 0s`}},
		{"negative durations", "listeners: [{address: \":8080\", pool: web, timeouts: {write: -1s}}]\n" +
			"pools: [{name: web, backends: [{address: \"http://127.0.0.1:8081\"}], timeouts: {connect: -1ms}, slow_start: -1s}]\n" +
			"shutdown_delay: -5s\n", []string{
			`t.yaml:1:61: write must be 0s (no limit) or more, got -1s`,
			`t.yaml:2:89: connect must be 0s (no limit) or more, got -1ms`,
			`t.yaml:2:108: slow_start must be 0s (off) or more, got -1s`,
			`t.yaml:3:17: shutdown_delay must be 0s or more, got -5s`}},
		{"upstream ca", listener1 + `pools: [{name: web, backends: [{address: "https://10.0.0.1:443"}], upstream_tls: {ca: /nonexistent/ca.pem}}]` + "\n", []string{
			`t.yaml:2:87: upstream_tls.ca: stat /nonexistent/ca.pem: no such file or directory`}},

		// The rest.
		{"logs", minimal + "access_log: {path: \"\", format: jsno}\nlog: {level: verbose, format: xml}\n", []string{
			`t.yaml:3:20: access_log.path is empty: use stdout, stderr or a file path`,
			`t.yaml:3:32: access_log.format "jsno" is not valid: use json, combined or off (did you mean "json"?)`,
			`t.yaml:4:14: log.level "verbose" is not valid: use debug, info, warn or error`,
			`t.yaml:4:31: log.format "xml" is not valid: use text or json`}},
		{"tracing", minimal + "tracing: {otlp_endpoint: collector, protocol: thrift, sample_ratio: 1.5, service_name: \" \"}\n", []string{
			`t.yaml:3:26: tracing.otlp_endpoint "collector" is not the collector's host:port: write e.g. "127.0.0.1:4317" (no scheme, no path)`,
			`t.yaml:3:47: tracing.protocol "thrift" is not valid: use grpc or http`,
			"t.yaml:3:69: sample_ratio 1.5 is out of range: use 0 (only requests whose parent is sampled) to 1 (every request)",
			`t.yaml:3:88: tracing.service_name is empty: name the service, e.g. "sluice"`}},
		{"tracing endpoint without a host", minimal + "tracing: {otlp_endpoint: \":4317\", sample_ratio: -0.1}\n", []string{
			`t.yaml:3:26: tracing.otlp_endpoint ":4317" is not the collector's host:port: write e.g. "127.0.0.1:4317" (no scheme, no path)`,
			"t.yaml:3:49: sample_ratio -0.1 is out of range: use 0 (only requests whose parent is sampled) to 1 (every request)"}},
		{"tracing with defaults", minimal + "tracing: {}\n", nil},
		{"max_concurrent_streams", "listeners:\n  - {address: \":8080\", pool: web, h2c: true, limits: {max_concurrent_streams: 0}}\n" +
			"  - {address: \":8081\", pool: web, limits: {max_concurrent_streams: 16}}\n" +
			"  - {address: \":8082\", pool: web, h2c: true, limits: {max_concurrent_streams: 16}}\n" + pool1, []string{
			"t.yaml:2:79: max_concurrent_streams 0 is out of range: use 1 to 1048576",
			"t.yaml:3:68: max_concurrent_streams has no effect on a listener without tls or h2c, which serves HTTP/1.1 only: remove it, or add h2c: true"}},
		{"admin address", minimal + "admin: {address: localhost}\n", []string{
			`t.yaml:3:18: admin address "localhost" is not host:port: write e.g. ":8080" or "127.0.0.1:8080"`}},
		{"state_file directory", minimal + "admin: {state_file: /nonexistent/sluice/state.json}\n", []string{
			`t.yaml:3:21: admin.state_file: directory "/nonexistent/sluice" does not exist: create it (writable by sluice only) or choose another path`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tt.yaml))
			if diff := cmp.Diff(tt.want, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s\nfile:\n%s", diff, tt.yaml)
			}
			if (err == nil) != (c != nil) {
				t.Errorf("Parse = %v, %v: want a config or an error", c, err)
			}
		})
	}
}

// TestManyProblems checks every problem in a file is reported, in file
// order, and a mistake is reported once (the misspelt address is not also
// "missing"; the bad backends list does not also make the pool empty).
func TestManyProblems(t *testing.T) {
	_, err := Parse("sluice.yaml", []byte(`listeners:
  - name: public
    adress: ":8080"
    pool: web
    timeouts: {idle: 2 minutes}
pools:
  - name: web
    balance: p2c
    backends: {address: "http://127.0.0.1:8081"}
  - name: api
    backends: [{address: "http://127.0.0.1:8082", weight: 0}]
    retries: {num_retries: 0, retry_on: [timeout, "599"]}
admin: {address: "0.0.0.0:9090"}
log: {level: infoo}
`))
	want := []string{
		`sluice.yaml:3:5: unknown key "adress" in listener (did you mean "address"?)`,
		`sluice.yaml:5:22: idle: bad duration "2 minutes": write a Go duration such as "500ms", "10s" or "1m30s"`,
		`sluice.yaml:9:15: backends must be a list, not a mapping`,
		`sluice.yaml:11:59: weight 0 is out of range: use 1 to 1000`,
		`sluice.yaml:13:18: admin address "0.0.0.0:9090" is not loopback: set admin.token_file`,
		`sluice.yaml:14:14: log.level "infoo" is not valid: use debug, info, warn or error (did you mean "info"?)`,
	}
	if diff := cmp.Diff(want, lines(err)); diff != "" {
		t.Errorf("Parse errors (-want +got):\n%s", diff)
	}
}

// TestNotSupportedYet checks every key of the notSupportedYet table is an
// error when used, at the key, and every policy package balance implements
// is accepted with the other keys at their defaults.
func TestNotSupportedYet(t *testing.T) {
	listener := func(extra string) string {
		return "listeners:\n  - address: \":8080\"\n    pool: web\n    " + extra + "\n" + pool1
	}
	pool := func(extra string) string {
		return listener1 + "pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n    " + extra + "\n"
	}
	tests := []struct {
		key  string // as in notSupportedYet
		yaml string
		want string
	}{}
	tested := map[string]bool{}
	for _, tt := range tests {
		tested[tt.key] = true
		t.Run(tt.key, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if diff := cmp.Diff([]string{tt.want}, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s", diff)
			}
		})
	}
	for _, ns := range notSupportedYet {
		if !tested[ns.key] {
			t.Errorf("notSupportedYet key %q has no test", ns.key)
		}
	}
	for _, b := range balance.Names(nil) {
		t.Run("balance "+b, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(pool("balance: "+b)))
			var want []string
			if diff := cmp.Diff(want, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("defaults written out", func(t *testing.T) {
		for _, yaml := range []string{
			listener("protocol: http\n    h2c: false\n    proxy_protocol: false\n    engine: std\n    limits: {max_connections: 0}"),
			pool("slow_start: 0s\n    upstream_http2: false\n    hash_balance_factor: 0\n    max_connections_per_backend: 0"),
		} {
			if _, err := Parse("t.yaml", []byte(yaml)); err != nil {
				t.Errorf("Parse: %v\nfile:\n%s", err, yaml)
			}
		}
	})
}

// TestValidateGoConfig checks a config built in Go (the quick form) names
// problems by field path.
func TestValidateGoConfig(t *testing.T) {
	c := &Config{
		Listeners: []Listener{{Name: "default", Address: ":8080", Pool: "default"}},
		Pools:     []Pool{{Name: "default", Balance: "p2c", Backends: []Backend{{Address: "x"}}}},
		Admin:     Admin{Address: "0.0.0.0:9090"},
	}
	c.ApplyDefaults()
	err := c.Validate()
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate() = %v, want Errors", err)
	}
	want := Errors{
		{File: "pools[0].backends[0].address", Path: "pools[0].backends[0].address", Msg: `bad backend address "x": write scheme://host:port with scheme http, https or tcp, e.g. "http://10.0.0.5:8080"`},
		{File: "admin.address", Path: "admin.address", Msg: `admin address "0.0.0.0:9090" is not loopback: set admin.token_file`},
	}
	if diff := cmp.Diff(want, errs); diff != "" {
		t.Errorf("Validate() errors (-want +got):\n%s", diff)
	}
	if got, want := errs[0].Error(), `pools[0].backends[0].address: bad backend address "x": write scheme://host:port with scheme http, https or tcp, e.g. "http://10.0.0.5:8080"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestParseBackendAddress(t *testing.T) {
	tests := []struct {
		in      string
		want    string // URL.String(), or "" for an error
		wantErr string
	}{
		{in: "http://127.0.0.1:8081", want: "http://127.0.0.1:8081"},
		{in: "https://api.internal:8443/", want: "https://api.internal:8443"},
		{in: "tcp://[::1]:5432", want: "tcp://[::1]:5432"},
		{in: "127.0.0.1:8081", wantErr: `bad backend address "127.0.0.1:8081": write scheme://host:port with scheme http, https or tcp, e.g. "http://10.0.0.5:8080"`},
		{in: "http://u:p@a:80", wantErr: `backend address "http://u:p@a:80" has user info: remove it`},
		{in: "http://a:0", wantErr: `backend address "http://a:0" has a bad port "0": use 1 to 65535`},
		{in: "http://a:80?x=1", wantErr: `backend address "http://a:80?x=1" has a path or query: remove it (sluice forwards the client's path unchanged)`},
		{in: "http://-a:80", wantErr: `backend address "http://-a:80" has a bad host "-a": use an IP address or a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseBackendAddress(tt.in)
			var got, gotErr string
			if u != nil {
				got = u.String()
			}
			if err != nil {
				gotErr = err.Error()
			}
			if got != tt.want || gotErr != tt.wantErr {
				t.Errorf("ParseBackendAddress(%q) = %q, %q; want %q, %q", tt.in, got, gotErr, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDidYouMean(t *testing.T) {
	keys := []string{"address", "protocol", "trusted_proxies", "timeouts", "limits", "routes", "pool", "name"}
	tests := []struct{ in, want string }{
		{"adress", "address"},
		{"Address", "address"},
		{"trusted-proxies", "trusted_proxies"},
		{"timeout", "timeouts"},
		{"pools", "pool"},
		{"nmae", "name"},
		{"colour", ""},
		{"x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := closest(tt.in, keys); got != tt.want {
				t.Errorf("closest(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParse checks Parse never panics, returns a config or Errors, and
// every problem it reports points into the file.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		minimal,
		listener1 + "pools: [\n",
		"listeners:\n  - adress: x\n" + pool1,
		"x: &a {b: *a}\n" + minimal,
		"pools: [{<<: {name: a}, backends: [{address: \"http://a:1\", weight: 3}], health_check: {expect_status: 200-300}}]\n",
		"listeners: [{address: \":1\", routes: [{host: \"*.a\", headers: {A: 1}, pool: p}], timeouts: {idle: 1h}}]\n",
		"pools: [{retries: {retry_on: [\"502\", reset]}, passive_health: {ejection_time: 0}}]\nshutdown_delay: 1.5\n",
	} {
		f.Add([]byte(seed))
	}
	if data, err := readSmallFile("testdata/example.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err == nil {
			if c == nil {
				t.Fatal("Parse returned neither a config nor an error")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("Parse error is not Errors: %v", err)
		}
		for _, e := range errs {
			if e.File != "f.yaml" || e.Line < 1 || e.Col < 1 || e.Msg == "" || strings.Contains(e.Msg, "\n") {
				t.Errorf("bad Error %+v", *e)
			}
		}
	})
}
