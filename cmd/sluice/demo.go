package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/backend"
	"github.com/sluice-lb/sluice/internal/server"
)

var demoCommand = &command{
	name:     "demo",
	summary:  "run three demo backends and the balancer in one process",
	synopsis: []string{"demo [-listen ADDR] [-admin ADDR] [-backends N] [-backend-port PORT]"},
	about: `Starts N demo backends on 127.0.0.1 (consecutive ports from -backend-port; 0 lets the ` +
		`system pick a free port for each) and the ` +
		`balancer on -listen: round robin, health checks every 2s on /health, the admin API and ` +
		`dashboard on -admin. It prints what to try; Ctrl-C stops everything.`,
	setup: func(fs *flag.FlagSet) action {
		listen := fs.String("listen", ":8080", "accept clients on `ADDR`")
		adminAddr := fs.String("admin", "127.0.0.1:9090", "serve the admin API and dashboard on `ADDR`")
		n := fs.Int("backends", 3, "run `N` demo backends (1 to 100)")
		port := fs.Int("backend-port", 8081, "`PORT` of the first backend; the others follow it (0: any free ports)")
		return func(ctx context.Context, out streams, _ []string) error {
			return runDemo(ctx, out, *listen, *adminAddr, *n, *port)
		}
	},
}

func runDemo(ctx context.Context, out streams, listen, adminAddr string, n, port int) error {
	if n < 1 || n > 100 {
		return usagef("-backends %d: use 1 to 100", n)
	}
	if port < 0 || port+n-1 > 65535 {
		return usagef("-backend-port %d: the %d ports must lie in 1-65535 (or 0 for any free ports)", port, n)
	}

	// Bind every backend first, so a port in use is reported before anything
	// starts.
	var lns []net.Listener
	var urls []string
	for i := range n {
		p := 0
		if port > 0 {
			p = port + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("demo backend: %w (is a demo already running? try -backend-port)", err)
		}
		lns = append(lns, ln)
		urls = append(urls, "http://"+ln.Addr().String())
	}
	cfg, err := quickConfig(quickOptions{listen: listen, backends: urls, balance: "round_robin",
		healthPath: "/health", healthInterval: 2 * time.Second, admin: adminAddr})
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		return err
	}
	cfg.Pools[0].Name = "demo"
	cfg.Listeners[0].Pool = "demo"
	cfg.Listeners[0].Name = "demo"

	bctx, bcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	blog := slog.New(slog.NewTextHandler(out.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, ln := range lns {
		srv := backend.New("", blog)
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Serve(bctx, ln)
		}()
	}
	defer func() {
		bcancel()
		wg.Wait()
	}()
	return serve(ctx, cfg, out, serveOptions{quick: true, started: func(context.Context, *server.Server) {
		printTour(out.stdout, listen, adminAddr, urls)
	}})
}

func printTour(w io.Writer, listen, adminAddr string, backends []string) {
	lb := "http://" + hostForURL(listen)
	adm := "http://" + hostForURL(adminAddr)
	fmt.Fprintf(w, "\nsluice demo is running: round robin over %d backend%s, health checks every 2s on /health.\n\n",
		len(backends), plural(len(backends)))
	columns(w, "  ", [][]string{
		{"balancer", lb},
		{"backends", backendList(backends)},
		{"dashboard", adm + "/"},
	})
	fmt.Fprintln(w, "\nTry:")
	columns(w, "  ", [][]string{
		{"curl " + lb + "/", "# again and again: the backend changes"},
		{"curl -X POST " + backends[0] + "/health/down", "# fail its health check: it leaves rotation after 3 checks"},
		{"curl -X POST " + backends[0] + "/health/up", "# it comes back after 2 passing checks"},
		{"curl " + adm + "/api/v1/pools", "# state of every backend"},
		{"curl -s " + adm + "/metrics | grep ^sluice_", "# Prometheus metrics"},
	})
	fmt.Fprint(w, "\nCtrl-C stops everything.\n\n")
}

// backendList names the demo's backends: the first and the last when
// their ports run on one after another (the default 8081 … 8083), else
// every one (ports the system chose, -backend-port 0).
func backendList(backends []string) string {
	if len(backends) == 1 {
		return backends[0]
	}
	run := true
	for i := 1; i < len(backends) && run; i++ {
		a, errA := url.Parse(backends[i-1])
		b, errB := url.Parse(backends[i])
		pa, _ := strconv.Atoi(a.Port())
		pb, _ := strconv.Atoi(b.Port())
		run = errA == nil && errB == nil && a.Hostname() == b.Hostname() && pb == pa+1
	}
	if run {
		return backends[0] + " … " + backends[len(backends)-1]
	}
	return strings.Join(backends, " ")
}

// hostForURL turns a listen address into something to put in a URL: an
// empty or unspecified host becomes 127.0.0.1.
func hostForURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
