package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/gcfloor"
	"github.com/sluice-lb/sluice/internal/sdnotify"
	"github.com/sluice-lb/sluice/internal/server"
	"github.com/sluice-lb/sluice/internal/upgrade"
)

// serveOptions are what a command adds to a config when it runs a server.
type serveOptions struct {
	// started, when not nil, is called once the server is ready, with a
	// context that ends at shutdown; it may block until then (serve waits
	// for it).
	started func(context.Context, *server.Server)
	// quick says the config came from flags: start-up errors name them.
	quick bool
	// pidfile, when not "", gets the process ID once the server is ready.
	pidfile string
	// upgrade: SIGUSR2 starts the binary again and hands it the sockets
	// (package upgrade); a process started so takes them over.
	upgrade bool
}

// upgradeTimeout bounds how long a new process may take to be ready.
const upgradeTimeout = time.Minute

// serve runs a server until SIGINT/SIGTERM, reloading on SIGHUP. A second
// SIGINT/SIGTERM during shutdown kills the process at once. Under systemd
// it speaks the notify protocol through the server's Notifier (see
// lifecycle).
func serve(ctx context.Context, cfg *config.Config, out streams, so serveOptions) error {
	logger := newLogger(cfg.Log, out.stderr, underJournal(out.stderr, os.Getenv("JOURNAL_STREAM")))
	sd, err := sdnotify.New()
	if err != nil {
		logger.Warn("NOTIFY_SOCKET is set but unusable; systemd will not hear from sluice", "error", err)
	}
	life := &lifecycle{logger: logger, sd: sd, pidfile: so.pidfile, ready: make(chan struct{})}
	b := buildInfo()
	opts := server.Options{Logger: logger, Version: b.short(), Stdout: out.stdout,
		Build:  server.BuildInfo{Version: b.Version, Revision: b.Revision, GoVersion: b.GoVersion},
		Notify: life}
	if so.upgrade {
		if life.upg, err = upgrade.New(); err != nil {
			return err
		}
		opts.Listen = life.upg.Listen
		opts.ListenPacket = life.upg.ListenPacket
	}
	srv, err := server.New(cfg, opts)
	if err != nil {
		return err
	}
	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// ctx ends when shutdown begins. The goroutines below end with it, or
	// with alive for the signal loops; serve returns only after them, also
	// when Run fails at start-up.
	ctx, cancel := context.WithCancel(sigCtx)
	var wg sync.WaitGroup
	defer wg.Wait()
	alive, endSignals := context.WithCancel(context.Background())
	defer endSignals()
	defer cancel()
	defer life.exit()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		stop() // a second signal now takes the default action: exit
	}()
	// onSignal runs f at each sig, on a goroutine serve waits for, until
	// serve returns: not only until shutdown begins, so that a SIGHUP or
	// SIGUSR2 reaching a draining process (logrotate, or an operator who
	// read the PID file just before an upgrade) gets a log line instead of
	// the signal's default action, which is to exit at once.
	onSignal := func(sig os.Signal, f func()) {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, sig)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer signal.Stop(ch)
			for {
				select {
				case <-alive.Done():
					return
				case <-ch:
					f()
				}
			}
		}()
	}
	if gcfloor.Enabled() {
		// For as long as serve runs, draining included.
		wg.Add(1)
		go func() {
			defer wg.Done()
			gcfloor.Run(alive, gcfloor.DefaultFloor, gcfloor.DefaultEvery, logger)
		}()
	}
	onSignal(syscall.SIGHUP, func() {
		if ctx.Err() != nil {
			logger.Warn("reload ignored: this process is shutting down")
			return
		}
		srv.Reload() // the server logs the outcome and tells life
	})
	if life.upg != nil {
		onSignal(syscall.SIGUSR2, func() {
			if life.upgrade(ctx, srv) {
				cancel() // drain and exit, as on SIGTERM
			}
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-life.ready:
		}
		if so.started != nil {
			so.started(ctx, srv)
		}
		<-ctx.Done()
	}()
	if err := srv.Run(ctx); err != nil {
		return startError(err, cfg, so.quick)
	}
	return nil
}

// lifecycle is the server's Notifier: it tells systemd (READY=1 once
// every listener is bound, RELOADING=1 with MONOTONIC_USEC and READY=1
// around each reload, whatever asked for it, STOPPING=1 when shutdown
// begins) and writes the PID file once serving. A process that took over
// in an upgrade says MAINPID=<its pid> with its READY=1, then tells the old
// process; one that handed over says nothing more.
type lifecycle struct {
	logger  *slog.Logger
	sd      *sdnotify.Notifier // nil: not under systemd
	pidfile string
	upg     *upgrade.Upgrader // nil: no upgrades (sluice demo)
	ready   chan struct{}     // closed by Ready
	wrote   bool              // the PID file holds our PID (set by Ready)
	// successor is the PID of the process this one handed over to (0:
	// none): it serves, and this one only drains.
	successor atomic.Int64
}

