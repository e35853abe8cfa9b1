package server

import (
	"net"
	"net/http"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy/h2"
)

// serveLoop serves c on one of the event loops until the connection ends;
// false when no loop can take it (then nothing of c was touched).
func (o *ownH2) serveLoop(c net.Conn, g *h2guard.Config, h http.Handler) bool {
	sk := o.loops.TakeSocket(c)
	if sk == nil {
		return false
	}
	o.srv.ServeLoop(sk, h2guard.NewScanner(g), h2.ServeConnOpts{Handler: h})
	return true
}
