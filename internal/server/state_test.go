package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/admin"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// eventsOf returns "kind pool backend: reason" for the events after id.
func eventsOf(l *events.Log, after uint64) []string {
	evs, _ := l.Since(after)
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s %s %s: %s", e.Kind, e.Pool, e.Backend, e.Reason))
	}
	return out
}

// The state file applies at start-up (drain, weight, added backends; stale
// entries reported), is read again at every reload (an edit that drops an
// entry enables the backend; a broken file refuses the reload), and a
// broken file stops the start.
func TestStateFileAtStartAndReload(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, r := startBackend(t, ctx), startBackend(t, ctx), startBackend(t, ctx)
	dir := t.TempDir()
	cfgPath, statePath := filepath.Join(dir, "sluice.yaml"), filepath.Join(dir, "state.json")
	cfg := fmt.Sprintf("listeners: [{name: public, address: \"127.0.0.1:0\", pool: web}]\n"+
		"pools: [{name: web, backends: [{address: %q}, {address: %q}]}]\n"+
		"admin: {address: \"127.0.0.1:0\", state_file: %q}\naccess_log: {format: off}\nshutdown_timeout: 2s\n", a, b, statePath)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	const at = "2026-01-02T15:04:05Z"
	writeState := func(entries ...string) {
		t.Helper()
		doc := `{"version": 1, "backends": [` + strings.Join(entries, ", ") + `]}`
		if err := os.WriteFile(statePath, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	drainA := fmt.Sprintf(`{"pool": "web", "address": %q, "state": "draining", "updated": %q}`, a, at)
	weightB := fmt.Sprintf(`{"pool": "web", "address": %q, "weight": 7, "updated": %q}`, b, at)
	addR := fmt.Sprintf(`{"pool": "web", "address": %q, "added": true, "weight": 2, "updated": %q}`, r, at)
	gone := fmt.Sprintf(`{"pool": "gone", "address": "http://127.0.0.1:1", "state": "disabled", "updated": %q}`, at)
	writeState(drainA, weightB, addR, gone)

	srv, _ := runFile(t, cfgPath)
	p := srv.Pools()[0]
	if got := p.Find(a).State(); got != "draining" {
		t.Errorf("a is %s at start-up, want draining (state file)", got)
	}
	if got := p.Find(b).Weight(); got != 7 {
		t.Errorf("b's weight is %d, want 7 (state file)", got)
	}
	if br := p.Find(r); br == nil || br.Source != pool.SourceRuntime || br.Weight() != 2 {
		t.Fatalf("r = %+v, want added by the state file, source runtime, weight 2", br)
	}
	keep := "; the entry is kept and applies again if that comes back (to drop it, delete it from " + statePath + ", then reload)"
	want := []string{
		"drained web " + a + ": admin.state_file: draining through the admin API at " + at,
		"added web " + r + ": admin.state_file: added through the admin API at " + at + ", weight 2",
		`state_stale gone http://127.0.0.1:1: pool "gone" is not in the config` + keep,
	}
	if diff := cmp.Diff(want, eventsOf(srv.Events(), 0)); diff != "" {
		t.Errorf("events at start-up (-want +got):\n%s", diff)
	}
	if st := srv.State(); len(st.Entries) != 4 || len(st.Stale) != 1 || st.Stale[0].Pool != "gone" || st.File != statePath {
		t.Errorf("State() = %+v", st)
	}

	// An edit drops a's entry and r's: a reload enables a and removes r.
	last := srv.Events().Last()
	writeState(weightB, gone)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"enabled web " + a + ": admin.state_file no longer holds a state for it",
		"removed web " + r + ": config reload: admin.state_file no longer adds it",
		"reload_ok  : no listener, pool or backend changed",
	}
	if diff := cmp.Diff(want, eventsOf(srv.Events(), last)); diff != "" {
		t.Errorf("events of the reload (-want +got):\n%s", diff)
	}
	if got := p.Find(a).State(); got != "healthy" {
		t.Errorf("a is %s, want healthy", got)
	}

	// A broken file refuses the reload, and the start.
	last = srv.Events().Last()
	if err := os.WriteFile(statePath, []byte(`{"version": 1, "backends": [{"pool": "web"`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := srv.Reload()
	if err == nil || !strings.Contains(err.Error(), statePath) {
		t.Fatalf("Reload with a broken state file = %v, want an error naming it", err)
	}
	if got := eventsOf(srv.Events(), last); len(got) != 1 || !strings.HasPrefix(got[0], "reload_failed  : the previous config keeps serving: state file "+statePath) {
		t.Errorf("events of the failed reload: %q", got)
	}
	c, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, Options{}); err == nil || !strings.Contains(err.Error(), "move it away to start from the config alone") {
		t.Errorf("New with a broken state file = %v, want an error saying what to do", err)
	}
}

// A change the state file cannot hold is not applied; without a state
// file the API's changes say they last until the next reload.
func TestAPIChangesAndTheStateFile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startBackend(t, ctx), startBackend(t, ctx)
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: "web"}},
		Pools:     []config.Pool{{Name: "web", Backends: []config.Backend{{Address: a}}}},
		Admin:     config.Admin{Address: "127.0.0.1:0", StateFile: statePath},
		AccessLog: config.AccessLog{Format: "off"},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, _ := run(t, cfg)
	if err := os.Mkdir(statePath, 0o700); err != nil { // the rename will fail
		t.Fatal(err)
	}
	last := srv.Events().Last()
	for name, call := range map[string]func() error{
		"add":     func() error { return srv.AddBackend("web", b, 1) },
		"remove":  func() error { return srv.RemoveBackend("web", a) },
		"drain":   func() error { return srv.SetBackendState("web", a, pool.Draining) },
		"disable": func() error { return srv.SetBackendState("web", a, pool.Disabled) },
		"weight":  func() error { return srv.SetBackendWeight("web", a, 9) },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "not persisted") {
			t.Errorf("%s with an unwritable state file = %v, want not persisted", name, err)
		}
	}
	p := srv.Pools()[0]
	if len(p.Backends()) != 1 || p.Find(a).State() != "healthy" || p.Find(a).Weight() != 1 {
		t.Errorf("after refused changes: %d backends, a %s weight %d; want a alone, healthy, weight 1",
			len(p.Backends()), p.Find(a).State(), p.Find(a).Weight())
	}
	if got := eventsOf(srv.Events(), last); len(got) != 0 {
		t.Errorf("refused changes published %q", got)
	}
	os.Remove(statePath)
	if err := srv.SetBackendWeight("web", a, 9); err != nil {
		t.Fatal(err)
	}
	want := []string{"weight_changed web " + a + ": admin API (kept in admin.state_file): weight 1 → 9"}
	if diff := cmp.Diff(want, eventsOf(srv.Events(), last)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// A backend the API is removing takes no other change until it is gone.
func TestRemovingBackendRefusesChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startBackend(t, ctx), startBackend(t, ctx)
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: "web"}},
		Pools:     []config.Pool{{Name: "web", Backends: []config.Backend{{Address: a}, {Address: b}}}},
		Admin:     config.Admin{Address: "127.0.0.1:0"},
		AccessLog: config.AccessLog{Format: "off"},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, _ := run(t, cfg)
	p := srv.Pools()[0]
	p.Find(a).InFlight.Add(1) // a request in flight keeps it draining
	if err := srv.RemoveBackend("web", a); err != nil {
		t.Fatal(err)
	}
	last := srv.Events().Last()
	if err := srv.RemoveBackend("web", a); err != nil {
		t.Errorf("a second DELETE = %v, want nil", err)
	}
	for name, err := range map[string]error{
		"enable": srv.SetBackendState("web", a, pool.Enabled),
		"weight": srv.SetBackendWeight("web", a, 3),
	} {
		if !errors.Is(err, admin.ErrConflict) {
			t.Errorf("%s of a backend being removed = %v, want a conflict", name, err)
		}
	}
	if got := eventsOf(srv.Events(), last); len(got) != 0 {
		t.Errorf("events after the first DELETE: %q, want none", got)
	}
	p.Find(a).InFlight.Add(-1)
	eventually(t, "a removed", func() bool { return p.Find(a) == nil })
	if got := eventsOf(srv.Events(), last); len(got) != 1 || got[0] != "removed web "+a+": admin API (until the next reload)" {
		t.Errorf("events: %q, want the removal", got)
	}
}
