package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
)

// Request body kinds.
const (
	bodyNone = iota
	bodyFixed
	bodyChunked
)

// h1body is the request body on its way to backends. A body that fits
// replayMax is read whole before the first attempt (sent with the head in
// one write, and replayable); a bigger one is streamed by a writer
// goroutine during the only attempt it can have, so that a backend that
// answers before reading all of it does not deadlock the exchange.
type h1body struct {
	kind      uint8
	length    int64 // Content-Length (bodyFixed)
	prepared  bool
	complete  bool   // held is the whole body
	held      []byte // the body, or its first part when streaming
	hp        *[]byte
	left      int64 // bodyFixed, streaming: bytes still with the client
	ck        edge.Chunked
	sent100   bool
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

func (b *h1body) replayable() bool { return b.kind == bodyNone || b.complete }

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
		return c.req.start.Add(d)
	}
	return time.Time{}
}

// send100 answers Expect: 100-continue once sluice is about to read the
// body, as net/http does when the handler first reads it.
func (c *h1conn) send100() {
	b := &c.req.body
	if c.req.expect && c.req.head.Minor == 1 && !b.sent100 && c.r == c.w {
		b.sent100 = true
		c.nc.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	}
}

// clientErr turns an error reading the request body into an Outcome.
func clientErr(err error) Outcome {
	var ee *edge.Error
	switch {
	case errors.As(err, &ee):
		return Outcome{Class: ClientError, Status: ee.Status, Err: err}
	case errors.Is(err, errBodyTooLarge):
		return Outcome{Class: ClientError, Status: 413, Err: err}
	case isTimeout(err):
		return Outcome{Class: ClientError, Status: 408, Err: err}
	}
	return Outcome{Class: ClientGone, Err: err}
}

