package main

import (
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What an epoll registration belongs to; kept in the event's Pad field
// with a generation number above it (see loop.tag), so that an event read
// in the same batch as the close of its descriptor never reaches the
// object that reused the number.
const (
	kindListen   = 0
	kindClient   = 1
	kindUp       = 2
	kindH2Listen = 3 // the -h2c-listen socket (h2.go)
	kindH2       = 4 // an HTTP/2 client connection (h2.go)
	kindTLS      = 5 // the -h2-tls-listen socket (tls.go)
	kindWake     = 6 // handshakes done: connections to adopt (tls.go)
	kindBits     = 3
	kindMask     = 1<<kindBits - 1
)

// Every connection is registered once, edge-triggered, for both directions:
// the loop never calls epoll_ctl again for it (readiness is remembered in
// the rd/wr flags until a read or write says EAGAIN).
const connEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// loop is one event loop: its own epoll instance, its own SO_REUSEPORT
// listening socket, the client connections the kernel hands it, and the
// upstream connections those clients use. Nothing in it is shared with
// another loop, so it takes no lock.
type loop struct {
	id      int
	cfg     *config
	epfd    int
	lfd     int
	events  []unix.EpollEvent
	clients []*client // by descriptor
	ups     []*upconn // by descriptor
	gen     uint32
	idle    [][]*upconn // per backend: idle connections, most recent last
	rr      int
	bufs    [][]byte // free read buffers (cfg.bufSize)
	outs    [][]byte // free output buffers (cfg.outSize)
	xs      []*exchange
	now     int64 // nanoseconds, read once per wake-up
	wheel   wheel
	// HTTP/2 (h2.go): the listening socket (-1: none), the connections by
	// descriptor, those with frames to write at the end of this wake-up,
	// and a free list of streams.
	h2fd  int
	h2s   []*h2client
	dirty []*h2client
	sts   []*h2stream
	tls   *tlsState // HTTP/2 over TLS (tls.go); nil: none

	requests, accepted, dials, retries uint64
}

func newLoop(id int, cfg *config) (*loop, error) {
	l := &loop{id: id, cfg: cfg, events: make([]unix.EpollEvent, 256), idle: make([][]*upconn, len(cfg.backends)), h2fd: -1}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if l.lfd, err = listenReusePort(cfg.listen); err != nil {
		return nil, err
	}
	// The listening socket is level-triggered: accept runs until EAGAIN,
	// and a full descriptor table leaves the event pending.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.lfd), Pad: kindListen}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.lfd, &ev); err != nil {
		return nil, fmt.Errorf("epoll_ctl listener: %w", err)
	}
	if cfg.h2listen != nil {
		if l.h2fd, err = listenReusePort(cfg.h2listen); err != nil {
			return nil, err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.h2fd), Pad: kindH2Listen}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.h2fd, &ev); err != nil {
			return nil, fmt.Errorf("epoll_ctl h2c listener: %w", err)
		}
	}
	l.now = time.Now().UnixNano()
	l.wheel.cur = l.now / 1e9
	if cfg.tlsCfg != nil {
		s := &tlsState{cfg: cfg.tlsCfg}
		if s.lfd, err = listenReusePort(cfg.tlsListen); err != nil {
			return nil, err
		}
		if s.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			return nil, fmt.Errorf("eventfd: %w", err)
		}
		for _, x := range []struct {
			fd   int
			kind int32
		}{{s.lfd, kindTLS}, {s.evfd, kindWake}} {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(x.fd), Pad: x.kind}
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, x.fd, &ev); err != nil {
				return nil, fmt.Errorf("epoll_ctl TLS: %w", err)
			}
		}
		l.tls = s
	}
	return l, nil
}

func listenReusePort(sa *unix.SockaddrInet4) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return -1, fmt.Errorf("SO_REUSEPORT: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return -1, fmt.Errorf("bind %v: %w", netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		return -1, fmt.Errorf("listen: %w", err)
	}
	return fd, nil
}

func (l *loop) tag(kind int32) (int32, uint32) {
	l.gen++
	return int32(l.gen<<kindBits) | kind, l.gen
}

// register adds fd to the loop's epoll set, edge-triggered, once.
func (l *loop) register(fd int, pad int32) error {
	ev := unix.EpollEvent{Events: connEvents, Fd: int32(fd), Pad: pad}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// run waits for events and serves them; it never returns.
func (l *loop) run() {
	for {
		msec := -1
		if l.wheel.n > 0 {
			msec = int(((l.wheel.cur+1)*1e9-l.now)/1e6) + 1
			if msec < 0 {
				msec = 0
			}
		}
		var n int
		var err error
		if l.cfg.rawWait {
			n, err = rawEpollWait(l.epfd, l.events, msec)
		} else {
			n, err = unix.EpollWait(l.epfd, l.events, msec)
		}
		if err != nil && err != unix.EINTR {
			fmt.Fprintf(os.Stderr, "evproto: loop %d: epoll_wait: %v\n", l.id, err)
			os.Exit(1)
		}
		l.now = time.Now().UnixNano()
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			gen := uint32(ev.Pad) >> kindBits
			switch ev.Pad & kindMask {
			case kindListen:
				l.accept()
			case kindClient:
				if c := l.clients[fd]; c != nil && c.gen == gen {
					c.event(ev.Events)
				}
			case kindUp:
				if u := l.ups[fd]; u != nil && u.gen == gen {
					u.event(ev.Events)
				}
			case kindH2Listen:
				l.acceptH2()
			case kindTLS:
				l.acceptTLS()
			case kindWake:
				l.adopt()
			case kindH2:
				if c := l.h2s[fd]; c != nil && c.gen == gen {
					c.event(ev.Events)
				}
			}
		}
		// HTTP/2 connections write once per wake-up: the frames of every
		// stream whose response came in this batch go in one write.
		l.flushH2()
		if l.now/1e9 > l.wheel.cur {
			l.expire()
		}
	}
}

