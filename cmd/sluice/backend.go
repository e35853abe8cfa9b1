package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"syscall"

	"github.com/sluice-lb/sluice/internal/backend"
)

func cmdBackend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backend", "backend -listen ADDR [-name NAME]", stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	name := fs.String("name", "", "name in responses and the X-Backend header (default: the listen address)")
	if err := parse(fs, args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w (is the port in use? change -listen)", err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	logger.Info("backend listening", "address", ln.Addr().String())
	return backend.New(*name, logger).Serve(ctx, ln)
}
