package admin

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/state"
)

func TestSetWeight(t *testing.T) {
	const path = "/api/v1/pools/web/backends/http%3A%2F%2F127.0.0.1%3A8081/weight"
	const example = `{"weight": N} with N from 1 to 1000`
	tests := []struct {
		name, path, body string
		persistErr       error
		wantCode         int
		want             any
		wantCall         string
	}{
		{"ok", path, `{"weight": 5}`, nil, 200, changed(backendJSON("http://127.0.0.1:8081", 5, "healthy"), "local"), "weight web http://127.0.0.1:8081 5"},
		{"out of range", path, `{"weight": 0}`, nil, 400, map[string]any{"error": "weight 0 out of range: use 1 to 1000"}, "weight web http://127.0.0.1:8081 0"},
		{"missing", path, `{}`, nil, 400, map[string]any{"error": `"weight" is required: send ` + example}, ""},
		{"not a number", path, `{"weight": "5"}`, nil, 400,
			map[string]any{"error": `invalid JSON body: json: cannot unmarshal string into Go struct field .weight of type int; send ` + example}, ""},
		{"unknown backend", "/api/v1/pools/web/backends/http%3A%2F%2Fnope%3A1/weight", `{"weight": 5}`, nil, 404,
			map[string]any{"error": `backend "http://nope:1" in pool "web": not found` + listHint}, "weight web http://nope:1 5"},
		{"not persisted", path, `{"weight": 5}`, fmt.Errorf("%w: rename: read-only file system", state.ErrNotPersisted), 500,
			map[string]any{"error": state.ErrNotPersisted.Error() + ": rename: read-only file system; " +
				"fix the problem with admin.state_file (its directory, disk space, permissions) and try again"},
			"weight web http://127.0.0.1:8081 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFake(t)
			rt.persistErr = tt.persistErr
			srv := start(t, rt, Options{})
			got := call(t, srv, "POST", tt.path, tt.body, nil)
			if diff := cmp.Diff(tt.want, decode(t, got)); got.code != tt.wantCode || diff != "" {
				t.Errorf("POST = %d, want %d; body (-want +got):\n%s", got.code, tt.wantCode, diff)
			}
			var wantCalls []string
			if tt.wantCall != "" {
				wantCalls = []string{tt.wantCall}
			}
			if diff := cmp.Diff(wantCalls, rt.Calls()); diff != "" {
				t.Errorf("runtime calls (-want +got):\n%s", diff)
			}
		})
	}
}

// Each backend shows where it came from, whether a state_file entry
// applies, and why it is in its state since when; stale entries show in
// GET /api/v1/state and GET /api/v1/pools.
func TestStateAndReasons(t *testing.T) {
	rt := newFake(t)
	web := rt.pools[0]
	b := web.Backends()[1]
	since := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	b.SetReason("admin API (kept in admin.state_file)", since)
	web.SetAdmin(b, pool.Draining)
	added := newBackend(t, "http://127.0.0.1:8089", 2)
	added.Source = pool.SourceRuntime
	web.Add(added)
	entries := []state.Entry{
		{Pool: "gone", Address: "http://127.0.0.1:1", State: "disabled", Updated: since},
		{Pool: "web", Address: "http://127.0.0.1:8082", State: "draining", Updated: since},
		{Pool: "web", Address: "http://127.0.0.1:8089", Added: true, Weight: 2, Updated: since},
	}
	stale := []state.Stale{{Entry: entries[0], Problem: `pool "gone" is not in the config`}}
	rt.state = state.Report{File: "/var/lib/sluice/state.json", Entries: entries, Stale: stale}
	srv := start(t, rt, Options{})

	drained := backendJSON("http://127.0.0.1:8082", 3, "draining")
	drained["override"], drained["reason"], drained["since"] = true, "admin API (kept in admin.state_file)", "2026-03-04T05:06:07Z"
	runtime := backendJSON("http://127.0.0.1:8089", 2, "healthy")
	runtime["source"], runtime["override"] = "runtime", true
	entryJSON := func(e state.Entry) map[string]any {
		m := map[string]any{"pool": e.Pool, "address": e.Address, "updated": "2026-03-04T05:06:07Z"}
		if e.State != "" {
			m["state"] = e.State
		}
		if e.Added {
			m["added"], m["weight"] = true, float64(e.Weight)
		}
		return m
	}
	staleJSON := entryJSON(entries[0])
	staleJSON["problem"] = `pool "gone" is not in the config`

	got := call(t, srv, "GET", "/api/v1/pools/web", "", nil)
	want := map[string]any{"name": "web", "ready": 2.0, "retries": 0.0, "no_backend": 0.0, "backends": []any{
		backendJSON("http://127.0.0.1:8081", 1, "healthy"), drained, runtime}}
	if diff := cmp.Diff(any(want), decode(t, got)); diff != "" {
		t.Errorf("GET /api/v1/pools/web (-want +got):\n%s", diff)
	}
	all := decode(t, call(t, srv, "GET", "/api/v1/pools", "", nil)).(map[string]any)
	if diff := cmp.Diff([]any{staleJSON}, all["state_stale"]); diff != "" {
		t.Errorf("GET /api/v1/pools state_stale (-want +got):\n%s", diff)
	}
	got = call(t, srv, "GET", "/api/v1/state", "", nil)
	wantState := map[string]any{"file": "/var/lib/sluice/state.json",
		"entries": []any{entryJSON(entries[0]), entryJSON(entries[1]), entryJSON(entries[2])},
		"stale":   []any{staleJSON}}
	if diff := cmp.Diff(any(wantState), decode(t, got)); got.code != 200 || diff != "" {
		t.Errorf("GET /api/v1/state = %d (-want +got):\n%s", got.code, diff)
	}
}
