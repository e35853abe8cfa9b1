package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/server"
)

// defaultConfig is the file `sluice run` reads when given neither -config
// nor -backend.
const defaultConfig = "sluice.yaml"

var runCommand = &command{
	name:    "run",
	summary: "run from a config file, or from flags (the quick form)",
	synopsis: []string{
		"run [-config FILE] [-watch] [-pidfile FILE]",
		"run -listen ADDR -backend URL [-backend URL ...] [-balance POLICY] [-health-path PATH] [-health-interval DURATION] [-admin ADDR] [-pidfile FILE]",
	},
	about: `Runs sluice from a config file (default ./sluice.yaml), or, in the quick form, from flags: ` +
		`one listener and one pool of the -backend URLs, with HTTP health checks on -health-path every ` +
		`-health-interval. SIGHUP reloads the config file (the new one is validated first; an invalid ` +
		`one leaves the old one serving), SIGTERM and SIGINT shut down gracefully. SIGUSR2 upgrades ` +
		`without downtime: the binary at the same path starts with the same arguments and takes over ` +
		`every listening socket; once it serves, this process stops accepting, drains as on SIGTERM ` +
		`(but lets its WebSockets run until they end or shutdown_timeout) and exits 0, and the new one ` +
		`may be upgraded again at once (a new binary that fails to start leaves this one serving, with ` +
		`the reason logged). ` +
		`-pidfile follows the process that serves. Under systemd (NOTIFY_SOCKET set) sluice sends ` +
		`READY=1 once serving, RELOADING=1 and READY=1 around each reload, and STOPPING=1 at ` +
		`shutdown; after an upgrade the new process sends MAINPID= and READY=1, the old one nothing more.`,
	choices: func() map[string][]string { return map[string][]string{"balance": balance.Names(nil)} },
	setup: func(fs *flag.FlagSet) action {
		var o runOptions
		fs.StringVar(&o.path, "config", "", "run from config `FILE` (default ./sluice.yaml when no -backend is given)")
		fs.BoolVar(&o.watch, "watch", false, "reload the config file whenever its content changes (checked every second)")
		fs.StringVar(&o.pidfile, "pidfile", "", "write the process ID to `FILE` once serving; removed at exit")
		fs.StringVar(&o.listen, "listen", ":8080", "quick form: accept clients on `ADDR`")
		fs.Var(&o.backends, "backend", "quick form: backend `URL`, e.g. http://127.0.0.1:8081 (repeat for more)")
		fs.StringVar(&o.balance, "balance", balance.Default, "quick form: balancing `POLICY`: "+strings.Join(balance.Names(nil), ", "))
		fs.StringVar(&o.healthPath, "health-path", "/", "quick form: `PATH` of the HTTP health check")
		o.healthInterval = durationVar(fs, "health-interval", 10*time.Second, "quick form: `DURATION` between health checks (0 turns them off)")
		fs.StringVar(&o.admin, "admin", "127.0.0.1:9090", "quick form: serve the admin API, metrics and dashboard on `ADDR`")
		return func(ctx context.Context, out streams, _ []string) error {
			o.set = map[string]bool{}
			fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
			return o.run(ctx, out)
		}
	},
}

type runOptions struct {
	path, listen, balance, healthPath, admin, pidfile string
	backends                                          stringList
	healthInterval                                    *time.Duration
	watch                                             bool
	set                                               map[string]bool // flags given on the command line
}

// quickFlags are the flags of the quick form, besides -backend.
var quickFlags = []string{"listen", "balance", "health-path", "health-interval", "admin"}

