//go:build !linux

package h2

import (
	"time"

	"golang.org/x/net/http2"
)

// lwire is a connection's I/O on an event loop, which only Linux has
// (loop_linux.go): elsewhere no connection has one.
type lwire struct {
	sk               interface{ Queued() int }
	blocked, inEvent bool
}

func (*lwire) flushLocked() {}
func (*lwire) forwardLocked(*http2.MetaHeadersFrame) (bool, error) {
	return false, nil
}

// LoopForwarder forwards streams on event loops, which only Linux has.
type LoopForwarder interface{}

type loopStream struct{}

func (*loopStream) cancelLocked()              {}
func (*conn) pushLocked(*stream)               {}
func (*lwire) setReadDeadlineLocked(time.Time) {}
