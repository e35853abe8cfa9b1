package loop

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Non-blocking I/O on descriptors a loop owns: raw system calls, without
// the scheduler's entersyscall/exitsyscall around them (none of them
// blocks). The error is an Errno, not an error, so that EAGAIN costs no
// allocation or interface conversion.

// Read reads from fd into p.
func Read(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// Write writes p to fd.
func Write(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// Writev writes a, b and c to fd, in that order, in one system call;
// empty ones are left out.
func Writev(fd int, a, b, c []byte) (int, unix.Errno) {
	var iov [3]unix.Iovec
	n := 0
	for _, p := range [3][]byte{a, b, c} {
		if len(p) > 0 {
			iov[n].Base = unsafe.SliceData(p)
			iov[n].SetLen(len(p))
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

func closeFD(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// rawEpollWait is epoll_pwait as a raw system call (Config.RawWait).
func rawEpollWait(epfd int, events []unix.EpollEvent, msec int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Ready is what edge-triggered events have said of a socket, kept until a
// read or write returns EAGAIN: Rd, the next read may return bytes (or EOF,
// or an error); Wr, the next write may be taken; Hup, the peer has shut
// down its side or the socket failed, so reads end.
type Ready struct {
	Rd, Wr, Hup bool
}

// Note records what ev says.
func (r *Ready) Note(ev Events) {
	if ev&(In|RdHup|Hup|Err) != 0 {
		r.Rd = true
	}
	if ev&(RdHup|Hup|Err) != 0 {
		r.Hup = true
	}
	if ev&(Out|Hup|Err) != 0 {
		r.Wr = true
	}
}

// Accept accepts a connection on listening socket lfd: its descriptor
// (non-blocking, close-on-exec, TCP_NODELAY) and the client's address. The
// error is EAGAIN when none is waiting.
func Accept(lfd int) (int, netip.AddrPort, error) {
	fd, sa, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return fd, addrPort(sa), nil
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, unix.AF_INET6
}

// Listen opens a non-blocking listening TCP socket on ap; with reusePort,
// SO_REUSEPORT, so that each loop can have a socket of its own on the same
// address and the kernel spreads connections between them.
func Listen(ap netip.AddrPort, reusePort bool) (int, error) {
	sa, family := sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %v: %w", ap, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %v: %w", ap, err)
	}
	return fd, nil
}

// Dial starts a non-blocking connect to ap (TCP_NODELAY, and TCP
// keep-alive once idle for keepAlive, then a probe every 15 s, 9 of them,
// as Go's dialer sets it; 0: none). connected is false while the connect is in
// progress: the socket is usable once it is writable, and SockError then
// says whether it failed.
func Dial(ap netip.AddrPort, keepAlive time.Duration) (fd int, connected bool, err error) {
	sa, family := sockaddr(ap)
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if secs := int(keepAlive / time.Second); secs > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs)
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9)
	}
	switch err := unix.Connect(fd, sa); err {
	case nil:
		return fd, true, nil
	case unix.EINPROGRESS:
		return fd, false, nil
	default:
		closeFD(fd)
		return -1, false, fmt.Errorf("connect %v: %w", ap, err)
	}
}

// SockError reports the error a non-blocking connect on fd ended with.
func SockError(fd int) error {
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return unix.Errno(soerr)
	}
	return nil
}

// Peek reports whether fd has a byte to read, without taking it or
// waiting: n is 1 when it has, 0 at EOF; the Errno is EAGAIN when nothing
// waits. A raw recvfrom with no address, which allocates nothing.
func Peek(fd int) (int, unix.Errno) {
	var b [1]byte
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}
