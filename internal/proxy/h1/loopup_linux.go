package h1

import (
	"errors"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"golang.org/x/sys/unix"
)

// lup is a backend connection owned by a loop and used only by that
// loop's clients: one exchange at a time, then back on the loop's idle
// stack for its backend (LIFO). An idle connection holds no buffer, and
// needs no check before use beyond one peek: the backend closing it or
// sending anything unasked raised an event that closed it, and the peek
// catches what arrived since.
type lup struct {
	w  *lworker
	fd int
	loop.Ready
	b          *pool.Backend
	up         *proxy.Upstream // whose pool it belongs to (a reload makes another)
	connecting bool
	failed     bool  // the connect failed (err)
	err        error // why the connection failed
	reused     bool
	idle       bool
	dead       bool
	idleAt     int64
	buf        []byte
	r, wr      int // unread response bytes: buf[r:wr]
	lc         *lconn
	timer      loop.Timer // the idle timeout
}

// get returns an idle connection to b for t's pool, or dials one.
func (w *lworker) get(b *pool.Backend, t *proxy.Target) (*lup, error) {
	s := w.idle[b]
	for n := len(s); n > 0; n = len(s) {
		u := s[n-1]
		s[n-1] = nil
		s = s[:n-1]
		if u.dead {
			continue
		}
		if u.up != t.Upstream {
			u.close() // a connection of the pool before a reload
			continue
		}
		w.idle[b] = s
		u.idle = false
		u.reused = true
		u.timer.Stop()
		return u, nil
	}
	if len(s) == 0 {
		delete(w.idle, b)
	} else {
		w.idle[b] = s
	}
	ap := w.addr(b)
	fd, connected, err := loop.Dial(ap)
	if err != nil {
		return nil, err
	}
	u := &lup{w: w, fd: fd, b: b, up: t.Upstream, connecting: !connected}
	u.Wr = connected
	if err := w.ev.Add(fd, u); err != nil {
		w.ev.CloseFD(fd)
		return nil, err
	}
	return u, nil
}

// Event is the backend socket's readiness.
func (u *lup) Event(ev loop.Events) {
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
		if err := loop.SockError(u.fd); err != nil || ev&(loop.Err|loop.Hup) != 0 && ev&loop.Out == 0 {
			u.failed = true
			u.err = err
			if u.err == nil {
				u.err = errors.New("connection refused")
			}
		}
	}
	u.Note(ev)
	if u.lc != nil {
		u.lc.drive()
	}
}

// Fail closes the connection, and the client using it, after a panic on
// the loop.
func (u *lup) Fail() {
	if lc := u.lc; lc != nil {
		lc.abort()
	}
	u.close()
}

// Expire closes a connection idle for longer than its pool's
// timeouts.idle.
func (u *lup) Expire(now int64) {
	if u.idle && !u.dead {
		u.close()
	}
}

// silent peeks at a reused connection before a request is written on it:
// bytes or EOF that arrived since the last event (still unseen) make it
// unusable. One system call per reuse, as the goroutine engine's check.
func (u *lup) silent() bool {
	_, e := loop.Peek(u.fd)
	return e == unix.EAGAIN
}

// Results of fill.
const (
	fillRead = iota // bytes were read into buf
	fillWait        // nothing to read now: wait for the event
	fillEOF         // the backend closed or the connection failed
	fillFull        // buf is full of one unparsed head
)

// fill reads what the backend sent into buf.
func (u *lup) fill() int {
	if !u.Rd {
		return fillWait
	}
	if u.buf == nil {
		u.buf = u.w.bufs.Get()
	}
	if u.r == u.wr {
		u.r, u.wr = 0, 0
	}
	if u.wr == len(u.buf) {
		if u.r == 0 {
			// One head fills the buffer: a bigger one, up to what the
			// goroutine engine reads for a head.
			max := edge.MaxResponseHeaderBytes + upBufSize
			if len(u.buf) >= max {
				return fillFull
			}
			nb := make([]byte, min(4*len(u.buf), max))
			copy(nb, u.buf[:u.wr])
			u.w.bufs.Put(u.buf)
			u.buf = nb
		} else {
			u.wr = copy(u.buf, u.buf[u.r:u.wr])
			u.r = 0
		}
	}
	n, e := loop.Read(u.fd, u.buf[u.wr:])
	if e == unix.EAGAIN {
		u.Rd = false
		return fillWait
	}
	if e != 0 || n == 0 {
		if e != 0 {
			u.err = e
		}
		return fillEOF
	}
	if n < len(u.buf)-u.wr && !u.Hup {
		u.Rd = false // drained: the next byte brings a new edge
	}
	u.wr += n
	return fillRead
}

// release puts the connection on its backend's idle stack once exactly
// one response was read for its one request (or closes it).
func (u *lup) release() {
	w := u.w
	if u.r < u.wr || u.Hup || u.failed || len(w.idle[u.b]) >= maxIdlePerBackend {
		u.close()
		return
	}
	u.dropBuf()
	u.idle = true
	u.idleAt = w.ev.Now()
	if d := u.up.Timeouts.Idle; d > 0 {
		w.ev.SetTimer(&u.timer, u, u.idleAt+int64(d))
	}
	w.idle[u.b] = append(w.idle[u.b], u)
}

func (u *lup) dropBuf() {
	if u.buf != nil {
		u.w.bufs.Put(u.buf)
		u.buf, u.r, u.wr = nil, 0, 0
	}
}

func (u *lup) close() {
	if u.dead {
		return
	}
	u.dead = true
	u.timer.Stop()
	u.w.ev.CloseFD(u.fd)
	u.dropBuf()
}
