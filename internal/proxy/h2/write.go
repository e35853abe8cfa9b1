package h2

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// responseWriter is a stream's http.ResponseWriter. Only the handler's
// goroutine uses it; what it sends goes through the connection's lock.
type responseWriter struct {
	st     *stream
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // the final status is set
	sentHeader  bool // its HEADERS frame is queued (hdr holds it until then)
	ended       bool // END_STREAM is queued
	buf         []byte
	hdr         []byte   // the encoded header block, until it is queued
	declared    []string // trailer names announced in the Trailer field
	cl          int64    // the content-length the handler set, or -1
	written     int64

	// The first backing arrays of buf and hdr (withStream): a small
	// response needs no allocation of its own for them. What they hold is
	// copied into the connection's output (sendData, writeHeadersLocked).
	bodyBuf [512]byte
	hdrBuf  [256]byte
}

// bufSize is how much body a response holds before it sends a DATA frame
// (one frame of the client's default size).
const bufSize = 16 << 10

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("http2: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols {
			w.informational(code)
		}
		return
	}
	w.wroteHeader, w.status = true, code
	w.cl = -1
	if v := w.header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				w.declared = append(w.declared, k)
			}
		}
	}
	// The fields as they are now are the response's (later changes are
	// trailers or nothing, as net/http has it): the block is encoded now
	// and queued with the body's first bytes or the stream's end, so that
	// a response without a body (gRPC's trailers-only) is one HEADERS
	// frame with END_STREAM. Encoding uses no dynamic table (see
	// newConn), so a block may be encoded before another stream's that
	// goes out first.
	c := w.st.c
	c.mu.Lock()
	w.hdr = append(w.hdr[:0], c.encodeLocked(w.status, w.header, false)...)
	c.mu.Unlock()
}

// bodyAllowed reports whether the status may have content (RFC 9110 §6.4.1).
func (w *responseWriter) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	w.written += int64(len(p))
	if len(w.buf)+len(p) <= bufSize {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if err := w.send(false, nil, false); err != nil {
		return 0, err
	}
	if err := w.st.c.sendData(w.st, p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *responseWriter) Flush() { w.FlushError() }

// FlushError sends the header and what the body holds (http.ResponseController).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.send(false, nil, true)
}

// SetReadDeadline bounds the handler's reads of the request body
// (http.ResponseController).
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	w.st.setReadDeadline(t)
	return nil
}

// finish ends the response after the handler returned: the header if it
// is not out yet (with a content-length when the whole body is known), the
// body held, and the trailers.
func (w *responseWriter) finish() error {
	if w.ended {
		return nil
	}
	if !w.wroteHeader {
		// The whole body is known: say how long it is, unless trailers
		// are declared.
		if _, ok := w.header["Trailer"]; !ok && w.req.Method != http.MethodHead {
			if _, ok := w.header["Content-Length"]; !ok {
				w.header["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
			}
		}
		w.WriteHeader(http.StatusOK)
	}
	var trailers http.Header
	for _, k := range w.declared {
		if vv := w.header[k]; len(vv) > 0 {
			if trailers == nil {
				trailers = http.Header{}
			}
			trailers[k] = vv
		}
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if trailers == nil {
				trailers = http.Header{}
			}
			trailers[http.CanonicalHeaderKey(k[len(http.TrailerPrefix):])] = vv
		}
	}
	return w.send(true, trailers, true)
}

// send queues the body held and, with end, the end of the stream (in the
// trailers' HEADERS when there are any), then writes what is queued
// unless another write is under way (which writes it). flush asks for a
// write even without body bytes (the header).
func (w *responseWriter) send(end bool, trailers http.Header, flush bool) error {
	st := w.st
	c := st.c
	if !w.sentHeader || end {
		c.mu.Lock()
		if err := st.failedLocked(); err != nil {
			c.mu.Unlock()
			return err
		}
		if !w.sentHeader {
			w.sentHeader = true
			st.headerSent = true
			endNow := end && len(w.buf) == 0 && trailers == nil
			c.writeHeadersLocked(st.id, w.hdr, endNow)
			if endNow {
				st.localDone = true
				c.settleLocked(st)
				w.ended = true
				c.flushLocked()
				c.mu.Unlock()
				return nil
			}
		}
		c.mu.Unlock()
	} else if len(w.buf) == 0 && !flush {
		return nil
	}
	endData := end && trailers == nil
	if len(w.buf) > 0 || endData {
		err := c.sendData(st, w.buf, endData)
		w.buf = w.buf[:0]
		if err != nil {
			return err
		}
	} else if flush {
		c.mu.Lock()
		c.flushLocked()
		c.mu.Unlock()
	}
	if end {
		w.ended = true
		if trailers != nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			if err := st.failedLocked(); err != nil {
				return err
			}
			c.writeHeadersLocked(st.id, c.encodeLocked(0, trailers, true), true)
			st.localDone = true
			c.settleLocked(st)
			c.flushLocked()
		}
	}
	return nil
}

