package h2

// Streams forwarded on the loop: a stream whose request the loop can
// forward itself (Server.Forward, package h1's Engine.ForwardStream: no
// body, a pool of plain HTTP/1.1 backends) runs with no goroutine. Its
// request goes to the forwarder as the HTTP/1.1 head of its checked
// fields; the response comes back through the stream's StreamOut methods
// (Head, Data, Trailers, Reset), on the loop, which frame it within the
// client's windows. What a window holds back waits in the stream
// (loopStream.held) and goes as WINDOW_UPDATEs come; the forwarder asks
// Held before it relays more, and is resumed once nothing waits. Frames
// that streams queue in one wake-up of the loop go out in one write at its
// end (Loop.Defer). Anything else runs on the connection's workers as
// before (handlers.go).

import (
	"bytes"
	"strings"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/edge"
	"golang.org/x/net/http2"
)

// LoopForwarder forwards the request of a stream on the connection's loop
// itself. Forward is given the stream's request as an HTTP/1.1 head (its
// fields checked, :authority as Host, cookies joined) and where the
// response goes; false: it does not (nothing was done), and a worker
// serves the stream. It is called on the loop with the connection's lock
// held, so it must not call out before it returns.
type LoopForwarder interface {
	Forward(sk Socket, head []byte, out StreamOut) (LoopStream, bool)
}

// StreamOut is where a stream forwarded on the loop gets its response:
// package h1's StreamOut, which *stream implements. Called on the loop.
type StreamOut interface {
	Head(status int, fields []byte, end bool)
	Data(p []byte, end bool)
	Trailers(fields []byte)
	Held() bool
	Reset()
}

// LoopStream is the forwarder's side of a stream: Cancel when the stream
// ends otherwise than by the forwarder's last call (the client reset it,
// the connection ended), Resume once what it sent no longer waits.
type LoopStream interface {
	Cancel()
	Resume()
}

// loopStream is a stream's state when the loop forwards it. Under c.mu.
type loopStream struct {
	ls LoopStream
	// live: ls is told Cancel if the stream ends; false once the
	// forwarder made its last call (it ends the stream itself).
	live bool
	// cancelled: ls was told Cancel, which goes on with it (wake does
	// not resume it: it would relay more before the Cancel runs).
	cancelled bool
	// held is body the client's windows do not take yet; heldEnd:
	// END_STREAM goes after it; heldTr: then the trailers' header block.
	held    []byte
	heldEnd bool
	heldTr  []byte
	waiting bool // in lwire.waiters: ls is resumed once nothing waits
}

// cancelLocked tells the forwarder that the stream ended.
func (lo *loopStream) cancelLocked() {
	if lo != nil && lo.live {
		lo.live, lo.cancelled = false, true
		lo.ls.Cancel()
	}
}

// forwardLocked has the loop forward the request that f opens, if it can:
// a request that ended with its HEADERS, which the forwarder takes. An
// error is the stream error to answer with (the request's checks); false
// and nil: serve it as any other (newRequestLocked, on a worker).
func (w *lwire) forwardLocked(f *http2.MetaHeadersFrame) (bool, error) {
	c := w.c
	fwd := c.srv.Forward
	if fwd == nil || !f.StreamEnded() {
		return false, nil
	}
	rl, err := c.checkRequestLocked(f)
	if err != nil {
		return false, err
	}
	// What a worker answers otherwise than the HTTP/1.1 path: CONNECT,
	// TRACE (405), "*", a missing :authority, a content-length (checked
	// against the DATA), Expect, and gRPC (its own failure answers).
	switch rl.method {
	case "CONNECT", "TRACE":
		return false, nil
	}
	if rl.path == "*" || rl.authority == "" || rl.declared >= 0 || (rl.scheme == "https") != (c.tls != nil) {
		// (A scheme that is not the connection's: the worker's request
		// has the TLS state only for https.)
		return false, nil
	}
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "expect":
			return false, nil
		case "content-type":
			if strings.HasPrefix(hf.Value, "application/grpc") {
				return false, nil
			}
		}
	}
	w.head = appendRequestHead(w.head[:0], &rl, f)
	ls := &loopStreamOf{st: stream{c: c, id: f.StreamID, declared: -1, recvWin: c.streamWindow,
		sendWin: c.peerWindow, remoteDone: true, eof: true}}
	st := &ls.st
	st.cond.L = &c.mu
	fs, ok := fwd.Forward(w.sk, w.head, st)
	if cap(w.head) > 16<<10 {
		w.head = nil // a large head's buffer is not kept
	}
	if !ok {
		return false, nil
	}
	ls.lo = loopStream{ls: fs, live: true}
	st.lo = &ls.lo
	c.registerLocked(st)
	return true, nil
}

