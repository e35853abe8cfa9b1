// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): one datagram of newline-separated VAR=VALUE assignments
// sent to the unix datagram socket named by $NOTIFY_SOCKET. It needs no
// library: the protocol is a single sendto.
//
// A nil *Notifier, the result of New when sluice does not run under a
// service manager, accepts every call and sends nothing, so callers never
// test for systemd themselves.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The states sluice sends. See sd_notify(3) for their meaning to systemd.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// ErrUnsupported is returned by New for a NOTIFY_SOCKET that names
// something other than a unix socket (systemd also knows vsock:).
var ErrUnsupported = errors.New("sdnotify: unsupported NOTIFY_SOCKET")

// Notifier sends notifications to one socket. It is safe for concurrent
// use: each call is one datagram.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns a Notifier for $NOTIFY_SOCKET, or nil when it is unset or
// empty (not under systemd, or a unit type that does not listen). An
// abstract socket is written "@name", as systemd does. New unsets nothing:
// child processes inherit the variable, which is what an upgrade needs.
func New() (*Notifier, error) {
	return FromAddress(os.Getenv("NOTIFY_SOCKET"))
}

// FromAddress is New for an explicit socket address ("" returns nil).
func FromAddress(addr string) (*Notifier, error) {
	switch {
	case addr == "":
		return nil, nil
	case addr[0] == '/' || addr[0] == '@':
		// Go maps a leading '@' to the abstract namespace (a leading NUL).
		return &Notifier{addr: &net.UnixAddr{Name: addr, Net: "unixgram"}}, nil
	default:
		return nil, fmt.Errorf("%w %q: want an absolute path or @abstract name", ErrUnsupported, addr)
	}
}

// Notify sends the given assignments ("READY=1", "STATUS=...") as one
// datagram. On a nil Notifier it does nothing.
func (n *Notifier) Notify(states ...string) error {
	if n == nil || len(states) == 0 {
		return nil
	}
	for _, s := range states {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("sdnotify: %q is not VAR=VALUE", s)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(strings.Join(states, "\n") + "\n")); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// Reloading tells systemd a reload has begun. systemd wants the time of
// CLOCK_MONOTONIC with it, so that it can tell this reload's READY=1 from a
// stale one; Ready ends the reload.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return n.Notify(Reloading, "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
}

// MainPID tells systemd that pid is now the service's main process, as a
// process that took over from its parent does.
func (n *Notifier) MainPID(pid int) error {
	return n.Notify("MAINPID=" + strconv.Itoa(pid))
}

// Status sends a one-line status text that `systemctl status` shows.
func (n *Notifier) Status(text string) error {
	return n.Notify("STATUS=" + strings.ReplaceAll(text, "\n", " "))
}
