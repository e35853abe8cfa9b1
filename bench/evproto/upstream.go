package main

import (
	"golang.org/x/sys/unix"
)

// upconn is one connection to a backend, owned by the loop that dialled
// it and used only by that loop's clients: one exchange at a time, then
// back on the loop's idle stack for its backend.
type upconn struct {
	l          *loop
	fd         int
	gen        uint32
	be         int
	rd, wr     bool
	hup        bool
	connecting bool
	reused     bool
	idle       bool // on the idle stack
	dead       bool // closed (an idle stack may still hold it)
	in         []byte
	r, w       int
	x          *exchange // the exchange using it
	s          *h2stream // or the HTTP/2 stream using it (h2.go)
}

// getUp pops the most recently used idle connection to backend be, or
// dials one. An idle connection needs no check before use: the backend
// closing it (or sending anything unasked) raised an event that closed it.
func (l *loop) getUp(be int) (*upconn, error) {
	s := l.idle[be]
	for n := len(s); n > 0; n = len(s) {
		u := s[n-1]
		s[n-1] = nil
		s = s[:n-1]
		if u.dead {
			continue
		}
		l.idle[be] = s
		u.idle = false
		u.reused = true
		return u, nil
	}
	l.idle[be] = s
	return l.dial(be)
}

// dial starts a non-blocking connect to backend be; the connection is
// usable once writable (the request waits in the exchange until then).
func (l *loop) dial(be int) (*upconn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	err = unix.Connect(fd, l.cfg.backends[be])
	pad, gen := l.tag(kindUp)
	u := &upconn{l: l, fd: fd, gen: gen, be: be}
	switch err {
	case nil:
		u.wr = true
	case unix.EINPROGRESS:
		u.connecting = true
	default:
		rawClose(fd)
		return nil, err
	}
	if fd >= len(l.ups) {
		l.grow(fd)
	}
	l.ups[fd] = u
	if err := l.register(fd, pad); err != nil {
		l.ups[fd] = nil
		rawClose(fd)
		return nil, err
	}
	l.dials++
	return u, nil
}

func (u *upconn) event(ev uint32) {
	if u.idle {
		// An idle connection has nothing to say: EOF, a reset or stray
		// bytes all mean it cannot carry a request any more.
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			u.close()
		}
		return
	}
	if u.connecting && ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		u.connecting = false
		if soerr, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
			u.hup = true
		}
	}
	readiness(ev, &u.rd, &u.hup, &u.wr)
	if u.x != nil {
		u.x.c.drive()
	} else if u.s != nil {
		u.s.c.upEvent(u.s)
	}
}

// done ends the connection's part in exchange x: back to the idle stack
// when the response ended cleanly and nothing follows it, else closed.
func (u *upconn) done(x *exchange) {
	u.x = nil
	x.u = nil
	u.release(!x.upClose && x.reqDone)
}

// release ends the connection's part in an exchange or a stream: back to
// the idle stack when reuse is allowed and nothing follows the response,
// else closed.
func (u *upconn) release(reuse bool) {
	l := u.l
	if !reuse || u.r < u.w || u.hup || len(l.idle[u.be]) >= l.cfg.maxIdle {
		u.close()
		return
	}
	if u.in != nil {
		l.putBuf(u.in)
		u.in, u.r, u.w = nil, 0, 0
	}
	u.idle = true
	l.idle[u.be] = append(l.idle[u.be], u)
}

func (u *upconn) close() {
	if u.dead {
		return
	}
	u.dead = true
	u.l.ups[u.fd] = nil
	rawClose(u.fd)
	if u.in != nil {
		u.l.putBuf(u.in)
		u.in = nil
	}
}

// Results of upconn.send and upconn.fill.
const (
	ioDone    = iota // all written / bytes read into u.in
	ioWait           // the socket is not ready: wait for its event
	ioFailed         // the connection failed (fill: or the backend closed it)
	ioTooLong        // fill: u.in is full of one unparsed head
)

// send writes b[*off:] to the backend, moving *off on.
func (u *upconn) send(b []byte, off *int) int {
	if !u.wr {
		return ioWait
	}
	n, e := rawWrite(u.fd, b[*off:])
	if e == unix.EAGAIN {
		u.wr = false
		return ioWait
	}
	if e != 0 {
		return ioFailed
	}
	if *off += n; *off < len(b) {
		u.wr = false
		return ioWait
	}
	return ioDone
}

// fill reads what the backend sent into u.in (taken from the loop's free
// list when missing, compacted when full).
func (u *upconn) fill() int {
	if u.connecting || !u.rd {
		return ioWait
	}
	if u.in == nil {
		u.in = u.l.getBuf()
	}
	if u.r == u.w {
		u.r, u.w = 0, 0
	}
	if u.w == len(u.in) {
		if u.r == 0 {
			return ioTooLong
		}
		u.w = copy(u.in, u.in[u.r:u.w])
		u.r = 0
	}
	n, e := rawRead(u.fd, u.in[u.w:])
	if e == unix.EAGAIN {
		u.rd = false
		return ioWait
	}
	if e != 0 || n == 0 {
		u.hup = true
		return ioFailed
	}
	if n < len(u.in)-u.w && !u.hup {
		u.rd = false // drained: the next byte brings a new edge
	}
	u.w += n
	return ioDone
}

// readiness notes what an edge-triggered event says of a socket.
func readiness(ev uint32, rd, hup, wr *bool) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		*rd = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		*hup = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		*wr = true
	}
}
