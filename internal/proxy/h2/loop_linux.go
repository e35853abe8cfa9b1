package h2

// HTTP/2 connections on the event loops (package loop): the connection's
// frames are read and acted on by its loop, and what the server writes
// goes out as the socket takes it, with no goroutine reading or writing
// the connection. The protocol is the same server's (frames.go, the same
// state under c.mu); streams run on the connection's workers as before
// (handlers.go), whose writes never wait for the socket: they queue and
// write what it takes at once, and the loop writes the rest when the
// socket has room (back-pressure: a handler waits, as it waits for a write
// under way on a goroutine, once maxPending bytes are queued). The flood
// defences are h2guard's, given the bytes as the loop reads them
// (h2guard.NewScanner).
//
// A frame is read only once it is whole in the connection's buffer, and a
// header block once it is whole with its CONTINUATION frames, so that the
// Framer (which reads with io.ReadFull) never meets the end of what
// arrived in the middle of one. The buffer grows for a block up to the
// header list size and a frame more; a block larger than that ends the
// connection (GOAWAY ENHANCE_YOUR_CALM), where a goroutine's server
// answered 431 to a block that came in pieces.

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/net/http2"
)

// Socket is a client connection's socket on a loop (package h1's
// Loops.TakeSocket): non-blocking reads, and writes that queue until Send.
type Socket interface {
	Loop() *loop.Loop
	// Add registers the socket with h on its loop.
	Add(h loop.Handler) error
	// Read reads what arrived; an error with a WouldBlock method that
	// says true when nothing more has, io.EOF when the client closed.
	Read(p []byte) (int, error)
	// Queue queues p; Send writes what is queued as the socket takes it
	// (false: it takes no more until its next writable event).
	Queue(p []byte) error
	Queued() int
	Send() (bool, error)
	// Close closes the socket, on the loop.
	Close()
	RemoteAddr() net.Addr
	ConnectionState() (tls.ConnectionState, bool)
}

const (
	// loopBufSize is a connection's first read buffer: a frame of the
	// largest size sluice reads and its header.
	loopBufSize = maxFrameSize + 9
	// loopBufSlack is what the buffer may hold beyond a header list of
	// the largest size: the frames' headers and one frame more.
	loopBufSlack = 64 << 10
)

// loopBufs are the connections' read buffers of loopBufSize.
var loopBufs = sync.Pool{New: func() any { b := make([]byte, loopBufSize); return &b }}

// lwire is an HTTP/2 connection's I/O on a loop. Its fields are the loop's
// except those marked: under c.mu.
type lwire struct {
	c  *conn
	sk Socket
	l  *loop.Loop
	g  *h2guard.Conn // nil: no guard
	// buf[r:w] is what the client sent and the server has not read; nil
	// between events when empty (loopBufs).
	buf  []byte
	r, w int
	// preface is how many bytes of the client's preface are still to
	// check (0: checked).
	preface int
	// drop: the guard ended the connection; what the client sends is
	// discarded until it closes or the linger ends.
	drop bool
	// Under c.mu.
	inEvent bool // the loop is in the connection's event: it writes at its end
	blocked bool // the socket took not all: its next writable event goes on
	// readBy and writeBy are the read and write deadlines (zero: none),
	// checked by timer when it fires.
	readBy, writeBy time.Time
	timer           *time.Timer
	closed          bool
	ending          bool    // end once the event is over
	onEnd           func()  // once closed, after the handlers (LoopConn.Start; under c.mu)
	untrack         func()  // takes the connection out of the server's (Shutdown's)
	bufp            *[]byte // buf's pooled pointer (loopBufs)
	// Streams forwarded on the loop (loopstream_linux.go), under c.mu:
	// head is the buffer of their requests' heads; deferred: a Flush is
	// due at the end of the wake-up; waiters wait for the client (Held).
	head     []byte
	deferred bool
	waiters  []*stream
	ready    []LoopStream
}

// ServeLoop serves HTTP/2 on sk's loop until the connection ends, and
// returns once every handler it started has returned: NewLoopConn, then
// its Serve.
func (s *Server) ServeLoop(sk Socket, g *h2guard.Conn, o ServeConnOpts) {
	s.NewLoopConn(sk, g, o).Serve()
}

// LoopConn is an HTTP/2 connection to serve on a loop.
type LoopConn struct{ w *lwire }

// NewLoopConn readies sk to be served on its loop. g, which may be nil, is
// the connection's flood guard. o.UpgradeRequest is not supported here
// (serve such a connection with ServeConn).
func (s *Server) NewLoopConn(sk Socket, g *h2guard.Conn, o ServeConnOpts) *LoopConn {
	var st *tls.ConnectionState
	if cs, ok := sk.ConnectionState(); ok {
		st = &cs
	}
	w := &lwire{sk: sk, l: sk.Loop(), g: g}
	if !o.SawClientPreface {
		w.preface = len(http2.ClientPreface)
	}
	c := s.newConnFrom(sk.RemoteAddr().String(), st, w, o)
	c.lw, w.c = w, c
	c.mu.Lock()
	c.writeSettingsLocked() // first: a Shutdown's GOAWAY goes after it
	c.mu.Unlock()
	// Shutdown tells it from now on (a front that decides under its lock
	// whether it was too late for a Shutdown makes it here).
	w.untrack = s.track(c)
	return &LoopConn{w}
}