// acceptOne accepts a connection on the listening socket lfd: its
// descriptor (non-blocking, TCP_NODELAY) and the client's address; false
// when none is waiting.
func (l *loop) acceptOne(lfd int) (int, netip.Addr, bool) {
	fd, sa, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	if err != nil {
		if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
			fmt.Fprintf(os.Stderr, "evproto: loop %d: accept: %v\n", l.id, err)
		}
		return -1, netip.Addr{}, false
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	var peer netip.Addr
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		peer = netip.AddrFrom4(a.Addr)
	case *unix.SockaddrInet6:
		peer = netip.AddrFrom16(a.Addr).Unmap()
	}
	return fd, peer, true
}

func (l *loop) accept() {
	for {
		fd, peer, ok := l.acceptOne(l.lfd)
		if !ok {
			return
		}
		pad, gen := l.tag(kindClient)
		c := &client{l: l, fd: fd, gen: gen, wr: true, deadline: l.now + l.cfg.timeout, peer: peer}
		if fd >= len(l.clients) {
			l.grow(fd)
		}
		l.clients[fd] = c
		if err := l.register(fd, pad); err != nil {
			l.clients[fd] = nil
			unix.Close(fd)
			continue
		}
		l.accepted++
		l.wheel.add(c)
	}
}

// grow makes the descriptor tables hold fd.
func (l *loop) grow(fd int) {
	n := max(2*len(l.clients), fd+1, 1024)
	cs := make([]*client, n)
	copy(cs, l.clients)
	l.clients = cs
	us := make([]*upconn, n)
	copy(us, l.ups)
	l.ups = us
	hs := make([]*h2client, n)
	copy(hs, l.h2s)
	l.h2s = hs
}

// Buffers: a loop's own free lists, so taking and giving back one is a
// slice push or pop. A connection holds a buffer only while bytes wait in
// it: idle connections hold none.
func (l *loop) getBuf() []byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b
	}
	return make([]byte, l.cfg.bufSize)
}

func (l *loop) putBuf(b []byte) {
	if cap(b) == l.cfg.bufSize && len(l.bufs) < 4096 {
		l.bufs = append(l.bufs, b[:cap(b)])
	}
}

func (l *loop) getOut() []byte {
	if n := len(l.outs); n > 0 {
		b := l.outs[n-1]
		l.outs = l.outs[:n-1]
		return b[:0]
	}
	return make([]byte, 0, l.cfg.outSize)
}

func (l *loop) putOut(b []byte) {
	if cap(b) == l.cfg.outSize && len(l.outs) < 4096 {
		l.outs = append(l.outs, b[:0])
	}
}

// wheel is the loop's timer: one slot per second, 64 slots. A connection
// sits in one slot; activity only moves its deadline forward (no timer is
// touched per request), and when its slot comes round it is closed if its
// deadline has passed, else put in the slot of its new deadline: one lazily
// re-armed timer per connection, at no cost per request.
type wheel struct {
	slots [64][]*client
	spare []*client
	cur   int64 // the last second processed
	n     int   // connections in the wheel
}

func (w *wheel) add(c *client) {
	s := c.deadline / 1e9
	if s <= w.cur {
		s = w.cur + 1
	}
	i := s & 63
	w.slots[i] = append(w.slots[i], c)
	w.n++
}

func (l *loop) expire() {
	w := &l.wheel
	for sec := l.now / 1e9; w.cur < sec; {
		w.cur++
		i := w.cur & 63
		list := w.slots[i]
		w.slots[i] = w.spare[:0]
		for j, c := range list {
			list[j] = nil
			w.n--
			if c.closed {
				continue
			}
			if c.deadline <= l.now {
				c.close() // idle or stuck for longer than the timeout
				continue
			}
			w.add(c)
		}
		w.spare = list[:0]
	}
}

// Non-blocking I/O on descriptors the loop owns: raw system calls, without
// the Go scheduler's entersyscall/exitsyscall (none of them blocks).

func rawRead(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

func rawWrite(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// rawEpollWait waits without telling the scheduler (-wait raw): the loop
// keeps its P while it waits, so sysmon neither retakes the P nor, seeing
// Ps come and go, keeps polling every 20 µs; it only preempts the loop now
// and then (its signal ends the wait with EINTR), which also lets a stop
// of the world or another goroutine in.
func rawEpollWait(epfd int, events []unix.EpollEvent, msec int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawClose(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }
