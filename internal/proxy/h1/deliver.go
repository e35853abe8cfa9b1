package h1

import (
	"bytes"
	"io"
	"strconv"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/rawio"
)

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
func (c *h1conn) deliver(uc *upConn, rh *edge.ResponseHead, n int, b *pool.Backend) proxy.Outcome {
	q := &c.req
	head := uc.buf[uc.r : uc.r+n]
	uc.r += n
	mode := c.responseMode(rh)
	if q.websocket || c.e.shutting.Load() || q.body.unsent() {
		// No upgrade happened (the guard's rule, as in the net/http
		// codec), or the client holds a body it was never asked for.
		q.closeAfter = true
	}
	if q.body.running {
		select {
		case r := <-c.bodyc:
			q.body.running = false
			if r.client != nil || r.back != nil {
				q.closeAfter = true
			}
		default:
			// The backend answered before the writer reported: the
			// connection can go on only if the client's body was read
			// to its end (the writer may still be sending its last bytes).
			if !c.bodyIn.Load() {
				q.closeAfter = true
			}
		}
	}

	c.out = c.appendResponseHead(c.out[:0], head, rh, mode, b)
	switch mode {
	case outNone:
		uc.sized(int64(n))
	case outFixed:
		uc.sized(int64(n) + rh.ContentLength)
	}

	if mode != outNone && (mode != outFixed || int64(uc.w-uc.r) < rh.ContentLength) {
		// More of the body is to be read: only the request timeout
		// bounds it from now on, not response_header.
		uc.nc.SetReadDeadline(q.deadline)
	}
	res := proxy.Outcome{Class: proxy.Done, Status: rh.Status}
	var rerr, werr error
	switch mode {
	case outNone:
		_, werr = c.rw.Write(c.out)
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
	case rh.Close || mode == outChunkEncode || mode == outRaw || q.body.running || q.body.unsent():
		uc.nc.Close()
	default:
		uc.release()
	}
	if q.body.running {
		c.endStream(uc, true)
	}
	return res
}

// responseMode is how the response body goes on to the client, which
// depends on its framing and the client's HTTP version; a mode that can
// only end with the connection sets closeAfter.
func (c *h1conn) responseMode(rh *edge.ResponseHead) int {
	q := &c.req
	switch {
	case edge.NoBody(q.isHead, rh.Status):
		return outNone
	case c.h2 && rh.Chunked:
		return outDechunk // an HTTP/2 stream's DATA frames carry the content
	case c.h2 && rh.ContentLength < 0:
		return outRaw // its END_STREAM ends it
	case rh.Chunked && q.head.Minor == 1:
		return outChunked
	case rh.Chunked:
		q.closeAfter = true
		return outDechunk
	case rh.ContentLength < 0 && q.head.Minor == 1:
		return outChunkEncode
	case rh.ContentLength < 0:
		q.closeAfter = true
		return outRaw
	}
	return outFixed
}

// appendResponseHead appends the head the client gets for the backend's
// head: its status line and fields as appendResponseFields passes them,
// then sluice's own (X-Request-Id, the affinity cookie, the framing and
// Connection fields for mode).
func (c *h1conn) appendResponseHead(o, head []byte, rh *edge.ResponseHead, mode int, b *pool.Backend) []byte {
	q := &c.req
	o = append(o, "HTTP/1.1 "...)
	sl := head[9:]
	if i := bytes.IndexByte(sl, '\n'); i >= 0 {
		sl = sl[:i]
	}
	o = append(o, bytes.TrimSuffix(sl, []byte{'\r'})...)
	o = append(o, "\r\n"...)
	o = c.appendClientFields(o, head, rh, mode, b)
	return q.appendHeadEnd(o, mode == outChunked || mode == outChunkEncode, q.closeAfter)
}

// appendClientFields appends the fields of the head the client gets, but
// its framing and Connection fields: the backend's as appendResponseFields
// passes them, then sluice's own (X-Request-Id, Alt-Svc, the affinity
// cookie). Also an HTTP/2 stream's fields (loopstream_linux.go), whose
// chunked body's trailers go on as trailers.
func (c *h1conn) appendClientFields(o, head []byte, rh *edge.ResponseHead, mode int, b *pool.Backend) []byte {
	q := &c.req
	o = c.appendResponseFields(o, head, rh.First, mode == outChunked || c.h2 && mode == outDechunk, mode != outFixed && mode != outNone, b)
	o = append(o, "X-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n"...)
	if q.l.AltSvc != "" {
		o = append(o, "Alt-Svc: "...)
		o = append(o, q.l.AltSvc...)
		o = append(o, "\r\n"...)
	}
	if st := q.t.Sticky; st != nil && q.info.Preferred != b {
		if v := st.CookieValue(q.t.Pool, b, q.l.TLS); v != "" {
			o = append(o, "Set-Cookie: "...)
			o = append(o, v...)
			o = append(o, "\r\n"...)
		}
	}
	return o
}

