package h1

import (
	"context"
	"slices"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// Send implements proxy.Attempt: one exchange with b over a pooled
// connection. A reused connection that the backend had closed is replaced
// by a new one when the request is replayable, without counting as an
// attempt.
func (c *h1conn) Send(ctx context.Context, b *pool.Backend, canRetry bool) proxy.Outcome {
	q := &c.req
	if !q.body.prepared {
		// The body is read before a backend sees anything of the request,
		// so that a malformed one never reaches a backend.
		if o, ok := c.prepareBody(); !ok {
			return o
		}
	}
	if q.t.Upstream.HTTP2 {
		return c.sendH2(ctx, b, canRetry)
	}
	conns := connsOf(q.t.Upstream)
	for {
		start := time.Now()
		var uc *upConn
		var err error
		if conns.proxyHeader != 0 {
			uc, err = conns.private(ctx, b, c)
		} else {
			// The silence check of a reused connection goes with the send
			// when the request is sent whole at once.
			uc, err = conns.get(ctx, b, !q.body.streaming)
		}
		if err != nil {
			return proxy.Outcome{Class: proxy.ConnectFailure, Err: err, Connect: time.Since(start)}
		}
		var connect time.Duration
		if !uc.reused {
			connect = time.Since(start)
		}
		// Close closes what c.up holds; one that began before this store
		// cancelled the engine's context, seen here.
		c.up.Store(uc)
		if c.e.ctx.Err() != nil {
			uc.nc.Close()
		}
		o, stale := c.exchange(uc, b, canRetry)
		c.up.Store(nil)
		if !stale {
			o.Connect, o.Header = connect, q.header
			return o
		}
	}
}

// exchange writes the request on uc and reads the response head; stale
// reports a reused connection that failed before any byte came back.
func (c *h1conn) exchange(uc *upConn, b *pool.Backend, canRetry bool) (proxy.Outcome, bool) {
	q := &c.req
	t := q.t
	start := time.Now()
	q.header = 0
	dl := q.deadline
	if d := t.Timeouts.ResponseHeader; d > 0 {
		if hd := start.Add(d); dl.IsZero() || hd.Before(dl) {
			dl = hd
		}
	}
	uc.nc.SetDeadline(dl)
	var err error
	if rc, plain := uc.nc.(*rawio.Conn); plain && !q.body.streaming {
		var stray bool
		if stray, err = c.send(uc, rc, b); stray {
			// The backend spoke unasked or closed it: nothing was sent,
			// the next connection is tried.
			uc.nc.Close()
			return proxy.Outcome{}, true
		}
	} else {
		err = c.writeRequest(uc, b)
	}
	if err != nil {
		uc.nc.Close()
		if uc.reused && c.Replayable() {
			return proxy.Outcome{}, true
		}
		c.endStream(uc, true)
		return proxy.Outcome{Class: proxy.Reset, Err: err}, false
	}
	if q.body.streaming && !q.body.deferred {
		c.startBody(uc)
	}
	var rh edge.ResponseHead
	n, o, stale := c.readResponseHead(uc, &rh, dl)
	if n == 0 {
		return o, stale
	}
	q.header = time.Since(start)
	b.Stats.ObserveLatency(q.header)
	if rh.Status == 101 {
		return c.tunnel(uc, &rh, n, b), false
	}
	if canRetry && slices.Contains(t.Retries.OnStatus, rh.Status) {
		head := uc.buf[uc.r : uc.r+n]
		ra, _ := (&rawFields{head: head, first: rh.First}).Value("Retry-After", 0)
		retryAfter := proxy.ParseRetryAfter(ra)
		if t.RetryOnStatus(rh.Status, retryAfter, c, canRetry) {
			uc.r += n
			c.discardResponse(uc, &rh)
			return proxy.Outcome{Class: proxy.RetryStatus, Status: rh.Status, RetryAfter: retryAfter}, false
		}
	}
	return c.deliver(uc, &rh, n, b), false
}

// startBody hands the rest of the request body to the streaming writer.
func (c *h1conn) startBody(uc *upConn) {
	q := &c.req
	if c.bodyc == nil {
		c.bodyc = make(chan bodyResult, 1)
	}
	if q.body.deferred {
		c.nc.SetReadDeadline(c.bodyDeadline())
	}
	q.body.running = true
	c.bodyIn.Store(false)
	go c.streamBody(uc)
}

// readResponseHead reads the final response head into rh and returns its
// length, or 0 with the attempt's outcome. Interim responses are dropped,
// as net/http's Transport does, except the 100 Continue that a deferred
// body waits for: it goes on to the client, and the body follows. When the
// backend says nothing within expectWait, the client is told to send the
// body anyway.
func (c *h1conn) readResponseHead(uc *upConn, rh *edge.ResponseHead, dl time.Time) (int, proxy.Outcome, bool) {
	q := &c.req
	var expectBy time.Time
	if q.body.deferred {
		expectBy = time.Now().Add(expectWait)
		if dl.IsZero() || expectBy.Before(dl) {
			uc.nc.SetReadDeadline(expectBy)
		}
	}
	resume := func() {
		c.continue100()
		uc.nc.SetReadDeadline(dl)
		c.startBody(uc)
	}
	for {
		n := 0
		if uc.w > uc.r {
			var err error
			if n, err = edge.ParseResponseHead(uc.buf[uc.r:uc.w], rh); err != nil {
				uc.nc.Close()
				c.endStream(uc, true)
				return 0, proxy.Outcome{Class: proxy.Reset, Err: err}, false
			}
		}
		if n > 0 {
			if rh.Status >= 200 || rh.Status == 101 {
				return n, proxy.Outcome{}, false
			}
			uc.r += n
			if rh.Status == 100 && q.body.deferred && !q.body.running {
				resume()
			}
			continue
		}
		err := uc.fill(edge.MaxResponseHeaderBytes + upBufSize)
		if err == nil {
			continue
		}
		if isTimeout(err) && q.body.deferred && !q.body.running && !time.Now().Before(expectBy) &&
			(dl.IsZero() || time.Now().Before(dl)) {
			resume()
			continue
		}
		uc.nc.Close()
		if r := c.endStream(uc, true); r.client != nil {
			return 0, clientErr(r.client), false
		}
		if isTimeout(err) {
			if !q.deadline.IsZero() && !time.Now().Before(q.deadline) {
				return 0, proxy.Outcome{Class: proxy.Timeout, Err: proxy.ErrRequestTimeout}, false
			}
			return 0, proxy.Outcome{Class: proxy.Timeout, Err: proxy.ErrHeaderTimeout}, false
		}
		if uc.reused && uc.w == 0 && c.Replayable() {
			return 0, proxy.Outcome{}, true
		}
		return 0, proxy.Outcome{Class: proxy.Reset, Err: err}, false
	}
}

// send sends the request, held whole, on uc, a connection over a plain
// socket, with rawio's Send: it writes the request and reads the first
// bytes of the response into uc's buffer with no read that could only
// find nothing; on a reused connection that silent did not check
// (unchecked), it checks it first (stray: not silent, nothing sent).
func (c *h1conn) send(uc *upConn, rc *rawio.Conn, b *pool.Backend) (stray bool, err error) {
	c.iov[0] = c.outboundHead(b)
	bufs := c.iov[:1]
	if body := c.req.body.held; len(body) > 0 {
		c.iov[1] = body
		bufs = c.iov[:2]
	}
	stray, err = uc.send(rc, bufs)
	c.iov[0], c.iov[1] = nil, nil
	return stray, err
}

// outboundHead returns the head of the request as it goes to b.
func (c *h1conn) outboundHead(b *pool.Backend) []byte {
	q := &c.req
	head := c.out[:q.outHead]
	if at := q.body.hostAt; at >= 0 {
		// HTTP/1.0 without Host: name the backend, as net/http does.
		h := make([]byte, 0, len(head)+len(b.Host)+8)
		h = append(h, head[:at]...)
		h = append(h, "Host: "...)
		h = append(h, b.Host...)
		h = append(h, "\r\n"...)
		head = append(h, head[at:]...)
	}
	return head
}

// writeRequest writes the outbound head and, when the body is held whole,
// the body with it in one system call.
func (c *h1conn) writeRequest(uc *upConn, b *pool.Backend) error {
	q := &c.req
	head := c.outboundHead(b)
	body := q.body.held
	if len(body) == 0 {
		_, err := uc.nc.Write(head)
		return err
	}
	if q.body.streaming {
		_, err := uc.nc.Write(head) // the writer sends the held part
		return err
	}
	if len(head)+len(body) <= cap(c.out) && &head[0] == &c.out[0] {
		o := append(c.out[:len(head)], body...)
		_, err := uc.nc.Write(o)
		return err
	}
	c.iov[0], c.iov[1] = head, body
	_, err := rawio.WriteBuffers(uc.nc, c.iov[:])
	c.iov[0], c.iov[1] = nil, nil
	return err
}

// discardResponse reads a small framed response body so that its
// connection can be reused, or closes the connection.
func (c *h1conn) discardResponse(uc *upConn, rh *edge.ResponseHead) {
	switch {
	case rh.Close || c.req.body.running || c.req.body.deferred:
	case edge.NoBody(c.req.isHead, rh.Status):
		uc.release()
		return
	case !rh.Chunked && rh.ContentLength >= 0 && rh.ContentLength <= int64(uc.w-uc.r):
		uc.r += int(rh.ContentLength)
		uc.release()
		return
	}
	uc.nc.Close()
}