func (o *runOptions) run(ctx context.Context, out streams) error {
	quick := len(o.backends) > 0
	if quick && (o.set["config"] || o.watch) {
		return usagef("give either -config (with -watch) or -backend flags, not both")
	}
	if !quick {
		for _, name := range quickFlags {
			if o.set[name] {
				return usagef("-%s belongs to the quick form: add at least one -backend URL, or put it in the config file", name)
			}
		}
	}
	var cfg *config.Config
	var err error
	if quick {
		cfg, err = quickConfig(quickOptions{listen: o.listen, backends: o.backends, balance: o.balance,
			healthPath: o.healthPath, healthInterval: *o.healthInterval, admin: o.admin})
		if err != nil {
			return err
		}
	} else {
		if o.path == "" {
			if _, err := os.Stat(defaultConfig); errors.Is(err, fs.ErrNotExist) {
				return usageError{errNoConfig}
			}
			o.path = defaultConfig
		}
		if cfg, err = config.Load(o.path); err != nil {
			return configError(err)
		}
	}
	so := serveOptions{quick: quick, pidfile: o.pidfile, upgrade: true}
	if o.watch {
		so.started = func(ctx context.Context, srv *server.Server) { srv.Watch(ctx, time.Second) }
	}
	return serve(ctx, cfg, out, so)
}

var errNoConfig = errors.New(`no config file: ./sluice.yaml does not exist here. Either
  sluice run -config FILE                              run from a config file (see examples/)
  sluice run -listen :8080 -backend http://HOST:PORT   the quick form: one listener, one pool
  sluice demo                                          see it work with three demo backends`)

// quickOptions are the quick form's flag values.
type quickOptions struct {
	listen         string
	backends       []string
	balance        string
	healthPath     string
	healthInterval time.Duration
	admin          string
}

// quickConfig builds the one-listener, one-pool config of the quick form. A
// bad value is a usage error that names its flag.
func quickConfig(q quickOptions) (*config.Config, error) {
	for _, b := range q.backends {
		if !strings.Contains(b, "://") {
			return nil, usagef("-backend %q: give a URL with a scheme, e.g. -backend http://%s", b, b)
		}
		if _, err := config.ParseBackendAddress(b); err != nil {
			return nil, usagef("-backend: %v", err)
		}
	}
	if q.healthInterval > 0 && !strings.HasPrefix(q.healthPath, "/") {
		return nil, usagef("-health-path %q: a path starts with \"/\", e.g. /health", q.healthPath)
	}
	if _, ok := balance.Lookup(q.balance); !ok {
		return nil, usagef("-balance %q: unknown policy: use one of %s", q.balance, strings.Join(balance.Names(nil), ", "))
	}
	pc := config.Pool{Name: "default", Balance: q.balance}
	for _, b := range q.backends {
		pc.Backends = append(pc.Backends, config.Backend{Address: b})
	}
	if q.healthInterval > 0 {
		pc.HealthCheck = &config.HealthCheck{Path: q.healthPath, Interval: q.healthInterval,
			Timeout: min(2*time.Second, q.healthInterval)}
	}
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "default", Address: q.listen, Pool: "default"}},
		Pools:     []config.Pool{pc},
		Admin:     config.Admin{Address: q.admin},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, quickError(err)
	}
	return cfg, nil
}

// quickFlagOf names the flag behind a field of the quick form's config.
var quickFlagOf = []struct{ prefix, flag string }{
	{"listeners[0].address", "-listen"},
	{"pools[0].backends", "-backend"},
	{"pools[0].balance", "-balance"},
	{"pools[0].hash_key", "-balance"},
	{"pools[0].health_check.path", "-health-path"},
	{"pools[0].health_check", "-health-interval"},
	{"admin", "-admin"},
}

// quickError turns the config's problems into a usage error naming flags
// rather than field paths (pools[0]... means nothing to someone who wrote
// no file).
func quickError(err error) error {
	var errs config.Errors
	if !errors.As(err, &errs) {
		return err
	}
	var lines []string
	for _, e := range errs {
		name := "the command line"
		for _, q := range quickFlagOf {
			if strings.HasPrefix(e.Path, q.prefix) {
				name = q.flag
				break
			}
		}
		lines = append(lines, name+": "+e.Msg)
	}
	return usageError{errors.New(strings.Join(lines, "\n"))}
}

// configError formats config problems one per line, as `sluice validate`
// does.
func configError(err error) error {
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
