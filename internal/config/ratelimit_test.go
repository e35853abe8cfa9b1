package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRateLimitDefaults(t *testing.T) {
	c, err := Parse("t.yaml", []byte(`listeners:
  - name: public
    address: ":8080"
    pool: web
    rate_limit: {rate: 100}
    routes:
      - {path_prefix: /a, pool: web}
      - {path_prefix: /v1, pool: web, rate_limit: {key: "header:X-Api-Key", rate: 10, per: 1m, burst: 20, name: api, max_keys: 1000}}
      - {path_prefix: /v2, pool: web, rate_limit: {rate: 5, per: 1s}}
`+pool1+`rate_limit_store:
  redis: {address: "127.0.0.1:6379"}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Listeners[0]
	want := []*RateLimit{
		{Key: "client_ip", Rate: 100, Per: time.Second, Burst: 100, Name: "public", MaxKeys: 65536},
		nil,
		{Key: "header:X-Api-Key", Rate: 10, Per: time.Minute, Burst: 20, Name: "api", MaxKeys: 1000},
		{Key: "client_ip", Rate: 5, Per: time.Second, Burst: 5, Name: "public.routes[2]", MaxKeys: 65536},
	}
	got := []*RateLimit{l.RateLimit, l.Routes[0].RateLimit, l.Routes[1].RateLimit, l.Routes[2].RateLimit}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rate limits (-want +got):\n%s", diff)
	}
	wantStore := &RateLimitStore{Redis: &RedisStore{Address: "127.0.0.1:6379", Prefix: "sluice:", Timeout: 100 * time.Millisecond}}
	if diff := cmp.Diff(wantStore, c.RateLimitStore); diff != "" {
		t.Errorf("rate_limit_store (-want +got):\n%s", diff)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings %q, want none", w)
	}
}

func TestRateLimitErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	withLimit := func(rl string) string {
		return "listeners: [{address: \":8080\", pool: web, rate_limit: " + rl + "}]\n" + pool1
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"bad key", withLimit("{key: ip, rate: 1}"), []string{
			`t.yaml:1:61: rate_limit.key "ip" is not valid: use client_ip, path, header:NAME, cookie:NAME or query:NAME`}},
		{"zero rate", withLimit("{rate: 0}"), []string{
			"t.yaml:1:62: rate_limit.rate must be 1 or more, got 0: give the requests allowed per `per`"}},
		{"no rate", withLimit("{per: 1s}"), []string{
			"t.yaml:1:43: rate_limit.rate must be 1 or more, got 0: give the requests allowed per `per`"}},
		{"zero per", withLimit("{rate: 1, per: 0s}"), []string{
			"t.yaml:1:70: per must be more than 0, got 0s"}},
		{"too fast", withLimit("{rate: 2000000, per: 1s}"), []string{
			"t.yaml:1:62: rate_limit: rate 2000000 per 1s is more than one per 1µs: lower the rate or the burst, or change per"}},
		{"bad name", withLimit(`{rate: 1, name: "a\"b"}`), []string{
			`t.yaml:1:71: rate_limit.name "a\"b" must be printable ASCII without " or \: clients read it in the RateLimit fields`}},
		{"duplicate name", `listeners:
  - {name: a, address: ":8080", pool: web, rate_limit: {rate: 1}}
  - {name: b, address: ":8081", pool: web, rate_limit: {rate: 1, name: a}}
` + pool1, []string{
			`t.yaml:3:72: duplicate rate_limit name "a" (first at line 2): each limit needs its own, or they would share counts in the store`}},
		{"unknown key", withLimit("{rate: 1, limit: 2}"), []string{
			`t.yaml:1:65: unknown key "limit" in rate_limit`}},
		{"store without redis", withLimit("{rate: 1}") + "rate_limit_store: {}\n", []string{
			"t.yaml:3:1: rate_limit_store has no store: add redis: {address: HOST:PORT}, or remove the block"}},
		{"redis without address", withLimit("{rate: 1}") + "rate_limit_store: {redis: {prefix: x}}\n", []string{
			`t.yaml:3:20: rate_limit_store.redis needs an address, e.g. "127.0.0.1:6379"`}},
		{"redis empty password", withLimit("{rate: 1}") + "rate_limit_store: {redis: {address: \"127.0.0.1:6379\", password_file: " + empty + "}}\n", []string{
			"t.yaml:3:70: rate_limit_store.redis.password_file: " + empty + " is empty"}},
		{"redis slow", withLimit("{rate: 1}") + "rate_limit_store: {redis: {address: \"127.0.0.1:6379\", timeout: 10s}}\n", []string{
			"t.yaml:3:64: rate_limit_store.redis.timeout 10s is over 5s, which every request may wait: shorten it"}},
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

func TestRateLimitStoreWithoutLimitsWarns(t *testing.T) {
	c, err := Parse("t.yaml", []byte(minimal+"rate_limit_store: {redis: {address: \"127.0.0.1:6379\"}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"t.yaml:3:1: rate_limit_store is set but no listener or route has a rate_limit: it is connected to for nothing"}
	if diff := cmp.Diff(want, c.Warnings()); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

func TestLoadReport(t *testing.T) {
	pool := func(extra string) string {
		return listener1 + `pools: [{name: web, backends: [{address: "http://127.0.0.1:8081"}]` + extra + "}]\n"
	}
	c, err := Parse("t.yaml", []byte(pool(", balance: p2c, load_report: {}")))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&LoadReport{Header: "endpoint-load-metrics"}, c.Pools[0].LoadReport); diff != "" {
		t.Errorf("load_report defaults (-want +got):\n%s", diff)
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"agent with round robin", pool(`, load_report: {header: "", agent_port: 9999}, health_check: {type: tcp}`), nil},
		{"header with round robin", pool(", load_report: {}"), []string{
			`t.yaml:2:69: load_report.header has no effect with balance "round_robin", which does not weigh load: set balance to least_requests or p2c, or header: "" to read only the agent`}},
		{"agent without checks", pool(", balance: p2c, load_report: {agent_port: 9999}"), []string{
			"t.yaml:2:109: load_report.agent_port needs a health_check: the agent is asked at its interval; add health_check (type tcp checks only the port)"}},
		{"bad port", pool(", balance: p2c, load_report: {agent_port: 70000}, health_check: {}"), []string{
			"t.yaml:2:109: agent_port 70000 is out of range: use 0 (no agent) to 65535"}},
		{"reads nothing", pool(`, load_report: {header: ""}`), []string{
			`t.yaml:2:69: load_report reads nothing: set header (e.g. endpoint-load-metrics) or agent_port, or remove the block`}},
		{"bad header", pool(`, balance: p2c, load_report: {header: "a b"}`), []string{
			`t.yaml:2:105: load_report.header "a b" is not a valid header name`}},
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
