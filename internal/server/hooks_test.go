package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/config"
)

// recorder is a Notifier that writes down what it hears.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) Ready()     { r.add("ready") }
func (r *recorder) Reloading() { r.add("reloading") }
func (r *recorder) Reloaded(err error) {
	if err != nil {
		r.add("reloaded: failed")
		return
	}
	r.add("reloaded")
}
func (r *recorder) Stopping() { r.add("stopping") }

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// TestNotifierHearsTheLifeCycle: Ready once serving, Reloading and
// Reloaded around every reload, good or bad, Stopping at shutdown.
func TestNotifierHearsTheLifeCycle(t *testing.T) {
	bctx, bcancel := context.WithCancel(context.Background())
	be := startBackend(t, bctx)
	t.Cleanup(bcancel) // before startBackend's wait
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeConfig(t, path, []string{be}, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Notify: rec})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	eventually(t, "ready is told", func() bool { return len(rec.list()) == 1 })
	if !srv.Ready() {
		t.Fatal("Ready was told before the server is ready")
	}
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	os.WriteFile(path, []byte("listeners: [\n"), 0o644)
	if err := srv.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{"ready", "reloading", "reloaded", "reloading", "reloaded: failed", "stopping"}
	if diff := cmp.Diff(want, rec.list()); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
}

// TestListenErrors: a port in use is a *ListenError naming the listener
// (or "" for the admin one) and the address as configured.
func TestListenErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	for _, tc := range []struct {
		name, listen, admin string
		want                ListenError
		msg                 string
	}{
		{"admin", "127.0.0.1:0", busy, ListenError{Listener: "", Address: busy}, "admin listener: "},
		{"listener", busy, "127.0.0.1:0", ListenError{Listener: "public", Address: busy}, `listener "public": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{
				Listeners: []config.Listener{{Name: "public", Address: tc.listen, Pool: "web"}},
				Pools:     []config.Pool{{Name: "web", Backends: []config.Backend{{Address: "http://127.0.0.1:1"}}}},
				Admin:     config.Admin{Address: tc.admin},
				AccessLog: config.AccessLog{Format: "off"},
			}
			cfg.ApplyDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			srv, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			err = srv.Run(context.Background())
			var le *ListenError
			if !errors.As(err, &le) {
				t.Fatalf("Run: %v (%T), want a *ListenError", err, err)
			}
			if le.Listener != tc.want.Listener || le.Address != tc.want.Address || le.Err == nil {
				t.Errorf("got ListenError{%q, %q, %v}, want {%q, %q, an error}", le.Listener, le.Address, le.Err, tc.want.Listener, tc.want.Address)
			}
			if !strings.HasPrefix(err.Error(), tc.msg) || !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("message %q, want it to start %q and say the address is in use", err, tc.msg)
			}
		})
	}
}

// TestListenOption: every socket, the admin one included, is had through
// Options.Listen with the address as the config writes it.
func TestListenOption(t *testing.T) {
	bctx, bcancel := context.WithCancel(context.Background())
	be := startBackend(t, bctx)
	t.Cleanup(bcancel) // before startBackend's wait
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeConfig(t, path, []string{be}, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	listen := func(network, address string) (net.Listener, error) {
		mu.Lock()
		asked = append(asked, network+" "+address)
		mu.Unlock()
		return net.Listen(network, address)
	}
	srv, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), Listen: listen,
		Build: BuildInfo{Version: "v9", Revision: "abc", GoVersion: "go1.99"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	eventually(t, "ready", srv.Ready)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	mu.Lock()
	got := append([]string(nil), asked...)
	mu.Unlock()
	if diff := cmp.Diff([]string{"tcp 127.0.0.1:0", "tcp 127.0.0.1:0"}, got); diff != "" {
		t.Errorf("Listen calls (-want +got):\n%s", diff)
	}
	if b := srv.Build(); b.Version != "v9" || b.Revision != "abc" || b.GoVersion != "go1.99" {
		t.Errorf("Build() = %+v, want the Options' build info", b)
	}
}
