package admin

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/pool"
)

// fakeFleet is a Fleet whose pool web is discovered from etcd; fleet-wide
// changes apply to the fake runtime as the server applies them locally.
type fakeFleet struct {
	rt  *fakeRuntime
	err error // returned by the next write (etcd down)
}

func (f *fakeFleet) Discovery(poolName string) []discovery.Status {
	if poolName != "web" {
		return nil
	}
	return []discovery.Status{{Source: "etcd", Watching: "prefix /sluice/web/ at 127.0.0.1:2379", OK: false, Backends: 2,
		Errors: 3, LastError: "etcd at 127.0.0.1:2379 does not answer", LastErrorAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
}

func (f *fakeFleet) check(poolName string) error {
	if poolName != "web" {
		return fmt.Errorf("pool %q has no etcd discovery", poolName)
	}
	return f.err
}

func (f *fakeFleet) SetFleetState(poolName, address string, st pool.Admin) error {
	f.rt.record("fleet state %s %s %s", poolName, address, st)
	if err := f.check(poolName); err != nil {
		return err
	}
	return f.rt.SetBackendState(poolName, address, st)
}

func (f *fakeFleet) SetFleetWeight(poolName, address string, weight int) error {
	f.rt.record("fleet weight %s %s %d", poolName, address, weight)
	if err := f.check(poolName); err != nil {
		return err
	}
	return f.rt.SetBackendWeight(poolName, address, weight)
}

func TestScope(t *testing.T) {
	const web = "/api/v1/pools/web/backends/http:%2F%2F127.0.0.1:8081/"
	const api = "/api/v1/pools/api/backends/http:%2F%2F[::1]:9001/"
	rt := newFake(t)
	fleet := &fakeFleet{rt: rt}
	srv := start(t, rt, Options{Fleet: fleet})
	noFleet := start(t, newFake(t), Options{})

	backend := func(weight int, state, scope string) map[string]any {
		return changed(backendJSON("http://127.0.0.1:8081", weight, state), scope)
	}
	errJSON := func(msg string) map[string]any { return map[string]any{"error": msg} }
	tests := []struct {
		name     string
		path     string
		body     string
		fleetErr error
		noFleet  bool
		wantCode int
		want     any
		wantCall string
	}{
		{"drain here", web + "drain", "", nil, false, 200, backend(1, "draining", "local"), "state web http://127.0.0.1:8081 draining"},
		{"scope=local is the default", web + "enable?scope=local", "", nil, false, 200, backend(1, "healthy", "local"), "state web http://127.0.0.1:8081 enabled"},
		{"drain the fleet", web + "drain?scope=fleet", "", nil, false, 200, backend(1, "draining", "fleet"), "fleet state web http://127.0.0.1:8081 draining"},
		{"weight here", web + "weight", `{"weight": 4}`, nil, false, 200, backend(4, "draining", "local"), "weight web http://127.0.0.1:8081 4"},
		{"weight of the fleet", web + "weight?scope=fleet", `{"weight": 6}`, nil, false, 200, backend(6, "draining", "fleet"), "fleet weight web http://127.0.0.1:8081 6"},
		{"weight out of range", web + "weight", `{"weight": 1001}`, nil, false, 400, errJSON("weight 1001 out of range: use 1 to 1000"), "weight web http://127.0.0.1:8081 1001"},
		{"weight without a body", web + "weight", ``, nil, false, 400, errJSON(`invalid JSON body: EOF; send {"weight": N} with N from 1 to 1000`), ""},
		{"unknown scope", web + "drain?scope=world", "", nil, false, 400,
			errJSON(`unknown scope "world": use local (this instance, the default) or fleet (every instance sharing the pool's etcd prefix)`), ""},
		{"fleet on a pool without etcd", api + "drain?scope=fleet", "", nil, false, 400, errJSON(`pool "api" has no etcd discovery`), "fleet state api http://[::1]:9001 draining"},
		{"fleet without discovery at all", web + "drain?scope=fleet", "", nil, true, 400,
			errJSON(`pool "web" has no etcd discovery, so there is no fleet-wide store: drop ?scope=fleet to change this instance only`), ""},
		{"etcd down", web + "disable?scope=fleet", "", fmt.Errorf("etcd at 127.0.0.1:2379: context deadline exceeded: %w", ErrUnavailable), false, 503,
			errJSON("etcd at 127.0.0.1:2379: context deadline exceeded: unavailable"), "fleet state web http://127.0.0.1:8081 disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fleet.err = tt.fleetErr
			s := srv
			if tt.noFleet {
				s = noFleet
			}
			before := len(rt.Calls())
			got := call(t, s, "POST", tt.path, tt.body, nil)
			if diff := cmp.Diff(tt.want, decode(t, got)); got.code != tt.wantCode || diff != "" {
				t.Errorf("POST %s = %d, want %d; body (-want +got):\n%s", tt.path, got.code, tt.wantCode, diff)
			}
			calls := rt.Calls()[before:]
			if tt.wantCall == "" && len(calls) != 0 || tt.wantCall != "" && (len(calls) == 0 || calls[0] != tt.wantCall) {
				t.Errorf("runtime calls %q, want first %q", calls, tt.wantCall)
			}
		})
	}
	if !errors.Is(fmt.Errorf("x: %w", ErrUnavailable), ErrUnavailable) {
		t.Fatal("ErrUnavailable does not wrap")
	}
}

// changed is a backend's expected JSON in the answer to a change made in
// scope.
func changed(backend map[string]any, scope string) map[string]any {
	backend["scope"] = scope
	return backend
}

func TestDiscoveryStatus(t *testing.T) {
	rt := newFake(t)
	srv := start(t, rt, Options{Fleet: &fakeFleet{rt: rt}})
	got := decode(t, call(t, srv, "GET", "/api/v1/pools/web", "", nil)).(map[string]any)
	want := []any{map[string]any{
		"source": "etcd", "watching": "prefix /sluice/web/ at 127.0.0.1:2379", "ok": false, "backends": 2.0, "errors": 3.0,
		"last_error": "etcd at 127.0.0.1:2379 does not answer", "last_error_at": "2026-01-02T03:04:05Z",
	}}
	if diff := cmp.Diff(want, got["discovery"]); diff != "" {
		t.Errorf("pool web's discovery (-want +got):\n%s", diff)
	}
	api := decode(t, call(t, srv, "GET", "/api/v1/pools/api", "", nil)).(map[string]any)
	if d, ok := api["discovery"]; ok {
		t.Errorf("pool api has no discovery, but shows %v", d)
	}
}