var _ server.Notifier = (*lifecycle)(nil)

func (l *lifecycle) notify(states ...string) {
	if l.successor.Load() != 0 {
		return
	}
	if err := l.sd.Notify(states...); err != nil {
		l.logger.Warn("systemd notification failed", "error", err)
	}
}

func (l *lifecycle) Ready() {
	if l.pidfile != "" {
		if err := writePIDFile(l.pidfile); err != nil {
			l.logger.Error("pid file not written", "file", l.pidfile, "error", err)
		} else {
			l.wrote = true
		}
	}
	if l.upg != nil && l.upg.HasParent() {
		// systemd must know the new main process before the old one exits.
		l.notify("MAINPID="+strconv.Itoa(os.Getpid()), sdnotify.Ready, "STATUS=serving; upgraded")
		if err := l.upg.Ready(); err != nil {
			l.logger.Error("the old process could not be told that this one serves", "error", err)
		} else {
			l.logger.Info("upgrade: this process serves; the old one drains and exits", "pid", os.Getpid())
		}
	} else {
		l.notify(sdnotify.Ready, "STATUS=serving")
		if l.upg != nil {
			l.upg.Ready()
		}
	}
	close(l.ready)
}

// upgrade starts the binary again and hands it the sockets (SIGUSR2). It
// reports whether the new process serves: this one should then drain and
// exit. A failure is logged and changes nothing. The process this one
// replaced may still be draining: each drains on its own (see package
// upgrade).
func (l *lifecycle) upgrade(ctx context.Context, srv *server.Server) bool {
	if pid := l.successor.Load(); pid != 0 {
		l.logger.Warn("upgrade refused: this process has handed over and is draining; signal the process that serves (the PID file names it)",
			"new_pid", pid)
		return false
	}
	if ctx.Err() != nil {
		l.logger.Warn("upgrade refused: this process is shutting down")
		return false
	}
	select {
	case <-l.ready:
	default:
		l.logger.Warn("upgrade refused: this process is not serving yet")
		return false
	}
	l.logger.Info("upgrade: starting the new process", "binary", l.upg.Binary())
	ctx, cancel := context.WithTimeout(ctx, upgradeTimeout)
	defer cancel()
	pid, err := l.upg.Upgrade(ctx)
	if err != nil {
		l.logger.Error("upgrade failed; this process keeps serving", "error", err)
		// The new process may have claimed the PID file and, under
		// systemd, the main PID before it failed: claim them back.
		if l.wrote {
			if err := writePIDFile(l.pidfile); err != nil {
				l.logger.Error("pid file not written", "file", l.pidfile, "error", err)
			}
		}
		l.notify("MAINPID="+strconv.Itoa(os.Getpid()), sdnotify.Ready, "STATUS=serving; the last upgrade failed")
		return false
	}
	l.successor.Store(int64(pid))
	srv.HandOver()
	l.logger.Info("upgrade: the new process serves; this one stops accepting, drains and exits", "new_pid", pid)
	return true
}

func (l *lifecycle) Reloading() {
	if l.successor.Load() != 0 {
		return
	}
	if err := l.sd.Reloading(); err != nil {
		l.logger.Warn("systemd notification failed", "error", err)
	}
}

func (l *lifecycle) Reloaded(err error) {
	status := "STATUS=serving; config reloaded"
	if err != nil {
		status = "STATUS=serving; the last reload failed, the previous config keeps serving"
	}
	l.notify(sdnotify.Ready, status)
}

func (l *lifecycle) Stopping() { l.notify(sdnotify.Stopping) }

// exit removes the PID file this process wrote (serve returns: Ready, if
// it was told, was told before).
func (l *lifecycle) exit() {
	if l.wrote {
		removePIDFile(l.pidfile)
	}
}

// startError names the quick form's flag when the address it gave is taken:
// the server's own message speaks of admin.address, a key of a file the
// user never wrote.
func startError(err error, cfg *config.Config, quick bool) error {
	var le *server.ListenError
	if !quick || !errors.As(err, &le) {
		return err
	}
	reason := le.Err
	var oe *net.OpError
	if errors.As(le.Err, &oe) {
		reason = oe.Err // "bind: address already in use", without the address again
	}
	switch {
	case le.Listener == "":
		return fmt.Errorf("-admin %s: %w (another sluice, the demo perhaps, may be running: choose another address with -admin ADDR)", le.Address, reason)
	case len(cfg.Listeners) > 0 && le.Listener == cfg.Listeners[0].Name:
		return fmt.Errorf("-listen %s: %w (choose another address with -listen ADDR)", le.Address, reason)
	}
	return err
}

func writePIDFile(path string) error {
	return os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// removePIDFile removes the file if it still holds this process's ID (a
// process that took over may have written its own).
func removePIDFile(path string) {
	if b, err := os.ReadFile(path); err == nil && string(b) == strconv.Itoa(os.Getpid())+"\n" {
		os.Remove(path)
	}
}
