package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/sdnotify"
	"github.com/sluice-lb/sluice/internal/server"
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
}

// serve runs a server until SIGINT/SIGTERM, reloading on SIGHUP. A second
// SIGINT/SIGTERM during shutdown kills the process at once. Under systemd
// it speaks the notify protocol: READY=1 once every listener is bound,
// RELOADING=1 (with MONOTONIC_USEC) and READY=1 around each SIGHUP reload,
// STOPPING=1 when shutdown begins.
func serve(ctx context.Context, cfg *config.Config, out streams, so serveOptions) error {
	logger := newLogger(cfg.Log, out.stderr, underJournal(out.stderr, os.Getenv("JOURNAL_STREAM")))
	notify, err := sdnotify.New()
	if err != nil {
		logger.Warn("NOTIFY_SOCKET is set but unusable; systemd will not hear from sluice", "error", err)
	}
	logNotify := func(states ...string) {
		if err := notify.Notify(states...); err != nil {
			logger.Warn("systemd notification failed", "error", err)
		}
	}
	srv, err := server.New(cfg, server.Options{Logger: logger, Version: buildInfo().short(), Stdout: out.stdout})
	if err != nil {
		return err
	}
	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The goroutines below end with ctx; serve returns only after them,
	// also when Run fails at start-up.
	ctx, cancel := context.WithCancel(sigCtx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		stop() // a second signal now takes the default action: exit
		if sigCtx.Err() != nil {
			logNotify(sdnotify.Stopping)
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := notify.Reloading(); err != nil {
					logger.Warn("systemd notification failed", "error", err)
				}
				status := "STATUS=serving; config reloaded"
				if err := srv.Reload(); err != nil {
					status = "STATUS=serving; the last reload failed, the previous config keeps serving"
				}
				logNotify(sdnotify.Ready, status)
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !srv.Ready() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		if so.pidfile != "" {
			if err := writePIDFile(so.pidfile); err != nil {
				logger.Error("pid file not written", "file", so.pidfile, "error", err)
			} else {
				defer removePIDFile(so.pidfile)
			}
		}
		logNotify(sdnotify.Ready, "STATUS=serving")
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

// startError names the quick form's flag when the address it gave is taken:
// the server's own message speaks of admin.address, a key of a file the
// user never wrote.
func startError(err error, cfg *config.Config, quick bool) error {
	var oe *net.OpError
	if !quick || !errors.As(err, &oe) || oe.Op != "listen" || oe.Addr == nil {
		return err
	}
	switch {
	case sameAddr(oe.Addr, cfg.Admin.Address):
		return fmt.Errorf("-admin %s: %w (another sluice, the demo perhaps, may be running: choose another address with -admin ADDR)", cfg.Admin.Address, oe.Err)
	case len(cfg.Listeners) > 0 && sameAddr(oe.Addr, cfg.Listeners[0].Address):
		return fmt.Errorf("-listen %s: %w (choose another address with -listen ADDR)", cfg.Listeners[0].Address, oe.Err)
	}
	return err
}

// sameAddr reports whether a bound address is the one written as s.
func sameAddr(a net.Addr, s string) bool {
	ta, ok := a.(*net.TCPAddr)
	want, err := net.ResolveTCPAddr("tcp", s)
	if !ok || err != nil || ta.Port != want.Port {
		return false
	}
	unspec := func(ip net.IP) bool { return ip == nil || ip.IsUnspecified() }
	return ta.IP.Equal(want.IP) || (unspec(ta.IP) && unspec(want.IP))
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
