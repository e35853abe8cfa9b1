package edge

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is a client connection whose Read hands on only bytes of requests it
// has validated: heads whole and checked, bodies as far as their framing is
// correct. It reads ahead of its caller, so several pipelined requests may
// be validated in one read.
//
// When it refuses a request it records why (Rejection) and, in place of that
// request's bytes, hands on a synthetic request
//
//	GET / HTTP/1.1\r\nHost: TOKEN\r\nConnection: close\r\n\r\n
//
// after which Read returns io.EOF. TOKEN (RejectToken) is random and made at
// that moment, so no client can forge it: a handler seeing r.Host equal to it
// answers with the recorded status, in order after any earlier pipelined
// responses. When part of the refused request was already handed on (a bad
// chunk deep in a body), there is no synthetic request: Read returns an
// *Error, which matches ErrMalformed, so the body read fails.
//
// After a WebSocket upgrade request (Head.WebSocket) and its body, and after
// an accepted HTTP/2 preface, the guard stops parsing and passes bytes through
// untouched, since what follows is no longer HTTP/1: the handler must close
// the connection when the upgrade does not happen.
//
// The guard needs nothing from the handler beyond the refusal: it already
// refuses what net/http would hide from it (an absolute-form target whose
// authority differs from Host, duplicate framing fields), and the proxy drops
// Upgrade values other than websocket itself. So there is no per-request
// record to consult.
//
// Write, deadlines and addresses pass straight through; Write and Read may
// run concurrently, and concurrent Reads are serialised.
type Conn struct {
	conn net.Conn
	lim  Limits

	aborting atomic.Bool // the read deadline is an abort, not a timeout

	rmu sync.Mutex // serialises Read and guards the fields up to pass
	// buf holds, in order: bytes already returned, the window buf[ro:wo] of
	// validated bytes not yet returned, and raw bytes buf[ps:end] not yet
	// validated (a partial head, or bytes after passthrough began).
	buf     []byte
	ro, wo  int
	ps, end int
	state   uint8
	sc      scanner // the head being read
	ck      chunked // the chunked body being read
	remain  int64   // Content-Length body bytes left
	upgrade bool    // pass through after the current message
	heads   int     // heads accepted
	// curOut is how many bytes of the current request sit at the end of the
	// window; curGone is whether any of its bytes were returned already, in
	// which case it can no longer be replaced by the synthetic request.
	curOut  int
	curGone bool
	tail    []byte // the rest of the synthetic request
	readErr error  // what Read returns in stBroken

	closing atomic.Bool

	mu      sync.Mutex // guards refusal and token
	refusal *Error
	token   string
}

const (
	stHead = iota
	stLength
	stChunked
	stPass
	stSynthetic // returning the synthetic request
	stEOF
	stBroken // returning readErr
)

const (
	initialBuf = 4096
	// Refused connections linger after the response: the write side is shut
	// and the client's unread bytes drained for a while, so that closing does
	// not send a reset that can destroy the response before the client reads
	// it (RFC 9112 §9.6; net/http's rstAvoidanceDelay is 500ms).
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 1 << 20
)

// NewConn returns c guarded with the limits lim.
func NewConn(c net.Conn, lim Limits) *Conn {
	return &Conn{conn: c, lim: lim.resolved()}
}

// NewListener returns a listener whose connections are guarded Conns.
func NewListener(l net.Listener, lim Limits) net.Listener {
	return &listener{Listener: l, lim: lim.resolved()}
}

type listener struct {
	net.Listener
	lim Limits
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, l.lim), nil
}

// Rejection returns the status and reason of the request the guard refused,
// if it refused one. It is set as soon as the guard sees the violation, which
// may be while earlier requests of the connection are still being served; use
// RejectToken to recognise the request that stands for it.
func (c *Conn) Rejection() (status int, reason string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refusal == nil {
		return 0, "", false
	}
	return c.refusal.Status, c.refusal.Reason, true
}