// failedLocked is the error that ends the handler's writes, if any.
func (st *stream) failedLocked() error {
	if st.err != nil {
		return st.err
	}
	if st.reset {
		return errStreamClosed
	}
	if st.c.dead {
		return st.c.deadErr
	}
	return nil
}

// sendData queues p as DATA frames within the client's windows (waiting
// for them), end marking the last, and writes.
func (c *conn) sendData(st *stream, p []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		n := 0
		for {
			if err := st.failedLocked(); err != nil {
				return err
			}
			if c.backedUpLocked() && !c.dead {
				// Back-pressure first, and the windows read after it:
				// other streams may use the connection's meanwhile (a
				// size taken before this wait overdrew it, and an empty
				// frame's then negative size broke the framing).
				c.drained.Wait()
				continue
			}
			n = min(len(p), int(st.sendWin), int(c.sendWin), int(c.peerMaxFrame))
			if n > 0 || len(p) == 0 {
				n = max(n, 0) // an empty frame needs no window
				break
			}
			if len(c.out) > 0 && !c.flushing {
				// What is queued goes out before the wait (the flush
				// unlocks: look again after it).
				c.flushLocked()
				continue
			}
			st.cond.Wait()
		}
		var flags http2.Flags
		if end && n == len(p) {
			flags = http2.FlagDataEndStream
			st.localDone = true
			c.settleLocked(st)
		}
		c.out = appendFrameHeader(c.out, n, http2.FrameData, flags, st.id)
		c.out = append(c.out, p[:n]...)
		st.sendWin -= int32(n)
		c.sendWin -= int32(n)
		p = p[n:]
		if len(p) == 0 {
			break
		}
	}
	if end {
		c.flushSoonLocked()
	} else {
		c.flushLocked()
	}
	return nil
}

// flushSoonLocked writes what is queued at the end of a response: when
// other streams of the connection are open, it first yields the processor
// once (runtime.Gosched), so that their handlers which are ready to run
// (their backends answered in the same poll) queue their frames too, and
// one write carries them all, as an event loop writes once per wake-up.
// No timer: the write waits only for goroutines that were runnable.
// Measured with h2load -c50 -m10: writes to the client per response 1.0
// before, 0.23 after (bench/tlsstat.sh).
func (c *conn) flushSoonLocked() {
	if c.active > 0 && !c.flushing {
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	c.flushLocked()
}

// informational sends a 1xx response (100 Continue, 103 Early Hints) with
// the fields set so far.
func (w *responseWriter) informational(code int) {
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.st.failedLocked() == nil {
		c.writeHeadersLocked(w.st.id, c.encodeLocked(code, w.header, false), false)
		c.flushLocked()
	}
}

// writeStatusLocked queues a response of sluice's own with no fields: 100
// Continue (the stream goes on), or a refusal that ends the stream.
func (c *conn) writeStatusLocked(id uint32, status int, _ string) {
	c.writeHeadersLocked(id, c.encodeLocked(status, nil, false), status >= 200)
}

// encodeLocked HPACK-encodes a header block: :status (unless trailers) and
// the fields of h that HTTP/2 allows. The result is valid until the next
// call.
func (c *conn) encodeLocked(status int, h http.Header, trailers bool) []byte {
	b := c.hb[:0]
	if !trailers {
		b = appendStatus(b, status)
	}
	for k, vv := range h {
		if !trailers && strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		name, ok := c.lowerKeyLocked(k)
		if !ok {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				b = appendField(b, name, v)
			}
		}
	}
	c.hb = b
	return b
}

