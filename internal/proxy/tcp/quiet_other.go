//go:build !linux

package tcp

import (
	"net"
	"time"
)

// lastReceived cannot ask the kernel outside Linux: the idle timeout of a
// relayed connection then never fires (a connection is never closed as
// idle by mistake).
func lastReceived(*net.TCPConn) (time.Duration, bool) { return 0, false }