// loopStreamOf is a stream the loop forwards and its state: one
// allocation.
type loopStreamOf struct {
	st stream
	lo loopStream
}

// appendRequestHead appends the HTTP/1.1 head of the request rl and f's
// fields give: its request line, Host from :authority, the fields (their
// names as HTTP/2 has them, in lower case) and the cookies in one field
// (RFC 9113 §8.2.3).
func appendRequestHead(b []byte, rl *reqLine, f *http2.MetaHeadersFrame) []byte {
	b = append(b, rl.method...)
	b = append(b, ' ')
	b = append(b, rl.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, rl.authority...)
	b = append(b, "\r\n"...)
	cookies := 0
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "host":
			continue
		case "cookie":
			cookies++
			continue
		}
		b = append(b, hf.Name...)
		b = append(b, ": "...)
		b = append(b, hf.Value...)
		b = append(b, "\r\n"...)
	}
	if cookies > 0 {
		b = append(b, "cookie: "...)
		sep := false
		for _, hf := range f.RegularFields() {
			if hf.Name == "cookie" {
				if sep {
					b = append(b, "; "...)
				}
				b = append(b, hf.Value...)
				sep = true
			}
		}
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// Head sends the response head (StreamOut).
func (st *stream) Head(status int, fields []byte, end bool) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.failedLocked() != nil {
		return
	}
	st.headerSent = true
	c.writeHeadersLocked(st.id, c.encodeFieldsLocked(status, fields, false), end)
	if end {
		st.localDone = true
		c.endLoopStreamLocked(st)
	}
	c.lw.queueLocked()
}

// Data sends body bytes: DATA frames as far as the windows allow, and the
// rest held (StreamOut).
func (st *stream) Data(p []byte, end bool) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.failedLocked() != nil {
		return
	}
	lo := st.lo
	if len(lo.held) == 0 && !lo.heldEnd {
		p = p[c.frameLocked(st, p, end):]
	}
	lo.held = append(lo.held, p...)
	if end && !st.localDone {
		lo.heldEnd = true
	}
	if st.localDone {
		c.endLoopStreamLocked(st)
	}
	c.lw.queueLocked()
}

// Trailers ends the body with trailers, after what is held (StreamOut).
func (st *stream) Trailers(fields []byte) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.failedLocked() != nil {
		return
	}
	block := c.encodeFieldsLocked(0, fields, true)
	lo := st.lo
	if len(lo.held) > 0 {
		lo.heldTr = append(lo.heldTr[:0], block...)
		return
	}
	c.writeHeadersLocked(st.id, block, true)
	st.localDone = true
	c.endLoopStreamLocked(st)
	c.lw.queueLocked()
}

// Held reports whether what the forwarder sent waits: for the client's
// windows, or for its socket to take what is queued (StreamOut). Then the
// forwarder is resumed once it does not.
func (st *stream) Held() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.heldLocked(st) {
		return false
	}
	if lo := st.lo; !lo.waiting {
		lo.waiting = true
		c.lw.waiters = append(c.lw.waiters, st)
	}
	return true
}

// Reset ends the stream with RST_STREAM (INTERNAL_ERROR): its response
// broke off (StreamOut). Nothing, once the stream has ended.
func (st *stream) Reset() {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.lo.live = false
	if st.reset {
		return
	}
	c.resetLocked(st, http2.ErrCodeInternal, errStreamClosed)
	c.lw.queueLocked()
}

// heldLocked reports whether bytes of st wait: in the stream, or more than
// maxPending on the connection's socket.
func (c *conn) heldLocked(st *stream) bool {
	if st.failedLocked() != nil {
		return false
	}
	lo := st.lo
	return len(lo.held) > 0 || lo.heldEnd || lo.heldTr != nil || c.pendingLocked() >= maxPending
}

// pushLocked frames what st holds as far as the windows now allow.
func (c *conn) pushLocked(st *stream) {
	lo := st.lo
	if st.failedLocked() != nil || len(lo.held) == 0 && !lo.heldEnd && lo.heldTr == nil {
		return
	}
	n := c.frameLocked(st, lo.held, lo.heldEnd && lo.heldTr == nil)
	k := copy(lo.held, lo.held[n:])
	lo.held = lo.held[:k]
	if k > 0 {
		return
	}
	if lo.heldTr != nil {
		c.writeHeadersLocked(st.id, lo.heldTr, true)
		lo.heldTr = nil
		st.localDone = true
	}
	if st.localDone {
		lo.heldEnd = false
		c.endLoopStreamLocked(st)
	}
}

