package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os/signal"
	"syscall"

	"github.com/sluice-lb/sluice/internal/backend"
)

var backendCommand = &command{
	name:     "backend",
	summary:  "run the demo/test backend",
	synopsis: []string{"backend [-listen ADDR] [-name NAME]"},
	about: `Runs the small httpbin-like backend the demo, the tests and the benchmarks use: ` +
		`GET / answers "Hello from NAME"; /health (POST /health/down and /health/up flip it), ` +
		`/status/CODE, /delay/DURATION, /bytes/N, /echo, /stream?n=N&interval=D, /sse and /ws ` +
		`(WebSocket echo). Every response carries X-Backend: NAME.`,
	setup: func(fs *flag.FlagSet) action {
		listen := fs.String("listen", "127.0.0.1:8081", "listen on `ADDR`")
		name := fs.String("name", "", "`NAME` in responses and the X-Backend header (default: the listen address)")
		return func(ctx context.Context, out streams, _ []string) error {
			ln, err := net.Listen("tcp", *listen)
			if err != nil {
				return fmt.Errorf("listen: %w (is the port in use? change -listen)", err)
			}
			ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			logger := slog.New(slog.NewTextHandler(out.stderr, nil))
			logger.Info("backend listening", "address", ln.Addr().String())
			return backend.New(*name, logger).Serve(ctx, ln)
		}
	},
}
