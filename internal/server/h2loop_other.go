//go:build !linux

package server

import (
	"net"
	"net/http"

	"github.com/sluice-lb/sluice/internal/h2guard"
)

// forwardOnLoops: without event loops (Linux only), workers serve streams.
func (*ownH2) forwardOnLoops() {}

// serveLoop: without event loops (Linux only), goroutines serve HTTP/2.
func (o *ownH2) serveLoop(net.Conn, *h2guard.Config, http.Handler, func(func() func()) bool, func()) (served, detached bool) {
	return false, false
}
