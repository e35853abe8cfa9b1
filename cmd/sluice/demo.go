package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/backend"
	"github.com/sluice-lb/sluice/internal/server"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [-listen ADDR] [-admin ADDR] [-backends N] [-backend-port P]", stderr)
	listen := fs.String("listen", ":8080", "address of the balancer")
	adminAddr := fs.String("admin", "127.0.0.1:9090", "address of the admin API and dashboard")
	n := fs.Int("backends", 3, "number of demo backends")
	port := fs.Int("backend-port", 8081, "port of the first backend; the others follow it")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 100 {
		return usageError{fmt.Errorf("-backends %d: use 1 to 100", *n)}
	}
	if *port < 1 || *port+*n-1 > 65535 {
		return usageError{fmt.Errorf("-backend-port %d: the %d ports must lie in 1-65535", *port, *n)}
	}

	// Bind every backend first, so a port in use is reported before anything
	// starts.
	var lns []net.Listener
	var urls []string
	for i := range *n {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*port+i))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("demo backend: %w (is a demo already running? try -backend-port)", err)
		}
		lns = append(lns, ln)
		urls = append(urls, "http://"+addr)
	}
	cfg, err := quickConfig(*listen, urls, "round_robin", "/health", 2*time.Second, *adminAddr)
	if err != nil {
		return err
	}
	cfg.Pools[0].Name = "demo"
	cfg.Listeners[0].Pool = "demo"
	cfg.Listeners[0].Name = "demo"

	bctx, bcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	blog := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
	return serve(ctx, cfg, stdout, stderr, func(context.Context, *server.Server) { printTour(stdout, *listen, *adminAddr, urls) })
}

func printTour(w io.Writer, listen, adminAddr string, backends []string) {
	lb := "http://" + hostForURL(listen)
	adm := "http://" + hostForURL(adminAddr)
	fmt.Fprintf(w, `
sluice demo is running: round robin over %d backends, health checks every 2s on /health.

  balancer    %s
  backends    %s … %s
  dashboard   %s/

Try:
  curl %s/                                  # again and again: the backend changes
  curl -X POST %s/health/down   # fail its health check: it leaves rotation after 3 checks
  curl -X POST %s/health/up     # it comes back after 2 passing checks
  curl %s/api/v1/pools                    # state of every backend
  curl -s %s/metrics | grep ^sluice_        # Prometheus metrics

Ctrl-C stops everything.

`, len(backends), lb, backends[0], backends[len(backends)-1], adm,
		lb, backends[0], backends[0], adm, adm)
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
