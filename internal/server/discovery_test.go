package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/sluice-lb/sluice/internal/admin"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// TestReloadKeepsDiscovery: a reload that leaves a pool's discovery block
// unchanged keeps its sources running and its discovered backends with
// their state; a changed block restarts the sources and keeps the
// backends until they answer; a removed block takes them out. Error
// counts outlive the restarts, and nothing leaks.
func TestReloadKeepsDiscovery(t *testing.T) {
	baseline := runtime.NumGoroutine()
	bctx, bcancel := context.WithCancel(context.Background())
	a, b, c := startBackend(t, bctx), startBackend(t, bctx), startBackend(t, bctx)
	t.Cleanup(bcancel)
	srvDNS := testenv.StartDNS(t)
	const name = "_http._tcp.web.test"
	rr := func(backend string, prio int) string {
		_, port, _ := net.SplitHostPort(backend[len("http://"):])
		return fmt.Sprintf("%s. 1 IN SRV %d 1 %s h.test.", name, prio, port)
	}
	srvDNS.Set(t, "h.test", dns.TypeA, "h.test. 1 IN A 127.0.0.1")
	srvDNS.Set(t, name, dns.TypeSRV, rr(a, 0), rr(b, 0))

	path := filepath.Join(t.TempDir(), "sluice.yaml")
	write := func(static, discovery string) {
		t.Helper()
		y := "listeners: [{name: public, address: \"127.0.0.1:0\", pool: web}]\n" +
			"pools:\n  - name: web\n    health_check: {path: /health, interval: 200ms, timeout: 100ms}\n"
		if static != "" {
			y += fmt.Sprintf("    backends: [{address: %q}]\n", static)
		}
		if discovery != "" {
			y += "    discovery: " + discovery + "\n"
		}
		y += "admin: {address: \"127.0.0.1:0\"}\naccess_log: {format: off}\nshutdown_timeout: 2s\n"
		if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disc := func(refresh string) string {
		return fmt.Sprintf("{dns: {name: %s, type: SRV, resolver: %q, refresh: %s}}", name, srvDNS.Addr, refresh)
	}
	write(c, disc("200ms"))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	eventually(t, "ready", srv.Ready)

	eventually(t, "a and b discovered", func() bool {
		p := srv.Pools()[0]
		return p.Find(a) != nil && p.Find(b) != nil
	})
	oldA := srv.Pools()[0].Find(a)
	if oldA.Source != pool.SourceDNS {
		t.Errorf("source of %s = %s, want dns", a, oldA.Source)
	}
	if err := srv.SetBackendState("web", a, pool.Draining); err != nil {
		t.Fatal(err)
	}
	srvDNS.Fail(dns.RcodeServerFailure)
	eventually(t, "an error counted", func() bool { return errorsOf(srv, "web", "dns") > 0 })
	srvDNS.Fail(dns.RcodeSuccess)
	members := srv.discovery["web"].members

	// Unchanged discovery, the static backend removed: same sources, same
	// backends with their state.
	write("", disc("200ms"))
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if srv.discovery["web"].members != members {
		t.Errorf("the pool's discovery was restarted by a reload that did not change it")
	}
	p := srv.Pools()[0]
	if p.Find(a) != oldA || oldA.State() != "draining" {
		t.Errorf("discovered backend %s after a reload: same object %v, state %s; want the same, draining", a, p.Find(a) == oldA, oldA.State())
	}
	if p.Find(c) != nil {
		t.Errorf("static backend %s still in the pool after the reload removed it", c)
	}

	// Changed discovery: new sources; the backends stay until they answer,
	// and after.
	errs := errorsOf(srv, "web", "dns")
	write("", disc("300ms"))
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if srv.discovery["web"].members == members {
		t.Errorf("the pool's discovery was not restarted by a reload that changed it")
	}
	if p := srv.Pools()[0]; p.Find(a) != oldA || p.Find(b) == nil {
		t.Errorf("discovered backends lost at the restart of discovery")
	}
	if got := errorsOf(srv, "web", "dns"); got < errs {
		t.Errorf("discovery errors went from %d to %d across a restart, want them kept", errs, got)
	}
	eventually(t, "the new sources answered", func() bool {
		st := srv.Discovery("web")
		return len(st) == 1 && st[0].OK
	})
	if p := srv.Pools()[0]; p.Find(a) != oldA || p.Find(b) == nil {
		t.Errorf("discovered backends lost after the new sources answered")
	}

	// No discovery: its backends leave with the reload.
	write(c, "")
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if p := srv.Pools()[0]; len(p.Backends()) != 1 || p.Find(c) == nil {
		t.Errorf("pool after discovery was removed: %d backends, want only %s", len(p.Backends()), c)
	}
	if len(srv.discovery) != 0 {
		t.Errorf("discovery still runs for %d pools after the config removed it", len(srv.discovery))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	bcancel()
	http.DefaultClient.CloseIdleConnections()
	eventually(t, fmt.Sprintf("goroutines back to baseline %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline+4 // the DNS server's
	})
}

// errorsOf returns sluice_discovery_errors_total{pool,source}.
func errorsOf(s *Server, poolName, source string) uint64 {
	var n uint64
	s.DiscoveryErrors(func(p, src string, c uint64) {
		if p == poolName && src == source {
			n = c
		}
	})
	return n
}

// TestStateFileOnDiscoveredBackends: an admin.state_file entry of a
// backend that discovery finds only after start-up is not stale, and
// applies when the backend joins; the API refuses to remove a discovered
// backend, which its source would add again.
func TestStateFileOnDiscoveredBackends(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := startBackend(t, ctx)
	srvDNS := testenv.StartDNS(t)
	_, port, _ := net.SplitHostPort(a[len("http://"):])
	srvDNS.Set(t, "web.test", dns.TypeA, "web.test. 1 IN A 127.0.0.1")
	dir := t.TempDir()
	cfgPath, statePath := filepath.Join(dir, "sluice.yaml"), filepath.Join(dir, "state.json")
	cfg := fmt.Sprintf("listeners: [{name: public, address: \"127.0.0.1:0\", pool: web}]\n"+
		"pools: [{name: web, discovery: {dns: {name: web.test, port: %s, resolver: %q, refresh: 200ms}}}]\n"+
		"admin: {address: \"127.0.0.1:0\", state_file: %q}\naccess_log: {format: off}\nshutdown_timeout: 2s\n", port, srvDNS.Addr, statePath)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	entry := fmt.Sprintf(`{"version": 1, "backends": [{"pool": "web", "address": %q, "state": "disabled", "weight": 4, "updated": "2026-01-02T15:04:05Z"}]}`, a)
	if err := os.WriteFile(statePath, []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, _ := runFile(t, cfgPath)
	if st := srv.State(); len(st.Stale) != 0 {
		t.Errorf("stale entries %+v, want none: discovery may find the backend", st.Stale)
	}
	eventually(t, "a found", func() bool { return srv.Pools()[0].Find(a) != nil })
	b := srv.Pools()[0].Find(a)
	if b.State() != "disabled" || b.Weight() != 4 {
		t.Errorf("discovered backend with a state file entry: %s, weight %d; want disabled, weight 4", b.State(), b.Weight())
	}
	err := srv.RemoveBackend("web", a)
	if !errors.Is(err, admin.ErrConflict) || !strings.Contains(err.Error(), "was found by dns") {
		t.Errorf("RemoveBackend of a discovered backend: %v, want a conflict saying it was found by dns", err)
	}
}