// RejectToken returns the Host of the synthetic request that stands for a
// refused request, or "" when there is none.
func (c *Conn) RejectToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// Read returns validated bytes of the connection; see Conn. Errors of the
// underlying connection are returned unchanged (net/http tells its own
// timeouts apart by their type).
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for empty := 0; ; {
		if c.ro < c.wo {
			n := copy(p, c.buf[c.ro:c.wo])
			if c.ro+n > c.wo-c.curOut {
				c.curGone = true
			}
			c.ro += n
			return n, nil
		}
		switch c.state {
		case stSynthetic:
			n := copy(p, c.tail)
			if c.tail = c.tail[n:]; len(c.tail) == 0 {
				c.state = stEOF
			}
			return n, nil
		case stEOF:
			return 0, io.EOF
		case stBroken:
			return 0, c.readErr
		}
		if c.state == stPass {
			if c.ps < c.end {
				n := copy(p, c.buf[c.ps:c.end])
				c.ps += n
				return n, nil
			}
			return c.conn.Read(p)
		}
		if left := c.bodyLeft(); left > 0 && c.ps == c.end {
			// Inside body data of known length nothing needs looking at:
			// read straight into p, but never past the data's end.
			if int64(len(p)) > left {
				p = p[:left]
			}
			n, err := c.conn.Read(p)
			if n > 0 {
				c.curGone = true
				c.bodyRead(n)
			}
			return n, err
		}
		n, err := c.fill()
		if c.ro < c.wo || c.state >= stSynthetic || c.state == stPass && c.ps < c.end {
			continue // something to return, even if err != nil
		}
		if err != nil && c.state == stHead && c.end > c.ps && isTimeout(err) && !c.aborting.Load() {
			// The client began a request and did not finish its head in
			// time (read_header, slowloris): answer 408 rather than let
			// net/http close without a word. An idle connection (no byte
			// of a new request) still just closes.
			c.refuse(errHeaderTimeout)
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			if empty++; empty >= 100 {
				return 0, io.ErrNoProgress
			}
		}
	}
}

func (c *Conn) bodyLeft() int64 {
	switch c.state {
	case stLength:
		return c.remain
	case stChunked:
		return c.ck.dataLeft()
	}
	return 0
}

func (c *Conn) bodyRead(n int) {
	if c.state == stChunked {
		c.ck.consumeData(n)
		return
	}
	if c.remain -= int64(n); c.remain == 0 {
		c.endMessage()
	}
}

// fill reads from the connection after the window was emptied and validates
// what it read.
func (c *Conn) fill() (int, error) {
	c.curOut = 0 // all of it was returned
	if c.ps == c.end {
		c.ps, c.end = 0, 0
	}
	if c.buf == nil {
		c.buf = make([]byte, min(initialBuf, c.maxBuf()))
	}
	if len(c.buf)-c.end < initialBuf/8 {
		// Little room left after a partial head: move it to the front, or
		// make room for a larger head (up to maxBuf, which a head refused
		// for its size never needs).
		if c.ps > 0 {
			c.end = copy(c.buf, c.buf[c.ps:c.end])
			c.ps = 0
		} else if len(c.buf) < c.maxBuf() {
			nb := make([]byte, min(2*len(c.buf), c.maxBuf()))
			c.end = copy(nb, c.buf[:c.end])
			c.buf = nb
		}
	}
	if c.end == len(c.buf) {
		// Unreachable: the scanner refuses a head before it fills maxBuf.
		// Refuse rather than loop.
		c.refuse(errHeadTooLarge)
		return 0, nil
	}
	c.ro, c.wo = c.ps, c.ps
	n, err := c.conn.Read(c.buf[c.end:])
	c.end += n
	c.process()
	return n, err
}

// maxBuf is the most a partial head (with its lead) can take before the
// scanner refuses it.
func (c *Conn) maxBuf() int { return c.lim.MaxHeaderBytes + maxLeadBytes + 64 }