// endLoopStreamLocked closes a stream whose response went whole: the
// forwarder made its last call.
func (c *conn) endLoopStreamLocked(st *stream) {
	st.lo.live = false
	c.settleLocked(st)
	c.closeStreamLocked(st)
}

// frameLocked queues p as DATA frames as far as the stream's and the
// connection's windows and the client's frame size allow, END_STREAM on
// the last when end and p went whole; it returns how much of p went.
func (c *conn) frameLocked(st *stream, p []byte, end bool) int {
	sent := 0
	for {
		// An empty frame needs no window: END_STREAM goes whatever the
		// windows (a SETTINGS may have made them negative).
		n := max(min(len(p)-sent, int(st.sendWin), int(c.sendWin), int(c.peerMaxFrame)), 0)
		last := sent+n == len(p)
		if n == 0 && !(last && end) {
			return sent
		}
		var flags http2.Flags
		if last && end {
			flags = http2.FlagDataEndStream
			st.localDone = true
		}
		c.out = appendFrameHeader(c.out, n, http2.FrameData, flags, st.id)
		c.out = append(c.out, p[sent:sent+n]...)
		st.sendWin -= int32(n)
		c.sendWin -= int32(n)
		sent += n
		if last {
			return sent
		}
	}
}

// encodeFieldsLocked HPACK-encodes a header block of the forwarder's
// fields ("Name: value\r\n" lines, which its parser checked): :status
// (unless trailers), then each field under its lower-case name, less the
// connection-specific ones. The result is valid until the next call.
func (c *conn) encodeFieldsLocked(status int, fields []byte, trailers bool) []byte {
	b := c.hb[:0]
	if !trailers {
		b = appendStatus(b, status)
	}
	for len(fields) > 0 {
		line := fields
		if i := bytes.IndexByte(fields, '\n'); i >= 0 {
			line, fields = fields[:i], fields[i+1:]
		} else {
			fields = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			continue
		}
		name := c.lowerName(line[:i])
		switch name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			continue
		}
		b = appendField(b, name, bstr(edge.TrimOWS(line[i+1:])))
	}
	c.hb = b
	return b
}

// lowerName is name in lower case, valid until the next call.
func (c *conn) lowerName(name []byte) string {
	lower := true
	for _, b := range name {
		if 'A' <= b && b <= 'Z' {
			lower = false
			break
		}
	}
	if lower {
		return bstr(name)
	}
	c.lname = append(c.lname[:0], name...)
	for i, b := range c.lname {
		if 'A' <= b && b <= 'Z' {
			c.lname[i] = b + ('a' - 'A')
		}
	}
	return bstr(c.lname)
}

// bstr views b as a string without copying; for strings that do not
// outlive b's next change.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// queueLocked queues what the streams wrote and has it written at the end
// of the loop's wake-up (Flush), once for every stream that wrote in it;
// in the connection's own event, at its end.
func (w *lwire) queueLocked() {
	if !w.queueOutLocked() {
		return
	}
	if !w.inEvent && !w.deferred {
		w.deferred = true
		w.l.Defer(w)
	}
}

// Flush writes what the streams queued in this wake-up, then resumes
// those that waited and no longer do.
func (w *lwire) Flush() {
	w.send()
	w.wake()
}

// send writes what is queued (Flush's).
func (w *lwire) send() {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w.deferred = false
	w.sendLocked()
}

// wake resumes the streams that waited for the client (Held) and no
// longer do. On the loop, without c.mu.
func (w *lwire) wake() {
	ready := w.readyLocked()
	for _, ls := range ready {
		ls.Resume()
	}
	clear(ready)
	w.ready = ready[:0]
}

// readyLocked takes the waiters that no longer wait out of the list and
// returns them (wake's, under c.mu).
func (w *lwire) readyLocked() []LoopStream {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ready := w.ready[:0]
	w.ready = nil // a Resume that wakes again gets a slice of its own
	keep := w.waiters[:0]
	for _, st := range w.waiters {
		if c.heldLocked(st) {
			keep = append(keep, st)
			continue
		}
		st.lo.waiting = false
		if !st.lo.cancelled {
			ready = append(ready, st.lo.ls)
		}
	}
	clear(w.waiters[len(keep):])
	w.waiters = keep
	return ready
}
