package h1

import (
	"errors"
	"io"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// Request body kinds.
const (
	bodyNone = iota
	bodyFixed
	bodyChunked
)

// h1body is the request body on its way to backends. A body that fits
// proxy.ReplayMax is read whole before the first attempt (sent with the head in
// one write, and replayable); a bigger one is streamed by a writer
// goroutine during the only attempt it can have, so that a backend that
// answers before reading all of it does not deadlock the exchange.
type h1body struct {
	kind     uint8
	length   int64 // Content-Length (bodyFixed)
	prepared bool
	complete bool   // held is the whole body
	held     []byte // the body, or its first part when streaming
	hp       *[]byte
	left     int64 // bodyFixed, streaming: bytes still with the client
	ck       edge.Chunked
	sent100  bool
	// deferred: Expect: 100-continue and nothing of the body arrived; the
	// backend decides whether the client sends it (see exchange).
	deferred  bool
	streaming bool // a writer took over the rest
	running   bool // the writer has not reported yet
	consumed  bool // the body was read to its end
	hostAt    int  // where the outbound head lacks a Host (HTTP/1.0), or -1
	headDone  bool // the head was consumed from the read buffer
}

func (b *h1body) init(h *edge.Head) {
	*b = h1body{hostAt: -1}
	switch {
	case h.Chunked:
		b.kind = bodyChunked
	case h.ContentLength > 0:
		b.kind, b.length = bodyFixed, h.ContentLength
	default:
		b.consumed = true
	}
}

// unsent reports a deferred body that no backend asked for: the client
// never sent it (unless it does so unasked), so after a final answer
// neither connection carries another request. A retry may still send it
// (see replayable).
func (b *h1body) unsent() bool { return b.deferred && !b.sent100 }

// replayable reports whether another attempt can send the body whole: it
// is held whole, or it is a deferred body the client was not told to send
// yet (the next backend decides again).
func (b *h1body) replayable() bool {
	return b.kind == bodyNone || b.complete || b.deferred && !b.sent100 && !b.running
}

// sent returns the body bytes read from the client to pass on (content
// bytes: a chunked body's framing is not counted). Call it once no writer
// runs.
func (b *h1body) sent() int64 {
	switch {
	case !b.prepared:
		return 0
	case b.kind == bodyFixed && b.complete:
		return b.length
	case b.kind == bodyFixed && b.streaming:
		return b.length - b.left
	case b.kind == bodyChunked:
		return b.ck.Data()
	}
	return 0
}

// bodyResult is what the streaming writer reports.
type bodyResult struct {
	client error // reading from the client failed (its fault)
	back   error // writing to the backend failed
}

// consumeHead moves the read position past the request head, once.
func (c *h1conn) consumeHead() {
	if b := &c.req.body; !b.headDone {
		b.headDone = true
		c.r += c.req.hlen
	}
}

// bodyDeadline is the read deadline for the request body: timeouts.read
// from the start of the request, or none.
func (c *h1conn) bodyDeadline() time.Time {
	if d := c.e.o.Timeouts.Read; d > 0 {
		return c.req.rec.Start.Add(d)
	}
	return time.Time{}
}

// continue100 tells a client that waits for it to send its body: the
// backend's 100 Continue relayed, or sluice's own after expectWait.
func (c *h1conn) continue100() {
	b := &c.req.body
	if !b.sent100 {
		b.sent100 = true
		c.rw.Write(continueLine)
	}
}

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// expectWait is how long a deferred body waits for the backend's verdict
// before sluice lets the client send it anyway (net/http's Transport waits
// as long, as RFC 9110 §10.1.1 allows for servers that do not answer 100).
const expectWait = time.Second

// clientErr turns an error reading the request body into an proxy.Outcome.
func clientErr(err error) proxy.Outcome {
	var ee *edge.Error
	switch {
	case errors.As(err, &ee):
		return proxy.Outcome{Class: proxy.ClientError, Status: ee.Status, Err: err}
	case errors.Is(err, proxy.ErrBodyTooLarge):
		return proxy.Outcome{Class: proxy.ClientError, Status: 413, Err: err}
	case isTimeout(err):
		return proxy.Outcome{Class: proxy.ClientError, Status: 408, Err: err}
	}
	return proxy.Outcome{Class: proxy.ClientGone, Err: err}
}

// prepareBody reads the body before the first attempt: whole when it fits
// proxy.ReplayMax, else its first proxy.ReplayMax bytes (the writer streams the rest).
func (c *h1conn) prepareBody() (proxy.Outcome, bool) {
	b := &c.req.body
	b.prepared = true
	c.consumeHead()
	if c.req.expect && c.req.head.Minor == 1 && b.kind != bodyNone && c.r == c.w {
		// The client waits for a 100 Continue: the head goes to the
		// backend alone, and its answer decides (end to end, DESIGN.md).
		b.deferred, b.streaming, b.left = true, true, b.length
		b.ck = edge.NewChunked(c.e.lim)
		return proxy.Outcome{}, true
	}
	var err error
	switch b.kind {
	case bodyFixed:
		err = c.prepareFixed()
	case bodyChunked:
		err = c.prepareChunked()
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return clientErr(err), false
	}
	return proxy.Outcome{}, true
}

// prepareFixed reads a Content-Length body: held whole when it fits
// ReplayMax, else what is buffered is held and the writer streams the rest.
func (c *h1conn) prepareFixed() error {
	b := &c.req.body
	avail := min(int64(c.w-c.r), b.length)
	if avail == b.length {
		b.held = c.buf[c.r : c.r+int(avail)]
		c.r += int(avail)
		b.complete, b.consumed = true, true
		return nil
	}
	c.nc.SetReadDeadline(c.bodyDeadline())
	if b.length > proxy.ReplayMax {
		b.held = c.buf[c.r : c.r+int(avail)]
		c.r += int(avail)
		b.left = b.length - avail
		b.streaming = true
		return nil
	}
	b.hp = bodyBufs.Get().(*[]byte)
	hb := (*b.hp)[:b.length]
	copy(hb, c.buf[c.r:c.w])
	c.r = c.w
	if _, err := io.ReadFull(c.rw, hb[avail:]); err != nil {
		return err
	}
	b.held = hb
	b.complete, b.consumed = true, true
	return nil
}

// prepareChunked reads a chunked body, validating its framing as it comes:
// held whole (framing included) when it ends within ReplayMax, else its
// first ReplayMax bytes are held and the writer streams the rest.
func (c *h1conn) prepareChunked() error {
	b := &c.req.body
	b.ck = edge.NewChunked(c.e.lim)
	n, done, err := b.ck.Feed(c.buf[c.r:c.w])
	if err != nil {
		return err
	}
	if done {
		b.held = c.buf[c.r : c.r+n]
		c.r += n
		b.complete, b.consumed = true, true
		return c.checkMaxErr()
	}
	c.nc.SetReadDeadline(c.bodyDeadline())
	b.hp = bodyBufs.Get().(*[]byte)
	hb := append((*b.hp)[:0], c.buf[c.r:c.w]...)
	c.r = c.w
	for len(hb) < cap(hb) {
		m, rerr := c.rw.Read(hb[len(hb):cap(hb)])
		if m > 0 {
			k, done, ferr := b.ck.Feed(hb[len(hb) : len(hb)+m])
			if ferr != nil {
				return ferr
			}
			if done {
				c.keep(hb[len(hb)+k : len(hb)+m])
				b.held = hb[:len(hb)+k]
				b.complete, b.consumed = true, true
				return c.checkMaxErr()
			}
			hb = hb[:len(hb)+m]
		}
		if rerr != nil {
			return rerr
		}
	}
	b.held = hb
	b.streaming = true
	return c.checkMaxErr()
}

// checkMaxErr applies max_body_bytes to the chunked content read so far.
func (c *h1conn) checkMaxErr() error {
	if !c.checkMax(c.req.body.ck.Data()) {
		return proxy.ErrBodyTooLarge
	}
	return nil
}

// checkMax applies max_body_bytes to n body bytes read so far.
func (c *h1conn) checkMax(n int64) bool {
	max := c.req.l.Limits.MaxBodyBytes
	return max <= 0 || n <= max
}

// keep puts bytes read past the end of a body back in the read buffer:
// they begin the next request. The buffer is empty when this is called.
func (c *h1conn) keep(p []byte) {
	if len(p) == 0 {
		return
	}
	if len(p) > len(c.buf) {
		nb := make([]byte, len(p))
		c.bp, c.buf = &nb, nb
	}
	c.r, c.w = 0, copy(c.buf, p)
}

// streamBody writes the held part of the body and then the rest as it
// arrives from the client, and reports to c.bodyc.
func (c *h1conn) streamBody(uc *upConn) {
	b := &c.req.body
	var res bodyResult
	defer func() { c.bodyc <- res }()
	if len(b.held) > 0 {
		if _, err := uc.nc.Write(b.held); err != nil {
			res.back = err
			return
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	total := int64(len(b.held)) // content bytes (bodyFixed)
	for {
		want := len(buf)
		if b.kind == bodyFixed {
			if b.left == 0 {
				b.consumed = true
				return
			}
			want = int(min(int64(want), b.left))
		}
		m, rerr := c.rw.Read(buf[:want])
		if m > 0 {
			chunk := buf[:m]
			done := false
			if b.kind == bodyFixed {
				b.left -= int64(m)
			} else {
				k, d, ferr := b.ck.Feed(chunk)
				if ferr != nil {
					res.client = ferr
					uc.nc.Close()
					return
				}
				if d {
					c.keep(chunk[k:])
					chunk, done = chunk[:k], true
				}
			}
			if b.kind == bodyFixed {
				total += int64(len(chunk))
			} else {
				total = b.ck.Data()
			}
			if !c.checkMax(total) {
				res.client = proxy.ErrBodyTooLarge
				uc.nc.Close()
				return
			}
			if done || b.kind == bodyFixed && b.left == 0 {
				c.bodyIn.Store(true)
			}
			if _, err := uc.nc.Write(chunk); err != nil {
				res.back = err
				return
			}
			if done {
				b.consumed = true
				return
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			if !c.stopping.Load() { // else endStream stopped it: not the client's fault
				res.client = rerr
			}
			uc.nc.Close()
			return
		}
	}
}

// endStream waits for the streaming writer; with stop it first makes it
// stop (a read deadline in the past on the client, the backend closed),
// and the body is then cut off, so the client connection cannot carry
// another request.
func (c *h1conn) endStream(uc *upConn, stop bool) bodyResult {
	b := &c.req.body
	if !b.running {
		return bodyResult{}
	}
	if stop {
		select {
		case r := <-c.bodyc:
			b.running = false
			return r
		default:
		}
		if c.bodyIn.Load() {
			uc.nc.Close() // only the write to the backend is left
		} else {
			c.stopping.Store(true)
			c.nc.SetReadDeadline(time.Unix(1, 0))
			uc.nc.Close()
			c.req.closeAfter = true
		}
	}
	r := <-c.bodyc
	b.running = false
	c.stopping.Store(false)
	return r
}

// discardBody reads and drops the rest of a request body that sluice
// answers without forwarding, so that the connection can carry the next
// request, as net/http does: at most maxDiscard bytes, and not when the
// client waits for a 100 Continue it never got. It reports whether the
// connection may stay open.
func (c *h1conn) discardBody() bool {
	q := &c.req
	b := &q.body
	c.consumeHead()
	if b.consumed {
		return true
	}
	if b.streaming || b.prepared || q.expect && q.head.Minor == 1 && !b.sent100 {
		return false
	}
	c.nc.SetReadDeadline(time.Now().Add(discardTime))
	switch b.kind {
	case bodyFixed:
		if b.length > maxDiscard {
			return false
		}
		left := b.length
		have := min(int64(c.w-c.r), left)
		c.r += int(have)
		left -= have
		if left > 0 {
			if _, err := io.CopyN(io.Discard, c.rw, left); err != nil {
				return false
			}
		}
	case bodyChunked:
		ck := edge.NewChunked(c.e.lim)
		total := 0
		for {
			if c.r < c.w {
				n, done, err := ck.Feed(c.buf[c.r:c.w])
				if err != nil {
					return false
				}
				c.r += n
				total += n
				if done {
					break
				}
			}
			if total > maxDiscard {
				return false
			}
			c.r, c.w = 0, 0
			n, err := c.rw.Read(c.buf)
			c.w = n
			if err != nil && n == 0 {
				return false
			}
		}
	}
	b.consumed = true
	return true
}

const (
	maxDiscard  = 256 << 10 // net/http's maxPostHandlerReadBytes
	discardTime = 5 * time.Second
)
