package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/server"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run -config FILE | run -listen ADDR -backend URL [-backend URL ...]", stderr)
	path := fs.String("config", "", "config file (default ./sluice.yaml when no -backend is given)")
	listen := fs.String("listen", ":8080", "quick form: address to accept clients on")
	var backends stringList
	fs.Var(&backends, "backend", "quick form: backend URL, e.g. http://127.0.0.1:8081 (repeat for more)")
	balance := fs.String("balance", "round_robin", "quick form: balancing policy (round_robin | random | least_requests | p2c | consistent_hash | ip_hash)")
	healthPath := fs.String("health-path", "/", "quick form: path of the HTTP health check")
	healthInterval := fs.Duration("health-interval", 10*time.Second, "quick form: time between health checks (0 turns them off)")
	adminAddr := fs.String("admin", "127.0.0.1:9090", "quick form: admin API, metrics and dashboard address")
	watch := fs.Bool("watch", false, "reload the config file when its content changes (checked every second)")
	if err := parse(fs, args); err != nil {
		return err
	}
	quick := len(backends) > 0
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if quick && (set["config"] || *watch) {
		return usageError{errors.New("give either -config (with -watch) or -backend flags, not both")}
	}
	if !quick {
		for _, name := range []string{"listen", "balance", "health-path", "health-interval", "admin"} {
			if set[name] {
				return usageError{fmt.Errorf("-%s belongs to the quick form: add at least one -backend URL, or put it in the config file", name)}
			}
		}
	}
	var cfg *config.Config
	if quick {
		var err error
		cfg, err = quickConfig(*listen, backends, *balance, *healthPath, *healthInterval, *adminAddr)
		if err != nil {
			return err
		}
	} else {
		if *path == "" {
			*path = "sluice.yaml"
		}
		var err error
		cfg, err = config.Load(*path)
		if err != nil {
			return configError(err, *path)
		}
	}
	var started func(context.Context, *server.Server)
	if *watch {
		started = func(ctx context.Context, srv *server.Server) { srv.Watch(ctx, time.Second) }
	}
	return serve(ctx, cfg, stdout, stderr, started)
}

// quickConfig builds the one-listener, one-pool config of the quick form.
func quickConfig(listen string, backends []string, balance, healthPath string, healthInterval time.Duration, adminAddr string) (*config.Config, error) {
	pc := config.Pool{Name: "default", Balance: balance}
	for _, b := range backends {
		pc.Backends = append(pc.Backends, config.Backend{Address: b})
	}
	if healthInterval > 0 {
		pc.HealthCheck = &config.HealthCheck{Path: healthPath, Interval: healthInterval,
			Timeout: min(2*time.Second, healthInterval)}
	}
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "default", Address: listen, Pool: "default"}},
		Pools:     []config.Pool{pc},
		Admin:     config.Admin{Address: adminAddr},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, configError(err, "")
	}
	return cfg, nil
}

// configError formats config problems one per line, as `sluice validate`
// does.
func configError(err error, path string) error {
	var errs config.Errors
	if errors.As(err, &errs) {
		return fmt.Errorf("invalid config (%d problem%s):\n%w", len(errs), plural(len(errs)), err)
	}
	return err
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", "validate -config FILE", stderr)
	path := fs.String("config", "sluice.yaml", "config file to check")
	if err := parse(fs, args); err != nil {
		return err
	}
	if _, err := config.Load(*path); err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(stderr, e.Error())
			}
			return fmt.Errorf("%s: %d problem%s", *path, len(errs), plural(len(errs)))
		}
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

// serve runs a server until SIGINT/SIGTERM, reloading on SIGHUP. A second
// SIGINT/SIGTERM during shutdown kills the process at once. started, when
// not nil, is called once the server is ready, with a context that ends at
// shutdown; it may block until then (serve waits for it).
func serve(ctx context.Context, cfg *config.Config, stdout, stderr io.Writer, started func(context.Context, *server.Server)) error {
	logger := newLogger(cfg.Log, stderr)
	srv, err := server.New(cfg, server.Options{Logger: logger, Version: versionString(), Stdout: stdout})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The goroutines below end with ctx; serve returns only after them,
	// also when Run fails at start-up.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		stop() // a second signal now takes the default action: exit
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
				srv.Reload()
			}
		}
	}()
	if started != nil {
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
			started(ctx, srv)
		}()
	}
	return srv.Run(ctx)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
