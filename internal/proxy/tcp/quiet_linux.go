package tcp

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// lastReceived returns how long ago c last received data, from the
// kernel's TCP_INFO (tcpi_last_data_recv, in milliseconds).
func lastReceived(c *net.TCPConn) (time.Duration, bool) {
	if c == nil {
		return 0, false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, true
}
