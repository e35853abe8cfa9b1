//go:build !linux

package h2

import "time"

// lwire is a connection's I/O on an event loop, which only Linux has
// (loop_linux.go): elsewhere no connection has one.
type lwire struct {
	sk               interface{ Queued() int }
	blocked, inEvent bool
}

func (*lwire) flushLocked()                    {}
func (*lwire) setReadDeadlineLocked(time.Time) {}
