package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCompareSummary(t *testing.T) {
	const prev = `listeners:
  - {name: public, address: ":8080", pool: web}
  - {name: old, address: ":8081", pool: web}
pools:
  - name: web
    backends: [{address: "http://127.0.0.1:1"}, {address: "http://127.0.0.1:2"}, {address: "http://127.0.0.1:3"}]
  - name: gone
    backends: [{address: "http://127.0.0.1:9"}]
`
	const next = `listeners:
  - {name: public, address: ":8080", pool: web, timeouts: {idle: 60s}}
  - {name: new, address: ":8082", pool: api}
pools:
  - name: web
    balance: random
    backends: [{address: "http://127.0.0.1:1", weight: 2}, {address: "http://127.0.0.1:3"}, {address: "http://127.0.0.1:4"}]
  - name: api
    backends: [{address: "http://127.0.0.1:5"}]
`
	a, err := Parse("a.yaml", []byte(prev))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b.yaml", []byte(next))
	if err != nil {
		t.Fatal(err)
	}
	c := Compare(a, b)
	want := Changes{
		ListenersAdded: []string{"new"}, ListenersRemoved: []string{"old"}, ListenersChanged: []string{"public"},
		PoolsAdded: []string{"api"}, PoolsRemoved: []string{"gone"}, PoolsChanged: []string{"web"},
		BackendsAdded: []string{"web http://127.0.0.1:4"}, BackendsRemoved: []string{"web http://127.0.0.1:2"},
		BackendsChanged: []string{"web http://127.0.0.1:1"},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Compare (-want +got):\n%s", diff)
	}
	wantSummary := "listeners: 1 added (new), 1 removed (old), 1 changed (public); pools: 1 added (api), 1 removed (gone), 1 changed (web); " +
		"backends: 1 added (web http://127.0.0.1:4), 1 removed (web http://127.0.0.1:2), 1 changed (web http://127.0.0.1:1)"
	if got := c.Summary(); got != wantSummary {
		t.Errorf("Summary:\n got %s\nwant %s", got, wantSummary)
	}
	if got, want := Compare(a, a).Summary(), "no listener, pool or backend changed"; got != want {
		t.Errorf("Summary of no change = %q, want %q", got, want)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"", "tracing: {}\n", "tracing: on"},
		{"tracing: {}\n", "", "tracing: off"},
		{"tracing: {}\n", "tracing: {sample_ratio: 1}\n", "tracing: changed"},
		{"tracing: {}\n", "tracing: {}\n", "no listener, pool or backend changed"},
	} {
		x, err1 := Parse("x.yaml", []byte(prev+tc.from))
		y, err2 := Parse("y.yaml", []byte(prev+tc.to))
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if got := Compare(x, y).Summary(); got != tc.want {
			t.Errorf("tracing %q → %q: Summary = %q, want %q", tc.from, tc.to, got, tc.want)
		}
	}
	many := Changes{BackendsAdded: []string{"p a", "p b", "p c", "p d", "p e"}}
	if got, want := many.Summary(), "backends: 5 added (p a, p b, p c and 2 more)"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
}
