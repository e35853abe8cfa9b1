package main

import (
	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/sys/unix"
)

// upconn is one connection to a backend, owned by the loop that dialled
// it and used only by that loop's clients: one exchange at a time, then
// back on the loop's idle stack for its backend.
type upconn struct {
	l  *worker
	fd int
	be int
	loop.Ready
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
func (l *worker) getUp(be int) (*upconn, error) {
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
func (l *worker) dial(be int) (*upconn, error) {
	fd, connected, err := loop.Dial(l.cfg.backends[be], 0)
	if err != nil {
		return nil, err
	}
	u := &upconn{l: l, fd: fd, be: be, connecting: !connected}
	u.Wr = connected
	if err := l.ev.Add(fd, u); err != nil {
		l.ev.CloseFD(fd)
		return nil, err
	}
	l.dials++
	return u, nil
}

func (u *upconn) Event(ev loop.Events) {
	if u.idle {
		// An idle connection has nothing to say: EOF, a reset or stray
		// bytes all mean it cannot carry a request any more.
		if ev&(loop.In|loop.RdHup|loop.Hup|loop.Err) != 0 {
			u.close()
		}
		return
	}
	if u.connecting && ev&(loop.Out|loop.Err|loop.Hup) != 0 {
		u.connecting = false
		if loop.SockError(u.fd) != nil {
			u.Hup = true
		}
	}
	u.Note(ev)
	if u.x != nil {
		u.x.c.drive()
	} else if u.s != nil {
		u.s.c.upEvent(u.s)
	}
}

// Fail closes the connection and the client using it after a panic on the
// loop.
func (u *upconn) Fail() {
	if u.x != nil {
		u.x.c.close()
	} else if u.s != nil {
		u.s.c.close()
	}
	u.close()
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
	if !reuse || u.r < u.w || u.Hup || len(l.idle[u.be]) >= l.cfg.maxIdle {
		u.close()
		return
	}
	if u.in != nil {
		l.bufs.Put(u.in)
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
	u.l.ev.CloseFD(u.fd)
	if u.in != nil {
		u.l.bufs.Put(u.in)
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
	if !u.Wr {
		return ioWait
	}
	n, e := loop.Write(u.fd, b[*off:])
	if e == unix.EAGAIN {
		u.Wr = false
		return ioWait
	}
	if e != 0 {
		return ioFailed
	}
	if *off += n; *off < len(b) {
		u.Wr = false
		return ioWait
	}
	return ioDone
}

// fill reads what the backend sent into u.in (taken from the loop's free
// list when missing, compacted when full).
func (u *upconn) fill() int {
	if u.connecting || !u.Rd {
		return ioWait
	}
	if u.in == nil {
		u.in = u.l.bufs.Get()
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
	n, e := loop.Read(u.fd, u.in[u.w:])
	if e == unix.EAGAIN {
		u.Rd = false
		return ioWait
	}
	if e != 0 || n == 0 {
		u.Hup = true
		return ioFailed
	}
	if n < len(u.in)-u.w && !u.Hup {
		u.Rd = false // drained: the next byte brings a new edge
	}
	u.w += n
	return ioDone
}
