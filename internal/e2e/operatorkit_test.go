package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// The operator kit in packaging/: a Grafana dashboard and Prometheus alert
// rules. Their queries must name metrics sluice really exposes, and parse.
const (
	grafanaDashboard = "../../packaging/grafana/sluice.json"
	alertRules       = "../../packaging/prometheus/alerts.yml"
	alertRulesTests  = "../../packaging/prometheus/alerts_test.yml"
)

// TestOperatorKitNamesExposedMetrics scrapes /metrics of the sluice binary
// after traffic through a TLS and a plain listener, and checks that every
// metric named by a query of the Grafana dashboard or an alert rule is
// among the names it exposes (a histogram's _bucket, _sum and _count
// included).
func TestOperatorKitNamesExposedMetrics(t *testing.T) {
	t.Parallel()
	exposed := exposedMetricNames(t)
	queries := append(grafanaQueries(t), alertQueries(t)...)
	if len(queries) < 20 {
		t.Fatalf("found %d queries in the dashboard and the rules, want at least 20", len(queries))
	}
	used := map[string]bool{}
	for _, q := range queries {
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", q.where, q.expr)
		}
		for _, n := range names {
			used[n] = true
			if !exposed[n] {
				t.Errorf("%s: metric %s is not exposed by sluice's /metrics (query %q)", q.where, n, q.expr)
			}
		}
	}
	t.Logf("%d queries name %d metrics, all exposed", len(queries), len(used))
}

// TestOperatorKitPromtool: promtool checks the alert rules and runs their
// unit tests, and checks that every query of the Grafana dashboard parses
// (as the expression of a recording rule, Grafana's variables replaced).
func TestOperatorKitPromtool(t *testing.T) {
	t.Parallel()
	promtool := needProgram(t, "promtool", "apt-get install prometheus")
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("check", "rules", alertRules)
	run("test", "rules", alertRulesTests)

	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range grafanaQueries(t) {
		rules = append(rules, rule{Record: fmt.Sprintf("grafana:query_%d", i), Expr: grafanaVars.Replace(q.expr)})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "grafana", "rules": rules}}}
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "grafana-queries.yml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run("check", "rules", file)
}

// grafanaVars replaces the dashboard's variables with what Grafana would
// put there.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*", "$pool", ".*", "${datasource}", "prometheus")

type query struct {
	where string // file and panel or rule
	expr  string
}

// grafanaQueries returns the PromQL of every panel target, annotation and
// query variable of the dashboard (label_values(METRIC, LABEL) as METRIC).
func grafanaQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", grafanaDashboard, err)
	}
	var qs []query
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", grafanaDashboard, p.Title)
		}
		for _, tg := range p.Targets {
			qs = append(qs, query{grafanaDashboard + ": panel " + p.Title, tg.Expr})
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			qs = append(qs, query{grafanaDashboard + ": annotation " + a.Name, a.Expr})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("%s: variable %s: %q is not label_values(METRIC, LABEL)", grafanaDashboard, v.Name, v.Definition)
			continue
		}
		qs = append(qs, query{grafanaDashboard + ": variable " + v.Name, m[1]})
	}
	return qs
}

// alertQueries returns the expression of every rule in the alert rules.
func alertQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", alertRules, err)
	}
	var qs []query
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{alertRules + ": alert " + r.Alert, r.Expr})
		}
	}
	return qs
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true}
)

