package server

import (
	"net"
	"net/http"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
	"github.com/sluice-lb/sluice/internal/proxy/h2"
)

// forwardOnLoops has the server's connections on the event loops forward
// the streams that the loops can forward themselves through the
// listener's engine (h1.Engine.ForwardStream), with no goroutine per
// stream.
func (o *ownH2) forwardOnLoops() { o.srv.Forward = o }

// Forward is h2.LoopForwarder over the listener's engine.
func (o *ownH2) Forward(sk h2.Socket, head []byte, out h2.StreamOut) (h2.LoopStream, bool) {
	s, ok := sk.(*h1.Socket)
	e := o.engine.Load()
	if !ok || e == nil {
		return nil, false
	}
	return e.ForwardStream(s, head, out)
}

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
