package main

import (
	"net/netip"
	"strconv"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/sys/unix"
)

// client is one client connection. While it waits for a request it holds
// no buffer and no exchange: this struct, its timer and its socket
// are what an idle keep-alive connection costs.
type client struct {
	l          *worker
	fd         int
	loop.Ready // what the socket's events said (edge-triggered)
	closed     bool
	closeEnd   bool // close once the output is written
	in         []byte
	r, w       int // request bytes read and not yet consumed: in[r:w]
	out        []byte
	off        int // bytes waiting for the client: out[off:]
	x          *exchange
	peer       netip.Addr
	deadline   int64      // moved on by activity; the timer catches up lazily
	timer      loop.Timer // one per connection, armed at accept
}

func (c *client) Event(ev loop.Events) {
	c.Note(ev)
	c.drive()
}

// Fail closes the connection after a panic on the loop.
func (c *client) Fail() { c.close() }

// Expire closes a connection idle or stuck for longer than the timeout;
// one that moved on since the timer was armed is armed again at its new
// deadline.
func (c *client) Expire(now int64) {
	if c.closed {
		return
	}
	if c.deadline > now {
		c.l.ev.SetTimer(&c.timer, c, c.deadline)
		return
	}
	c.close()
}

// drive moves the connection on as far as its sockets allow: written
// output, the next request's head, the exchange in flight. It is called
// for every event of the client or of the upstream connection it uses.
func (c *client) drive() {
	for !c.closed {
		if c.off < len(c.out) && !c.flush() {
			return
		}
		x := c.x
		if x == nil {
			if c.closeEnd {
				c.close()
				return
			}
			if !c.nextRequest() {
				return
			}
			continue
		}
		if !x.reqDone {
			x.pumpRequest()
			if c.closed || c.x != x {
				continue
			}
		}
		if !x.respDone {
			x.pumpResponse()
			if c.closed || c.x != x {
				continue
			}
		}
		if !x.respDone {
			return
		}
		c.endExchange()
	}
}

// nextRequest reads and parses the next request head and starts its
// exchange; false when more bytes are needed or the connection ended.
func (c *client) nextRequest() bool {
	l := c.l
	for {
		if c.r < c.w {
			x := l.newExchange(c)
			n, err := edge.ParseRequestHead(c.in[c.r:c.w], l.cfg.lim, &x.head)
			if err != nil {
				l.freeExchange(x)
				st := 400
				if e, ok := err.(*edge.Error); ok {
					st = e.Status
				}
				c.refuse(st, err.Error())
				return false
			}
			if n > 0 {
				return c.start(x, n)
			}
			l.freeExchange(x)
			if c.w == len(c.in) {
				if !c.growIn() {
					c.refuse(431, "request header too large")
					return false
				}
			}
		}
		if !c.Rd {
			c.releaseIn()
			return false
		}
		if c.in == nil {
			c.in = l.bufs.Get()
		}
		n, e := loop.Read(c.fd, c.in[c.w:])
		if e == unix.EAGAIN {
			c.Rd = false
			c.releaseIn()
			return false
		}
		if e != 0 || n == 0 {
			c.close()
			return false
		}
		if n < len(c.in)-c.w && !c.Hup {
			c.Rd = false // drained: the next byte brings a new edge
		}
		c.w += n
	}
}

// growIn makes room for more of a head: compacts, or takes a bigger
// buffer up to the head limit.
func (c *client) growIn() bool {
	if c.r > 0 {
		c.w = copy(c.in, c.in[c.r:c.w])
		c.r = 0
		return true
	}
	max := c.l.cfg.lim.MaxHeaderBytes + 66
	if len(c.in) >= max {
		return false
	}
	nb := make([]byte, min(4*len(c.in), max))
	copy(nb, c.in[:c.w])
	c.l.bufs.Put(c.in)
	c.in = nb
	return true
}

func (c *client) releaseIn() {
	if c.in != nil && c.r == c.w {
		c.l.bufs.Put(c.in)
		c.in, c.r, c.w = nil, 0, 0
	}
}

// send queues b for the client, writing at once when nothing waits.
func (c *client) send(b []byte) {
	if c.off == len(c.out) && c.Wr {
		n, e := loop.Write(c.fd, b)
		if e != 0 && e != unix.EAGAIN {
			c.close()
			return
		}
		if n == len(b) {
			return
		}
		c.Wr = false
		b = b[n:]
	}
	if c.out == nil {
		c.out = c.l.outs.Get()[:0]
	}
	if c.off > 0 && c.off == len(c.out) {
		c.out, c.off = c.out[:0], 0
	}
	c.out = append(c.out, b...)
}

// flush writes what waits for the client; true when all is written.
func (c *client) flush() bool {
	if !c.Wr {
		return false
	}
	n, e := loop.Write(c.fd, c.out[c.off:])
	if e != 0 && e != unix.EAGAIN {
		c.close()
		return false
	}
	c.off += n
	if c.off < len(c.out) {
		c.Wr = false
		return false
	}
	c.l.outs.Put(c.out)
	c.out, c.off = nil, 0
	return true
}

// refuse answers a request the prototype will not serve and closes the
// connection once the answer is written.
func (c *client) refuse(status int, reason string) {
	var b [512]byte
	o := append(b[:0], "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, " Refused\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "...)
	o = strconv.AppendInt(o, int64(len(reason)+1), 10)
	o = append(o, "\r\n\r\n"...)
	o = append(o, reason...)
	o = append(o, '\n')
	c.closeEnd = true
	c.send(o)
	if !c.closed && c.off == len(c.out) {
		unix.Shutdown(c.fd, unix.SHUT_WR)
		c.close()
	}
}

// account ends x's part in the core (-core): the status the client got,
// 499 when it left before its answer.
func (x *exchange) account(l *worker) {
	if !x.cored {
		return
	}
	x.cored = false
	l.cfg.core.finish(&x.cr, answered(x.failed, x.gotHead, &x.rh), x.bytes)
}

// endExchange ends the exchange whose response was relayed whole.
func (c *client) endExchange() {
	x := c.x
	l := c.l
	x.account(l)
	if x.u != nil {
		x.u.done(x)
	}
	if x.closeAfter || x.head.Close {
		c.closeEnd = true
	}
	c.x = nil
	l.freeExchange(x)
	c.deadline = l.ev.Now() + l.cfg.timeout
	l.requests++
}

// close closes the connection and, if a response was still coming, the
// upstream connection it came on.
func (c *client) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.timer.Stop()
	c.l.ev.CloseFD(c.fd)
	if x := c.x; x != nil {
		x.account(c.l)
		if x.u != nil {
			x.u.x = nil
			x.u.close()
		}
		c.x = nil
		c.l.freeExchange(x)
	}
	if c.in != nil {
		c.r = c.w
		c.releaseIn()
	}
	if c.out != nil {
		c.l.outs.Put(c.out)
		c.out, c.off = nil, 0
	}
}