// appendHeadEnd ends a response head: Transfer-Encoding when the body is
// chunked, the Connection field the client needs (close, or keep-alive for
// HTTP/1.0) and the empty line.
func (q *h1req) appendHeadEnd(o []byte, chunked, closeConn bool) []byte {
	if chunked {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	if closeConn {
		o = append(o, "Connection: close\r\n"...)
	} else if q.head.Minor == 0 {
		o = append(o, "Connection: keep-alive\r\n"...)
	}
	return append(o, "\r\n"...)
}

// appendResponseFields appends the fields of a response head that go on to
// the client: all but hop-by-hop ones (except Trailer when the chunked body
// and its trailers pass through as they are), those the response's
// Connection names, X-Request-Id (sluice sets its own), Alt-Svc when
// sluice advertises its own (HTTP/3), the pool's load field (read here for
// b, see proxy.ObserveLoad) and, when the body is re-framed,
// Content-Length. Repeated Content-Length fields (the parser
// admits them only when they agree) go on as one.
func (c *h1conn) appendResponseFields(o, head []byte, first int, keepTrailer, dropLength bool, b *pool.Backend) []byte {
	conn := &c.respConn
	conn.collect(&rawFields{head: head, first: first})
	sawLength, sawLoad := false, false
	load := c.req.t.LoadHeader
	for f := range edge.Fields(head, first) {
		nm := f.Name
		if proxy.IsHop(bstr(nm)) && !(keepTrailer && equalFoldName(nm, "trailer")) || conn.has(bstr(nm)) ||
			equalFoldName(nm, "x-request-id") || c.req.l.AltSvc != "" && equalFoldName(nm, "alt-svc") {
			continue
		}
		if load != "" && equalFoldName(nm, load) {
			if !sawLoad {
				sawLoad = true
				proxy.ObserveLoad(b, bstr(f.Value))
			}
			continue
		}
		if equalFoldName(nm, "content-length") {
			if dropLength || sawLength {
				continue
			}
			sawLength = true
		}
		o = append(o, nm...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	return o
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
		_, werr = c.rw.Write(c.out)
	} else {
		c.iov[0], c.iov[1] = c.out, body
		_, werr = rawio.WriteBuffers(c.rw, c.iov[:])
		c.iov[0], c.iov[1] = nil, nil
	}
	q.rec.Bytes = have
	if werr != nil {
		return nil, werr
	}
	left := n - have
	if left >= spliceMin && uc.tcp != nil && c.tcp != nil {
		// splice(2) through a kernel pipe; a failure on either side ends
		// both connections alike.
		uc.lr = io.LimitedReader{R: uc.tcp, N: left}
		m, err := c.tcp.ReadFrom(&uc.lr)
		q.rec.Bytes += m
		if m < left {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
		return nil, nil
	}
	if left == 0 {
		return nil, nil // bytes still buffered past the body are not the client's
	}
	uc.r, uc.w = 0, 0
	if left > int64(len(uc.buf)) {
		uc.grow()
	}
	for left > 0 {
		m, err := uc.nc.Read(uc.buf[:min(int64(len(uc.buf)), left)])
		if m > 0 {
			left -= int64(m)
			if _, werr = c.rw.Write(uc.buf[:m]); werr != nil {
				return nil, werr
			}
			q.rec.Bytes += int64(m)
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
				if _, werr = c.rw.Write(pending); werr != nil {
					return nil, werr
				}
				pending = nil
			}
			if len(piece) > 0 {
				if _, werr = c.rw.Write(piece); werr != nil {
					return nil, werr
				}
			}
			q.rec.Bytes += int64(len(piece))
		}
		if done {
			return nil, nil
		}
		if uc.r == uc.w {
			if err := uc.refill(); err != nil {
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
	if _, werr = c.rw.Write(c.out); werr != nil {
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
				_, werr = rawio.WriteBuffers(c.rw, c.iov[:3])
				c.iov[0], c.iov[1], c.iov[2] = nil, nil, nil
			} else {
				_, werr = c.rw.Write(piece)
			}
			if werr != nil {
				return nil, werr
			}
			q.rec.Bytes += int64(len(piece))
		}
		if err := uc.refill(); err != nil {
			if err != io.EOF {
				return err, nil
			}
			if encode {
				_, werr = c.rw.Write(lastChunk)
			}
			return nil, werr
		}
	}
}

var (
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n") // a chunked body's end, without trailers
)