// process validates raw bytes buf[ps:end], moving those that pass into the
// window, until it needs more bytes, stops validating, or refuses.
func (c *Conn) process() {
	for c.ps < c.end {
		switch c.state {
		case stHead:
			b := c.buf[c.ps:c.end]
			n, err := c.sc.scan(b, &c.lim)
			if err != nil {
				c.refuse(err)
				return
			}
			if n == 0 {
				return // the partial head stays raw
			}
			var h Head
			if err := parseHead(b[:n], c.sc.lead, &c.lim, &h); err != nil {
				c.refuse(err)
				return
			}
			c.heads++
			c.curOut, c.curGone = 0, false
			c.emit(c.ps+h.Lead, n-h.Lead)
			c.ps += n
			c.sc = scanner{}
			c.begin(&h)
		case stLength:
			k := int(min(int64(c.end-c.ps), c.remain))
			c.emit(c.ps, k)
			c.ps += k
			if c.remain -= int64(k); c.remain == 0 {
				c.endMessage()
			}
		case stChunked:
			n, done, err := c.ck.feed(c.buf[c.ps:c.end], &c.lim)
			c.emit(c.ps, n)
			c.ps += n
			if err != nil {
				c.refuse(err)
				return
			}
			if done {
				c.endMessage()
			}
		default: // stPass: Read returns the raw bytes as they are
			return
		}
	}
}

// emit appends the n validated bytes at buf[from:] to the window.
func (c *Conn) emit(from, n int) {
	if c.wo != from {
		copy(c.buf[c.wo:], c.buf[from:from+n])
	}
	c.wo += n
	c.curOut += n
}

// begin starts the body of the request whose head h was just accepted.
func (c *Conn) begin(h *Head) {
	c.upgrade = h.WebSocket
	switch {
	case h.Chunked:
		c.ck.reset()
		c.state = stChunked
	case h.ContentLength > 0:
		c.remain = h.ContentLength
		c.state = stLength
	default:
		c.endMessage()
	}
}

// endMessage is called at the end of a request's body.
func (c *Conn) endMessage() {
	c.curOut, c.curGone = 0, false
	if c.upgrade {
		c.state = stPass
		return
	}
	c.state = stHead
}

// refuse records e and ends validation: the refused request is replaced by
// the synthetic one if none of it was returned yet, else Read fails with e
// once the window is empty.
func (c *Conn) refuse(e *Error) {
	c.ps = c.end // the rest is never handed on
	token := ""
	if c.curGone {
		c.readErr = e
		c.state = stBroken
	} else {
		c.wo -= c.curOut
		c.curOut = 0
		var b [16]byte
		rand.Read(b[:]) // never fails (crypto/rand)
		token = hex.EncodeToString(b[:])
		c.tail = []byte("GET / HTTP/1.1\r\nHost: " + token + "\r\nConnection: close\r\n\r\n")
		c.state = stSynthetic
	}
	c.mu.Lock()
	c.refusal, c.token = e, token
	c.mu.Unlock()
}

// Close closes the connection; after a refusal it first lingers (see
// lingerTime). A second Close closes at once.
func (c *Conn) Close() error {
	if !c.closing.Swap(true) {
		if _, _, refused := c.Rejection(); refused {
			c.linger()
		}
	}
	return c.conn.Close()
}

func (c *Conn) linger() {
	if !c.rmu.TryLock() {
		return // a Read is using the connection
	}
	defer c.rmu.Unlock()
	cw, ok := c.conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if c.conn.SetReadDeadline(time.Now().Add(lingerTime)) != nil {
		return
	}
	if len(c.buf) == 0 {
		c.buf = make([]byte, initialBuf)
	}
	for total := 0; total < lingerBytes; {
		n, err := c.conn.Read(c.buf)
		total += n
		if err != nil {
			return
		}
	}
}

// CloseWrite shuts down the writing side when the underlying connection can
// (net/http uses it to end a response cleanly).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *Conn) Write(p []byte) (int, error) { return c.conn.Write(p) }

// ReadFrom lets net/http's response writer use the underlying connection's
// ReadFrom (sendfile, splice) as it would without the guard.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.conn}, r)
}

type writerOnly struct{ io.Writer }

func (c *Conn) LocalAddr() net.Addr  { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// NetConn returns the connection beneath the guard (a *tls.Conn on a TLS
// listener), for what it can tell about itself; reading it bypasses the
// guard.
func (c *Conn) NetConn() net.Conn { return c.conn }
func (c *Conn) SetDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.conn.SetDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.conn.SetReadDeadline(t)
}

// noteDeadline remembers whether the read deadline is net/http's way of
// aborting its background read (a time long ago, time.Unix(1, 0)) rather
// than a timeout: only a real timeout during a partial head earns a 408.
func (c *Conn) noteDeadline(t time.Time) {
	c.aborting.Store(!t.IsZero() && t.Before(time.Unix(1e9, 0)))
}
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