// prepareBody reads the body before the first attempt: whole when it fits
// replayMax, else its first replayMax bytes (the writer streams the rest).
func (c *h1conn) prepareBody() (Outcome, bool) {
	b := &c.req.body
	b.prepared = true
	c.consumeHead()
	switch b.kind {
	case bodyFixed:
		avail := min(int64(c.w-c.r), b.length)
		if avail == b.length {
			b.held = c.buf[c.r : c.r+int(avail)]
			c.r += int(avail)
			b.complete, b.consumed = true, true
			return Outcome{}, true
		}
		c.send100()
		c.nc.SetReadDeadline(c.bodyDeadline())
		if b.length > replayMax {
			b.held = c.buf[c.r : c.r+int(avail)]
			c.r += int(avail)
			b.left = b.length - avail
			b.streaming = true
			return Outcome{}, true
		}
		b.hp = bodyBufs.Get().(*[]byte)
		hb := (*b.hp)[:b.length]
		copy(hb, c.buf[c.r:c.w])
		c.r = c.w
		if _, err := io.ReadFull(c.nc, hb[avail:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return clientErr(err), false
		}
		b.held = hb
		b.complete, b.consumed = true, true
	case bodyChunked:
		b.ck = edge.NewChunked(c.e.lim)
		n, done, err := b.ck.Feed(c.buf[c.r:c.w])
		if err != nil {
			return clientErr(err), false
		}
		if done {
			b.held = c.buf[c.r : c.r+n]
			c.r += n
			b.complete, b.consumed = true, true
			if !c.checkMax(b.ck.Data()) {
				return clientErr(errBodyTooLarge), false
			}
			return Outcome{}, true
		}
		c.send100()
		c.nc.SetReadDeadline(c.bodyDeadline())
		b.hp = bodyBufs.Get().(*[]byte)
		hb := append((*b.hp)[:0], c.buf[c.r:c.w]...)
		c.r = c.w
		for len(hb) < cap(hb) {
			m, rerr := c.nc.Read(hb[len(hb):cap(hb)])
			if m > 0 {
				k, done, ferr := b.ck.Feed(hb[len(hb) : len(hb)+m])
				if ferr != nil {
					return clientErr(ferr), false
				}
				if done {
					c.keep(hb[len(hb)+k : len(hb)+m])
					b.held = hb[:len(hb)+k]
					b.complete, b.consumed = true, true
					if !c.checkMax(b.ck.Data()) {
						return clientErr(errBodyTooLarge), false
					}
					return Outcome{}, true
				}
				hb = hb[:len(hb)+m]
			}
			if rerr != nil {
				if rerr == io.EOF {
					rerr = io.ErrUnexpectedEOF
				}
				return clientErr(rerr), false
			}
		}
		if !c.checkMax(b.ck.Data()) {
			return clientErr(errBodyTooLarge), false
		}
		b.held = hb
		b.streaming = true
	}
	return Outcome{}, true
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
	if _, err := uc.nc.Write(b.held); err != nil {
		res.back = err
		return
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
		m, rerr := c.nc.Read(buf[:want])
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
				res.client = errBodyTooLarge
				uc.nc.Close()
				return
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
		c.stopping.Store(true)
		c.nc.SetReadDeadline(time.Unix(1, 0))
		uc.nc.Close()
		c.req.closeAfter = true
	}
	r := <-c.bodyc
	b.running = false
	c.stopping.Store(false)
	return r
}

// Send implements Attempt: one exchange with b over a pooled connection.
// A reused connection that the backend had closed is replaced by a new one
// when the request is replayable, without counting as an attempt.
func (c *h1conn) Send(ctx context.Context, b *pool.Backend, canRetry bool) Outcome {
	q := &c.req
	if !q.body.prepared {
		// The body is read before a backend sees anything of the request,
		// so that a malformed one never reaches a backend.
		if o, ok := c.prepareBody(); !ok {
			return o
		}
	}
	for {
		uc, err := q.t.Conns.get(ctx, b, !c.Replayable())
		if err != nil {
			return Outcome{Class: ConnectFailure, Err: err}
		}
		o, stale := c.exchange(uc, b, canRetry)
		if !stale {
			return o
		}
	}
}

// exchange writes the request on uc and reads the response head; stale
// reports a reused connection that failed before any byte came back.
func (c *h1conn) exchange(uc *upConn, b *pool.Backend, canRetry bool) (Outcome, bool) {
	q := &c.req
	t := q.t
	start := time.Now()
	dl := q.deadline
	if d := t.Timeouts.ResponseHeader; d > 0 {
		if hd := start.Add(d); dl.IsZero() || hd.Before(dl) {
			dl = hd
		}
	}
	uc.nc.SetDeadline(dl)
	if err := c.writeRequest(uc, b); err != nil {
		uc.nc.Close()
		if uc.reused && !q.body.streaming {
			return Outcome{}, true
		}
		c.endStream(uc, true)
		return Outcome{Class: Reset, Err: err}, false
	}
	if q.body.streaming {
		if c.bodyc == nil {
			c.bodyc = make(chan bodyResult, 1)
		}
		q.body.running = true
		go c.streamBody(uc)
	}
	var rh edge.ResponseHead
	n := 0
	for {
		var perr error
		n = 0
		if uc.w > uc.r {
			n, perr = edge.ParseResponseHead(uc.buf[uc.r:uc.w], &rh)
		}
		if perr != nil {
			uc.nc.Close()
			c.endStream(uc, true)
			return Outcome{Class: Reset, Err: perr}, false
		}
		if n > 0 {
			if rh.Status < 200 && rh.Status != 101 {
				uc.r += n // interim (100, 103): dropped, as net/http's Transport does
				continue
			}
			break
		}
		if err := uc.fill(edge.MaxResponseHeaderBytes + upBufSize); err != nil {
			uc.nc.Close()
			if r := c.endStream(uc, true); r.client != nil {
				return clientErr(r.client), false
			}
			if isTimeout(err) {
				if !q.deadline.IsZero() && !time.Now().Before(q.deadline) {
					return Outcome{Class: Timeout, Err: errRequestTimeout}, false
				}
				return Outcome{Class: Timeout, Err: errHeaderTimeout}, false
			}
			if uc.reused && uc.w == 0 && c.Replayable() {
				return Outcome{}, true
			}
			return Outcome{Class: Reset, Err: err}, false
		}
	}
	b.Stats.ObserveLatency(time.Since(start))
	if rh.Status == 101 {
		return c.tunnel(uc, &rh, n, b), false
	}
	if canRetry && slices.Contains(t.Retries.OnStatus, rh.Status) {
		head := uc.buf[uc.r : uc.r+n]
		ra, _ := (&rawFields{head: head, first: rh.First}).Value("Retry-After", 0)
		retryAfter := parseRetryAfter(ra)
		if t.RetryOnStatus(rh.Status, retryAfter, c, canRetry) {
			uc.r += n
			c.discardResponse(uc, &rh)
			return Outcome{Class: RetryStatus, Status: rh.Status, RetryAfter: retryAfter}, false
		}
	}
	return c.deliver(uc, &rh, n, b), false
}

// writeRequest writes the outbound head and, when the body is held whole,
// the body with it in one system call.
func (c *h1conn) writeRequest(uc *upConn, b *pool.Backend) error {
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
	bufs := net.Buffers(c.iov[:])
	_, err := bufs.WriteTo(uc.nc)
	c.iov[0], c.iov[1] = nil, nil
	return err
}

// discardResponse reads a small framed response body so that its
// connection can be reused, or closes the connection.
func (c *h1conn) discardResponse(uc *upConn, rh *edge.ResponseHead) {
	if edge.NoBody(c.req.isHead, rh.Status) && !rh.Close {
		c.req.t.Conns.put(uc)
		return
	}
	if !rh.Chunked && rh.ContentLength >= 0 && rh.ContentLength <= int64(uc.w-uc.r) && !rh.Close {
		uc.r += int(rh.ContentLength)
		c.req.t.Conns.put(uc)
		return
	}
	uc.nc.Close()
}

// Response framing towards the client.
const (
	outNone        = iota // no body
	outFixed              // Content-Length, copied
	outChunked            // chunked, passed through as it comes
	outDechunk            // chunked from the backend, plain to an HTTP/1.0 client
	outChunkEncode        // until-close from the backend, chunked to the client
	outRaw                // until-close both ways
)

// spliceMin is the body size above which a fixed-length response body is
// moved with splice(2) between the two sockets instead of through memory.
const spliceMin = 16 << 10

// deliver sends the response whose head is at uc.buf[uc.r:uc.r+n] to the
// client and streams its body.
func (c *h1conn) deliver(uc *upConn, rh *edge.ResponseHead, n int, b *pool.Backend) Outcome {
	q := &c.req
	head := uc.buf[uc.r : uc.r+n]
	uc.r += n
	mode := outFixed
	switch {
	case edge.NoBody(q.isHead, rh.Status):
		mode = outNone
	case rh.Chunked && q.head.Minor == 1:
		mode = outChunked
	case rh.Chunked:
		mode, q.closeAfter = outDechunk, true
	case rh.ContentLength < 0 && q.head.Minor == 1:
		mode = outChunkEncode
	case rh.ContentLength < 0:
		mode, q.closeAfter = outRaw, true
	}
	if q.websocket || c.e.shutting.Load() {
		q.closeAfter = true // no upgrade happened: the guard's rule, as in the net/http codec
	}
	if q.body.running {
		select {
		case r := <-c.bodyc:
			q.body.running = false
			if r.client != nil || r.back != nil {
				q.closeAfter = true
			}
		default:
			q.closeAfter = true // the backend answered before the body ended
		}
	}

	o := c.out[:0]
	o = append(o, "HTTP/1.1 "...)
	sl := head[9:]
	if i := bytes.IndexByte(sl, '\n'); i >= 0 {
		sl = sl[:i]
	}
	o = append(o, bytes.TrimSuffix(sl, []byte{'\r'})...)
	o = append(o, "\r\n"...)
	o = c.appendResponseFields(o, head, rh.First, mode == outChunked, mode != outFixed && mode != outNone)
	o = append(o, "X-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n"...)
	if st := q.t.Sticky; st != nil && q.info.Preferred != b {
		if v := st.cookieValue(q.t.Pool, b, q.l.TLS); v != "" {
			o = append(o, "Set-Cookie: "...)
			o = append(o, v...)
			o = append(o, "\r\n"...)
		}
	}
	if mode == outChunked || mode == outChunkEncode {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	if q.closeAfter {
		o = append(o, "Connection: close\r\n"...)
	} else if q.head.Minor == 0 {
		o = append(o, "Connection: keep-alive\r\n"...)
	}
	o = append(o, "\r\n"...)
	c.out = o

	if mode != outNone && (mode != outFixed || int64(uc.w-uc.r) < rh.ContentLength) {
		// More of the body is to be read: only the request timeout
		// bounds it from now on, not response_header.
		uc.nc.SetReadDeadline(q.deadline)
	}
	res := Outcome{Class: Done, Status: rh.Status}
	var rerr, werr error
	switch mode {
	case outNone:
		_, werr = c.nc.Write(o)
	case outFixed:
		rerr, werr = c.copyFixed(uc, rh.ContentLength)
	case outChunked, outDechunk:
		rerr, werr = c.copyChunked(uc, mode == outDechunk)
	default:
		rerr, werr = c.copyUntilClose(uc, mode == outChunkEncode)
	}
	switch {
	case werr != nil:
		res.Err = werr
		q.closeAfter = true
		uc.nc.Close()
	case rerr != nil:
		res.Err = rerr
		q.abort = true
		uc.nc.Close()
	case rh.Close || mode == outChunkEncode || mode == outRaw || q.body.running:
		uc.nc.Close()
	default:
		q.t.Conns.put(uc)
	}
	if q.body.running {
		c.endStream(uc, true)
	}
	return res
}

// appendResponseFields appends the fields of a response head that go on to
// the client: all but hop-by-hop ones (except Trailer when the chunked body
// and its trailers pass through as they are), those the response's
// Connection names, X-Request-Id (sluice sets its own) and, when the body
// is re-framed, Content-Length.
func (c *h1conn) appendResponseFields(o, head []byte, first int, keepTrailer, dropLength bool) []byte {
	conn := &c.respConn
	conn.collect(&rawFields{head: head, first: first})
	for p := first; ; {
		f, next, ok := edge.NextField(head, p)
		if !ok {
			return o
		}
		p = next
		nm := f.Name
		if hopField(nm) && !(keepTrailer && equalFoldName(nm, "trailer")) || conn.has(bstr(nm)) ||
			equalFoldName(nm, "x-request-id") || dropLength && equalFoldName(nm, "content-length") {
			continue
		}
		o = append(o, nm...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
}

// copyFixed writes the head in c.out and a body of n bytes: what is
// buffered goes with the head in one write, a large rest by splice.
func (c *h1conn) copyFixed(uc *upConn, n int64) (rerr, werr error) {
	q := &c.req
	have := min(int64(uc.w-uc.r), n)
	body := uc.buf[uc.r : uc.r+int(have)]
	uc.r += int(have)
	if len(c.out)+len(body) <= cap(c.out) {
		c.out = append(c.out, body...)
		_, werr = c.nc.Write(c.out)
	} else {
		c.iov[0], c.iov[1] = c.out, body
		bufs := net.Buffers(c.iov[:])
		_, werr = bufs.WriteTo(c.nc)
		c.iov[0], c.iov[1] = nil, nil
	}
	q.bytes = have
	if werr != nil {
		return nil, werr
	}
	left := n - have
	if left >= spliceMin && uc.tcp != nil && c.tcp != nil {
		// splice(2) through a kernel pipe; a failure on either side ends
		// both connections alike.
		uc.lr = io.LimitedReader{R: uc.tcp, N: left}
		m, err := c.tcp.ReadFrom(&uc.lr)
		q.bytes += m
		if m < left {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
		return nil, nil
	}
	uc.r, uc.w = 0, 0
	for left > 0 {
		m, err := uc.nc.Read(uc.buf[:min(int64(len(uc.buf)), left)])
		if m > 0 {
			left -= int64(m)
			if _, werr = c.nc.Write(uc.buf[:m]); werr != nil {
				return nil, werr
			}
			q.bytes += int64(m)
		}
		if err != nil && left > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
	}
	return nil, nil
}

// copyChunked writes the head in c.out and a chunked body: passed through
// as it is (trailers included), or decoded for an HTTP/1.0 client.
func (c *h1conn) copyChunked(uc *upConn, dechunk bool) (rerr, werr error) {
	q := &c.req
	ck := edge.NewChunked(edge.Limits{MaxHeaderBytes: edge.MaxResponseHeaderBytes, MaxHeaders: 1000})
	pending := c.out // written with the first piece of body
	for {
		var piece []byte
		done := false
		if dechunk {
			// Framing bytes one at a time, data in runs.
			for uc.r < uc.w && !done {
				if left := ck.DataLeft(); left > 0 {
					k := int(min(left, int64(uc.w-uc.r)))
					piece = uc.buf[uc.r : uc.r+k]
					ck.Skip(k)
					uc.r += k
					break
				}
				_, d, err := ck.Feed(uc.buf[uc.r : uc.r+1])
				if err != nil {
					return err, nil
				}
				uc.r++
				done = d
			}
		} else if uc.r < uc.w {
			k, d, err := ck.Feed(uc.buf[uc.r:uc.w])
			if err != nil {
				return err, nil
			}
			piece, done = uc.buf[uc.r:uc.r+k], d
			uc.r += k
		}
		if len(pending) > 0 || len(piece) > 0 {
			if len(pending) > 0 && len(pending)+len(piece) <= cap(c.out) {
				pending = append(pending, piece...)
				piece = nil
			}
			if len(pending) > 0 {
				if _, werr = c.nc.Write(pending); werr != nil {
					return nil, werr
				}
				pending = nil
			}
			if len(piece) > 0 {
				if _, werr = c.nc.Write(piece); werr != nil {
					return nil, werr
				}
			}
			q.bytes += int64(len(piece))
		}
		if done {
			return nil, nil
		}
		if uc.r == uc.w {
			uc.r, uc.w = 0, 0
			if err := uc.fill(len(uc.buf)); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err, nil
			}
		}
	}
}

// copyUntilClose writes the head in c.out and a body that ends when the
// backend closes, chunk-encoded for an HTTP/1.1 client.
func (c *h1conn) copyUntilClose(uc *upConn, encode bool) (rerr, werr error) {
	q := &c.req
	if _, werr = c.nc.Write(c.out); werr != nil {
		return nil, werr
	}
	var size [20]byte
	for {
		if uc.r < uc.w {
			piece := uc.buf[uc.r:uc.w]
			if encode {
				h := strconv.AppendInt(size[:0], int64(len(piece)), 16)
				h = append(h, '\r', '\n')
				c.iov[0], c.iov[1], c.iov[2] = h, piece, crlf
				bufs := net.Buffers(c.iov[:3])
				_, werr = bufs.WriteTo(c.nc)
				c.iov[0], c.iov[1], c.iov[2] = nil, nil, nil
			} else {
				_, werr = c.nc.Write(piece)
			}
			if werr != nil {
				return nil, werr
			}
			q.bytes += int64(len(piece))
		}
		uc.r, uc.w = 0, 0
		if err := uc.fill(len(uc.buf)); err != nil {
			if err != io.EOF {
				return err, nil
			}
			if encode {
				_, werr = c.nc.Write([]byte("0\r\n\r\n"))
			}
			return nil, werr
		}
	}
}

var crlf = []byte("\r\n")

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
			if _, err := io.CopyN(io.Discard, c.nc, left); err != nil {
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
			n, err := c.nc.Read(c.buf)
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

// tunnel completes a switch to WebSocket that the backend accepted: the
// 101 response goes to the client, then bytes flow both ways until either
// side closes.
func (c *h1conn) tunnel(uc *upConn, rh *edge.ResponseHead, n int, b *pool.Backend) Outcome {
	q := &c.req
	q.closeAfter = true
	if !q.websocket || !edge.EqualFold(rh.Upgrade, "websocket") {
		uc.nc.Close()
		return Outcome{Class: Reset, Err: fmt.Errorf("backend switched to protocol %q, which the request did not ask for (only websocket is passed on)", rh.Upgrade)}
	}
	head := uc.buf[uc.r : uc.r+n]
	uc.r += n
	o := append(c.out[:0], "HTTP/1.1 101 Switching Protocols\r\n"...)
	o = c.appendResponseFields(o, head, rh.First, false, false)
	o = append(o, "Connection: Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n\r\n"...)
	c.out = o
	uc.nc.SetDeadline(time.Time{})
	c.nc.SetDeadline(time.Time{})
	if _, err := c.nc.Write(o); err != nil {
		uc.nc.Close()
		return Outcome{Class: Done, Status: 101, Err: err}
	}
	tn := &tunnel{client: c.nc, back: uc.nc, pool: q.t.Pool.Name, backend: b}
	if !c.e.o.Tunnels.add(tn) {
		return Outcome{Class: Done, Status: 101} // shutting down
	}
	defer c.e.o.Tunnels.remove(tn)
	fromClient := io.MultiReader(bytes.NewReader(c.buf[c.r:c.w]), c.nc)
	c.r = c.w
	fromBack := io.MultiReader(bytes.NewReader(uc.buf[uc.r:uc.w]), uc.nc)
	q.bytes = tn.relay(fromClient, fromBack, uc.nc)
	return Outcome{Class: Done, Status: 101}
}