// metricNames returns the metric names a PromQL expression selects: its
// identifiers once strings, label matchers, ranges and grouping clauses
// are taken out, less function names (followed by "("), keywords and
// numbers.
func metricNames(expr string) []string {
	e := strings.ReplaceAll(expr, "$__rate_interval", "1m")
	e = promString.ReplaceAllString(e, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	seen := map[string]bool{}
	var names []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(e, -1) {
		id := strings.TrimRight(strings.TrimSuffix(strings.TrimSpace(e[m[0]:m[1]]), "("), " ")
		if m[2] >= 0 || promKeywords[id] {
			continue // a function call or a keyword
		}
		if m[0] > 0 && strings.ContainsAny(e[m[0]-1:m[0]], "0123456789.") {
			continue // part of a number such as 1e3 or a duration such as 5m
		}
		if !seen[id] {
			seen[id] = true
			names = append(names, id)
		}
	}
	sort.Strings(names)
	return names
}

func TestMetricNamesOfPromQL(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sluice_backend_up == 0`, []string{"sluice_backend_up"}},
		{`sum by (instance, pool) (sluice_backend_up) == 0`, []string{"sluice_backend_up"}},
		{`histogram_quantile(0.99, sum by (pool, le) (rate(sluice_request_duration_seconds_bucket{pool=~"$pool", code!="a b"}[$__rate_interval])))`,
			[]string{"sluice_request_duration_seconds_bucket"}},
		{`sum(rate(a_total{code=~"5.."}[5m])) / sum(rate(b_total[5m])) > 0.05 and sum(rate(b_total[5m])) > 1e3`, []string{"a_total", "b_total"}},
		{`sluice_certificate_expiry_seconds - time() < 14 * 86400`, []string{"sluice_certificate_expiry_seconds"}},
		{`x / on (pool) group_left (backend) y offset 5m`, []string{"x", "y"}},
		{`changes(z[2m]) > 0`, []string{"z"}},
		{`vector(1)`, nil},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// exposedMetricNames runs sluice with a TLS listener and a plain one and a
// pool found by DNS, sends requests through both listeners (a 200, a 500,
// one to a pool whose only backend is dead), and returns the names
// /metrics then exposes: each family's name and, for histograms and
// summaries, its series' names.
func exposedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	be := startBackend(t, "kit")
	dnsSrv := testenv.StartDNS(t)
	dnsSrv.Set(t, "found.test", dns.TypeA, "found.test. 1 IN A 127.0.0.1")
	_, bePort, _ := net.SplitHostPort(be.Addr)
	ca := newTestCA(t, "kit CA")
	dir := t.TempDir()
	files := ca.issue(t, leafOpts{names: []string{"kit.test"}}).write(t, dir, "site")
	yaml := fmt.Sprintf(`listeners:
  - name: public
    address: "127.0.0.1:0"
    pool: web
    tls:
      certificates:
        - {cert: %q, key: %q}
  - name: plain
    address: "127.0.0.1:0"
    pool: web
    routes:
      - {path_prefix: /dead, pool: dead}
pools:
  - name: web
    backends:
      - address: %q
    health_check: {path: /health, interval: 1s, timeout: 1s}
  - name: dead
    backends:
      - address: "http://%s"
    retries: {num_retries: 1}
  - name: found
    discovery:
      dns: {name: found.test, type: A, port: %s, resolver: %q, refresh: 1s}
admin:
  address: "127.0.0.1:0"
access_log: {format: "off"}
shutdown_timeout: 5s
`, files.Cert, files.Key, be.URL(), testenv.DeadAddr(t), bePort, dnsSrv.Addr)
	p, _, addr, admin := runConfig(t, yaml)
	plain := p.waitLog(listenerLine("plain"), 15*time.Second)[1]
	https := httpsClient(t, addr, clientTLS(ca, "kit.test"), false, true)
	c := newClient(t)
	if r := get(t, https, "https://kit.test/"); r.Status != 200 {
		t.Fatalf("GET https://kit.test/ through the TLS listener: %d %s", r.Status, r.Body)
	}
	for _, path := range []string{"/", "/status/500", "/dead/x", "/nowhere"} {
		get(t, c, "http://"+plain+path)
	}
	r := get(t, c, "http://"+admin+"/metrics")
	if r.Status != 200 {
		t.Fatalf("GET /metrics: %d %s", r.Status, r.Body)
	}
	typeLine := regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`)
	names := map[string]bool{}
	for _, m := range typeLine.FindAllStringSubmatch(r.Body, -1) {
		names[m[1]] = true
		switch m[2] {
		case "histogram":
			names[m[1]+"_bucket"], names[m[1]+"_sum"], names[m[1]+"_count"] = true, true, true
		case "summary":
			names[m[1]+"_sum"], names[m[1]+"_count"] = true, true
		}
	}
	// The families the kit relies on are there, so the check above cannot
	// pass on an empty scrape.
	var missing []string
	for _, n := range []string{"sluice_requests_total", "sluice_request_duration_seconds", "sluice_certificate_expiry_seconds",
		"sluice_tls_handshakes_total", "sluice_backend_up", "sluice_backend_admin_state", "sluice_config_last_reload_successful",
		"sluice_discovery_errors_total"} {
		if !names[n] {
			missing = append(missing, n)
		}
	}
	if diff := cmp.Diff([]string(nil), missing); diff != "" {
		t.Fatalf("/metrics lacks families (-want +got):\n%s\n%s", diff, r.Body)
	}
	return names
}