// writeHeadersLocked queues a header block as HEADERS and CONTINUATION
// frames of at most the client's frame size.
func (c *conn) writeHeadersLocked(id uint32, block []byte, end bool) {
	if c.sizeUpdate {
		// Blocks are written in another order than they are encoded in:
		// the update goes on the first one written.
		c.sizeUpdate = false
		block = append([]byte{tableSizeZero}, block...)
	}
	typ := http2.FrameHeaders
	var flags http2.Flags
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(block), int(c.peerMaxFrame))
		f := flags
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		c.out = appendFrameHeader(c.out, n, typ, f, id)
		c.out = append(c.out, block[:n]...)
		block = block[n:]
		if len(block) == 0 {
			return
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

func (c *conn) writeRSTLocked(id uint32, code http2.ErrCode) {
	c.resets[c.resetAt%len(c.resets)] = id
	c.resetAt++
	c.out = appendFrameHeader(c.out, 4, http2.FrameRSTStream, 0, id)
	c.out = append(c.out, byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

// writeSettingsLocked queues sluice's SETTINGS and the connection window
// above the initial one.
func (c *conn) writeSettingsLocked() {
	settings := [...]http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStreams},
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.streamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeaderList},
	}
	c.out = appendFrameHeader(c.out, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		c.out = append(c.out, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
	if more := c.connWindow - initialWindow; more > 0 {
		c.out = appendWindowUpdate(c.out, 0, uint32(more))
	}
}

// flushLocked writes what is queued, unless a write is under way (whose
// goroutine writes it next). It unlocks c.mu while it writes.
func (c *conn) flushLocked() {
	if c.lw != nil {
		c.lw.flushLocked()
		return
	}
	for !c.flushing && len(c.out) > 0 && !c.dead {
		c.flushing = true
		buf := c.out
		c.out, c.spare = c.spare[:0], nil
		if wt := c.srv.WriteTimeout; wt > 0 {
			// Set lazily: at most once a second under steady writing.
			if now := time.Now(); c.wdl.Sub(now) < wt-time.Second {
				c.wdl = now.Add(wt)
				c.nc.SetWriteDeadline(c.wdl)
			}
		}
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.flushing = false
		if cap(buf) <= keepSpare {
			c.spare = buf[:0]
		}
		c.drained.Broadcast()
		if err != nil {
			c.dieLocked(err)
			c.nc.Close()
		}
	}
}

// pendingLocked is how many bytes wait to be written to the client.
func (c *conn) pendingLocked() int {
	if c.lw != nil {
		return len(c.out) + c.lw.sk.Queued()
	}
	return len(c.out)
}

// backedUpLocked reports whether a handler must wait for the client to
// take what is queued (drained) before it queues more: maxPending waits
// while a write is under way, or on a loop while the socket takes no more
// (or the loop's event holds the writes back).
func (c *conn) backedUpLocked() bool {
	if c.lw != nil {
		// In the loop's event nothing is written until its end.
		return (c.lw.blocked || c.lw.inEvent) && c.pendingLocked() >= maxPending
	}
	return c.flushing && len(c.out) >= maxPending
}

// resetRecently reports whether sluice reset stream id lately.
func (c *conn) resetRecently(id uint32) bool {
	for _, r := range c.resets {
		if r == id && id != 0 {
			return true
		}
	}
	return false
}

func appendFrameHeader(b []byte, n int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendWindowUpdate(b []byte, id, inc uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return append(b, byte(inc>>24)&0x7f, byte(inc>>16), byte(inc>>8), byte(inc))
}

// lowerKey returns the HTTP/2 name of a header key, and false for one that
// must not be sent: invalid, or connection-specific (RFC 9113 §8.2.2).
func lowerKey(k string) (string, bool) {
	if v, ok := commonLower[k]; ok {
		return v, v != ""
	}
	if !httpguts.ValidHeaderFieldName(k) {
		return "", false
	}
	lower := strings.ToLower(k)
	switch lower {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return "", false
	}
	return lower, true
}

// maxLowerKeys bounds a connection's cache of lowered keys.
const maxLowerKeys = 32

// lowerKeyLocked is lowerKey, without allocating again for a key that
// the connection's responses used before and commonLower does not hold (a
// backend's own X- fields, which every response of it carries).
func (c *conn) lowerKeyLocked(k string) (string, bool) {
	if v, ok := commonLower[k]; ok {
		return v, v != ""
	}
	if v, ok := c.lower[k]; ok {
		return v, true
	}
	lower, ok := lowerKey(k)
	if ok && len(c.lower) < maxLowerKeys {
		if c.lower == nil {
			c.lower = make(map[string]string)
		}
		// Copies: k (and lower, when k had no upper case) may be part of
		// a larger string (a backend's whole response head) that the
		// cache must not keep.
		c.lower[strings.Clone(k)] = strings.Clone(lower)
	}
	return lower, ok
}

// commonLower maps common canonical keys to their HTTP/2 names, and the
// connection-specific ones to "" (dropped).
var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Origin", "Age", "Allow", "Alt-Svc", "Authorization", "Cache-Control",
		"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expires",
		"Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Last-Modified", "Link", "Location",
		"Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security", "Trailer", "Vary", "Via",
		"Www-Authenticate", "X-Content-Type-Options", "X-Frame-Options", "X-Request-Id"} {
		m[k] = strings.ToLower(k)
	}
	for _, k := range connHeaders {
		m[k] = ""
	}
	return m
}()

// canonicalKey is the http.Header key of an HTTP/2 field name.
func canonicalKey(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	return http.CanonicalHeaderKey(name)
}

var commonCanonical = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Content-Length", "Content-Type", "Cookie", "Grpc-Accept-Encoding",
		"Grpc-Encoding", "Grpc-Timeout", "Host", "If-Modified-Since", "If-None-Match", "Origin",
		"Priority", "Referer", "Te", "Traceparent", "Tracestate", "User-Agent", "X-Forwarded-For",
		"X-Request-Id"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

func statusText(code int) string {
	if code >= 100 && code < 600 {
		return statusStrings[code-100]
	}
	return strconv.Itoa(code)
}

var statusStrings = func() (s [500]string) {
	for i := range s {
		s[i] = strconv.Itoa(i + 100)
	}
	return
}()
