//go:build !linux

package h1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
)

// Loops need epoll (loop_linux.go); elsewhere `engine: loop` is refused
// when the config is checked, and NewLoops says why.
type Loops struct{}

// NewLoops reports that this system has no event loops.
func NewLoops(int, *slog.Logger) (*Loops, error) {
	return nil, errors.New("engine: loop needs Linux (epoll); this system is " + runtime.GOOS)
}

func (*Loops) Run(context.Context) error { return nil }
func (*Loops) Close()                    {}
func (*Loops) Len() int                  { return 0 }
func (*Loops) take(*h1conn) *lconn       { return nil }

type lconn struct{}

func (*lconn) enter()   {}
func (*lconn) discard() {}

func (*lconn) post(func())      {}
func (*lconn) abort()           {}
func (*lconn) closeIfIdle(bool) {}

// LoopTLS returns nc: without loops, TLS runs over the accepted connection.
func LoopTLS(nc net.Conn) net.Conn { return nc }