// Serve serves the connection until it ends, and returns once every
// handler it started has returned.
func (lc *LoopConn) Serve() {
	done := make(chan struct{})
	lc.Start(func() { close(done) })
	<-done
}

// Start serves the connection on its loop and returns at once: no
// goroutine waits for it. ended is called, on a goroutine of the
// connection's (or before Start returns, when Close came first), once it
// is over and every handler it started has returned.
func (lc *LoopConn) Start(ended func()) {
	w := lc.w
	c := w.c
	onEnd := func() {
		c.ended()
		w.untrack()
		ended()
	}
	c.mu.Lock()
	if w.closed { // by Close, before Start: ended runs here
		c.mu.Unlock()
		onEnd()
		return
	}
	w.onEnd = onEnd
	if !c.lingering { // a Shutdown since NewLoopConn set the linger's
		c.setReadDeadlineLocked(time.Now().Add(c.prefaceTimeout()))
	}
	if w.preface == 0 {
		c.startIdleLocked() // else once the preface is read, as serve does
	}
	c.mu.Unlock()
	if !w.l.PostTo(w, w.adopt) {
		w.end() // the loops are closing
	}
}

// Close ends the connection at once, from any goroutine (as closing its
// net.Conn ends one that ServeConn serves); before Serve, too.
func (lc *LoopConn) Close() {
	w := lc.w
	if !w.l.PostTo(w, w.endOnLoop) {
		w.end() // the loops are closing: nothing runs on them any more
	}
}

// adopt registers the connection on its loop and serves what it has.
func (w *lwire) adopt() {
	w.c.mu.Lock()
	closed := w.closed // by Close: the descriptor is no longer the socket's
	w.c.mu.Unlock()
	if closed {
		return
	}
	if err := w.sk.Add(w); err != nil {
		w.end()
		return
	}
	w.Event(loop.In | loop.Out)
}

// Event is the socket's readiness: what is queued goes out as it takes
// it, and what the client sent is read and acted on (at most maxEventReads
// reads: a connection that has more goes on after the loop's other work).
func (w *lwire) Event(ev loop.Events) {
	if !w.begin(ev) {
		return
	}
	if w.buf == nil {
		w.bufp = loopBufs.Get().(*[]byte)
		w.buf = *w.bufp
	}
	more := w.readAll()
	if w.r == w.w && w.buf != nil {
		// An idle connection holds no read buffer (one grown for a large
		// header block is not kept).
		if len(w.buf) == loopBufSize {
			loopBufs.Put(w.bufp)
		}
		w.buf, w.bufp, w.r, w.w = nil, nil, 0, 0
	}
	if w.finish() {
		w.endOnLoop()
		return
	}
	w.wake()
	if more && !w.l.PostTo(w, w.resume) {
		w.end()
	}
}

// begin starts an event: false when the connection is closed.
func (w *lwire) begin(ev loop.Events) bool {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.closed {
		return false
	}
	w.inEvent = true
	if ev&(loop.Out|loop.Hup|loop.Err) != 0 {
		w.blocked = false
	}
	return true
}

// finish ends an event: what it queued goes out. True when the
// connection is to end.
func (w *lwire) finish() bool {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w.inEvent = false
	w.flushLocked()
	return w.ending || c.dead
}

// resume goes on reading a connection whose event stopped at
// maxEventReads (an edge-triggered socket brings no new event for what it
// still holds).
func (w *lwire) resume() { w.Event(loop.In) }

// maxEventReads bounds the reads of one event, so that a client that
// keeps its socket full cannot hold its loop (and the other connections
// on it, and the timers posted to it).
const maxEventReads = 16

// Fail ends the connection after a panic on the loop.
func (w *lwire) Fail() { w.endOnLoop() }

// readAll reads what the socket has and acts on each whole frame; true
// when it stopped at maxEventReads with more perhaps to read.
func (w *lwire) readAll() bool {
	c := w.c
	for i := 0; !w.ending; i++ {
		if i == maxEventReads {
			return true
		}
		if w.w == len(w.buf) {
			w.grow()
		}
		n, err := w.read()
		if n > 0 {
			if w.drop {
				continue
			}
			if w.g != nil {
				if r := w.g.Scan(w.buf[w.w : w.w+n]); r != h2guard.None {
					w.flood(r)
					continue
				}
			}
			w.w += n
			w.frames()
		}
		if err != nil {
			if wb, ok := err.(interface{ WouldBlock() bool }); ok && wb.WouldBlock() {
				return false // nothing more for now
			}
			// The client closed, or the socket failed (or a handler's
			// write did: c.dead).
			if w.preface > 0 && err != net.ErrClosed {
				c.count("bad_preface")
			}
			w.ending = true
			return false
		}
	}
	return false
}

