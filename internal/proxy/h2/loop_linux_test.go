package h2

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
)

// With SLUICE_H2_LOOP=1 (a pass of make test) the package's tests serve
// their connections on event loops (ServeLoop), made once for the test
// binary; otherwise on goroutines (ServeConn).
var onLoops = os.Getenv("SLUICE_H2_LOOP") == "1"

var testLoops = sync.OnceValues(func() (*h1.Loops, error) {
	ls, err := h1.NewLoops(2, nil)
	if err != nil {
		return nil, err
	}
	go ls.Run(context.Background()) // for the life of the test binary
	return ls, nil
})

// serveConn serves c with srv until the connection ends.
func serveConn(t testing.TB, srv *Server, c net.Conn, o ServeConnOpts) {
	if !onLoops || o.UpgradeRequest != nil {
		srv.ServeConn(c, o)
		return
	}
	ls, err := testLoops()
	if err != nil {
		t.Errorf("event loops: %v", err)
		c.Close()
		return
	}
	serveOnLoop(t, ls, srv, c, nil, nil, o)
}

// serveOnLoop serves c with srv on one of ls's loops, with the flood guard
// g configures (when not nil) and wrap (when not nil) given the socket
// first.
func serveOnLoop(t testing.TB, ls *h1.Loops, srv *Server, c net.Conn, g *h2guard.Config, wrap func(*h1.Socket) Socket, o ServeConnOpts) {
	sk := ls.TakeSocket(c)
	if sk == nil {
		t.Errorf("the loops did not take a %T", c)
		c.Close()
		return
	}
	var sc *h2guard.Conn
	if g != nil {
		sc = h2guard.NewScanner(g)
	}
	var s Socket = sk
	if wrap != nil {
		s = wrap(sk)
	}
	srv.ServeLoop(s, sc, o)
}
