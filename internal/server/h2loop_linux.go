package server

import (
	"net"
	"net/http"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy/h2"
)

// serveLoop serves c on one of the event loops, with no goroutine waiting
// for it: ended is called once the connection is over (detached). served
// is false when no loop can take it (then nothing of c was touched); true
// and not detached when the front's closeAll had closed c already. hold
// takes c onto its loop where closeAll will find it (front.closer).
func (o *ownH2) serveLoop(c net.Conn, g *h2guard.Config, h http.Handler, hold func(take func() func()) bool, ended func()) (served, detached bool) {
	var lc *h2.LoopConn
	if !hold(func() func() {
		sk := o.loops.TakeSocket(c)
		if sk == nil {
			return nil
		}
		lc = o.srv.NewLoopConn(sk, h2guard.NewScanner(g), h2.ServeConnOpts{Handler: h})
		return lc.Close
	}) {
		return true, false
	}
	if lc == nil {
		return false, false
	}
	lc.Start(ended)
	return true, true
}
