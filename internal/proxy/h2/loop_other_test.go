//go:build !linux

package h2

import (
	"net"
	"testing"
)

const onLoops = false

func serveConn(_ testing.TB, srv *Server, c net.Conn, o ServeConnOpts) { srv.ServeConn(c, o) }