// read reads from the socket into the buffer, under c.mu: over TLS a read
// may write (crypto/tls answering a KeyUpdate).
func (w *lwire) read() (int, error) {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return 0, net.ErrClosed
	}
	return w.sk.Read(w.buf[w.w:])
}

// grow makes room in the buffer: what is unread moves to its start, or the
// buffer grows for a header block; one too large for the buffer's bound
// ends the connection (GOAWAY, then what the client sends is discarded).
func (w *lwire) grow() {
	if w.r > 0 {
		n := copy(w.buf, w.buf[w.r:w.w])
		w.r, w.w = 0, n
		return
	}
	limit := int(w.c.maxHeaderList) + loopBufSlack
	if len(w.buf) >= limit {
		c := w.c
		c.count("header_block_too_large")
		c.handleError(http2.ConnectionError(http2.ErrCodeEnhanceYourCalm))
		w.drop = true
		w.r, w.w = 0, 0
		return
	}
	b := make([]byte, min(2*len(w.buf), limit))
	copy(b, w.buf[:w.w])
	w.buf = b
}

// frames acts on the whole frames in the buffer.
func (w *lwire) frames() {
	c := w.c
	for !w.ending && !w.drop {
		if w.preface > 0 {
			got := w.buf[w.r:w.w]
			off := len(http2.ClientPreface) - w.preface
			k := min(len(got), w.preface)
			if string(got[:k]) != http2.ClientPreface[off:off+k] {
				c.count("bad_preface")
				w.ending = true
				return
			}
			w.r += k
			w.preface -= k
			if w.preface > 0 {
				break
			}
			c.mu.Lock()
			c.startIdleLocked()
			c.mu.Unlock()
			continue
		}
		if !w.whole() {
			break
		}
		f, err := c.readFrame()
		if err != nil {
			if !c.readError(err) {
				w.ending = true
				return
			}
			continue
		}
		if err := c.process(f); err != nil {
			w.ending = true
			return
		}
	}
	if w.drop || w.r == w.w {
		w.r, w.w = 0, 0
	}
}

// whole reports whether the buffer holds the next frame whole, and for a
// HEADERS frame that does not end its block, the CONTINUATION frames up to
// the one that does (or up to a frame that is not one: the Framer refuses
// it). A frame over the largest size needs only its header: the Framer
// refuses it.
func (w *lwire) whole() bool {
	b := w.buf[w.r:w.w]
	first := true
	for {
		if len(b) < 9 {
			return false
		}
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags := http2.FrameType(b[3]), http2.Flags(b[4])
		if n > maxFrameSize {
			return true
		}
		if len(b) < 9+n {
			return false
		}
		if !first && typ != http2.FrameContinuation {
			return true
		}
		if first && typ != http2.FrameHeaders && typ != http2.FramePushPromise {
			return true
		}
		if flags&http2.FlagHeadersEndHeaders != 0 { // the same bit for the three
			return true
		}
		b = b[9+n:]
		first = false
	}
}

// Read gives the Framer the buffer's bytes (whole frames: see whole).
func (w *lwire) Read(p []byte) (int, error) {
	if w.r == w.w {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, w.buf[w.r:w.w])
	w.r += n
	return n, nil
}

// flood ends a connection whose client exceeded a limit of the guard's:
// GOAWAY with ENHANCE_YOUR_CALM, and what it sends is discarded until it
// closes or the linger ends.
func (w *lwire) flood(r h2guard.Reason) {
	c := w.c
	w.drop = true
	w.r, w.w = 0, 0
	w.g.Closed(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAwayLocked(http2.ErrCodeEnhanceYourCalm, h2guard.GoAwayDebug(r))
	c.lingerLocked()
	c.flushLocked()
}

// end closes the connection: its handlers' writes and reads fail from now
// on, and once they have returned, a goroutine of the connection's says
// it is over (onEnd).
func (w *lwire) end() {
	if onEnd := w.close(); onEnd != nil { // nil: Close came before Start, which sees it
		go onEnd() // waits for the handlers, which the loop must not
	}
}

// endOnLoop is end on the loop: the streams it forwards that wait for the
// client go on too (their writes fail from now on, or they had ended
// whole in the connection's last event), so that none waits for good.
func (w *lwire) endOnLoop() {
	w.end()
	w.wake()
}

// close closes the socket, once; it returns what says the connection is
// over, the first time.
func (w *lwire) close() func() {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.closed {
		return nil
	}
	c.dieLocked(errClientGone)
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.buf = nil
	w.sk.Close()
	return w.onEnd
}
