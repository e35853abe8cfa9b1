package h2

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Server serves HTTP/2 connections. Set its fields before the first
// ServeConn; one Server serves all the connections of a listener
// generation.
type Server struct {
	// MaxConcurrentStreams bounds the handlers running at once per
	// connection (SETTINGS_MAX_CONCURRENT_STREAMS); 0 means 250.
	MaxConcurrentStreams uint32
	// StreamWindow and ConnWindow are how many request body bytes a client
	// may send on one stream and on the connection before handlers read
	// them; 0 means 1 MiB and 4 MiB.
	StreamWindow, ConnWindow int32
	// MaxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE; a request over
	// it gets 431. 0 means 1 MiB.
	MaxHeaderListSize uint32
	// PrefaceTimeout bounds the wait for the client's preface and first
	// SETTINGS; 0 means 10 s.
	PrefaceTimeout time.Duration
	// IdleTimeout closes (GOAWAY) a connection without streams for that
	// long; 0 means never.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write to the client; 0 means none.
	WriteTimeout time.Duration
	// CountError is told the name of each protocol error a client caused;
	// nil counts nothing.
	CountError func(name string)
	// Logger gets the handlers' panics; nil discards them.
	Logger *slog.Logger
	// Forward, when set, forwards on the loop itself the requests of
	// connections served on event loops that it can (loopstream_linux.go).
	// Set it before the server serves.
	Forward LoopForwarder

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// ServeConnOpts are the per-connection arguments of ServeConn.
type ServeConnOpts struct {
	Handler http.Handler
	// SawClientPreface: the caller has read the client's preface.
	SawClientPreface bool
	// UpgradeRequest is the HTTP/1.1 request that switched the connection
	// to HTTP/2 ("Upgrade: h2c"): it is stream 1, already ended by the
	// client. Settings is its HTTP2-Settings payload (decoded).
	UpgradeRequest *http.Request
	Settings       []byte
}

// Defaults of the Server's fields.
const (
	defaultMaxStreams     = 250
	defaultStreamWindow   = 1 << 20
	defaultConnWindow     = 4 << 20
	defaultMaxHeaderList  = 1 << 20
	defaultPrefaceTimeout = 10 * time.Second

	// initialWindow is RFC 9113's initial window (§6.9.2).
	initialWindow = 65535
	// maxFrameSize is the largest frame sluice reads (its
	// SETTINGS_MAX_FRAME_SIZE, the protocol's minimum).
	maxFrameSize = 16384
	// lingerTimeout bounds how long a connection that was sent GOAWAY
	// keeps reading (and discarding) what the client still sends, so that
	// no TCP reset destroys the GOAWAY; x/net's goAwayTimeout.
	lingerTimeout = time.Second
	// maxPending bounds the frames queued while a write is in progress
	// before a handler waits for it; maxControlPending closes a connection
	// whose control frames (answers to the client's frames) pile up
	// because it does not read.
	maxPending        = 64 << 10
	maxControlPending = 1 << 20
	// keepSpare is the largest write buffer a connection keeps between
	// writes (an idle connection keeps at most that).
	keepSpare = 32 << 10
)

// Shutdown sends GOAWAY on every connection: each ends once its streams
// have; streams that arrive later are ignored. Connections served after
// Shutdown are not told by it: call it again.
func (s *Server) Shutdown() {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		c.goAwayLocked(http2.ErrCodeNo, "")
		c.kickLocked()
		c.mu.Unlock()
	}
}

// ServeConn serves HTTP/2 on nc until the connection ends, and closes it.
// It returns once every handler it started has returned.
func (s *Server) ServeConn(nc net.Conn, o ServeConnOpts) {
	c := s.newConn(nc, o)
	defer s.track(c)()
	c.serve(o)
}

// track adds c to the connections Shutdown tells; the function it returns
// takes it out.
func (s *Server) track(c *conn) func() {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

func (s *Server) newConn(nc net.Conn, o ServeConnOpts) *conn {
	var st *tls.ConnectionState
	if cs, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		cst := cs.ConnectionState()
		st = &cst
	}
	c := s.newConnFrom(nc.RemoteAddr().String(), st, nc, o)
	c.nc = nc
	return c
}

// newConnFrom makes a connection whose frames are read from src.
func (s *Server) newConnFrom(remoteAddr string, st *tls.ConnectionState, src io.Reader, o ServeConnOpts) *conn {
	c := &conn{srv: s, handler: o.Handler, remoteAddr: remoteAddr, tls: st,
		streams: map[uint32]*stream{}, sendWin: initialWindow, peerWindow: initialWindow,
		peerMaxFrame: maxFrameSize, sizeUpdate: true}
	c.maxStreams = s.MaxConcurrentStreams
	if c.maxStreams == 0 {
		c.maxStreams = defaultMaxStreams
	}
	c.streamWindow, c.connWindow = s.StreamWindow, s.ConnWindow
	if c.streamWindow <= 0 {
		c.streamWindow = defaultStreamWindow
	}
	if c.connWindow <= 0 {
		c.connWindow = defaultConnWindow
	}
	// Never below the protocol's initial window: a client may use that
	// much before it has read sluice's SETTINGS.
	c.streamWindow, c.connWindow = max(c.streamWindow, initialWindow), max(c.connWindow, initialWindow)
	c.recvWin = c.connWindow
	c.maxHeaderList = s.MaxHeaderListSize
	if c.maxHeaderList == 0 {
		c.maxHeaderList = defaultMaxHeaderList
	}
	c.drained.L = &c.mu
	c.jobs = make(chan job, maxIdleWorkers)
	// No dynamic table: each header block stands alone (hpack.go), so
	// responses can be encoded as their handlers produce them and queued
	// in any order (HPACK's dynamic table would tie the two orders
	// together). The static table and Huffman coding still apply.
	c.fr = http2.NewFramer(io.Discard, src)
	c.fr.MaxHeaderListSize = c.maxHeaderList
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.SetReuseFrames()
	c.meta = newMetaReader(c.fr, c.maxHeaderList)
	return c
}

// conn is one HTTP/2 connection. Its goroutine (serve) reads every frame
// and acts on it; handlers run on the connection's workers, one stream at
// a time each (handlers.go). Everything shared between them is under mu.
type conn struct {
	srv        *Server
	nc         net.Conn      // nil on a loop (lw)
	lw         *lwire        // the connection's I/O on an event loop (nil: nc, serve's goroutine)
	fr         *http2.Framer // reads only, on the serve goroutine
	meta       *metaReader   // decodes header blocks, on the serve goroutine
	handler    http.Handler
	remoteAddr string
	tls        *tls.ConnectionState
	wg         sync.WaitGroup // workers (see work)
	// jobs hands streams to idle workers; it holds one per idle worker.
	jobs chan job

	// Fixed at the start.
	maxStreams    uint32
	streamWindow  int32
	connWindow    int32
	maxHeaderList uint32

	// Owned by the serve goroutine.
	sawSettings bool

	mu      sync.Mutex
	drained sync.Cond // a write ended (flushing false), or the connection died
	// idleWorkers wait on jobs; workerTimer dismisses them once the
	// connection has had no stream for workerLinger (armed: it will run).
	idleWorkers int
	workerTimer *time.Timer
	armed       bool
	out         []byte // frames queued for the client
	spare       []byte
	// flushing: a goroutine is writing (it writes what is queued until
	// nothing is).
	flushing bool
	wdl      time.Time // the write deadline set, when WriteTimeout is
	dead     bool      // closed: writes fail, streams are reset
	deadErr  error
	lname    []byte // a field name lowered (encodeFieldsLocked)
	hb       []byte // the header block being encoded (hpack.go)
	// sizeUpdate: the next header block written starts with a dynamic
	// table size update to 0 (hpack.go): the connection's first, and the
	// first after the client set SETTINGS_HEADER_TABLE_SIZE.
	sizeUpdate bool
	// lower remembers the HTTP/2 names of the connection's uncommon
	// response keys (lowerKeyLocked), at most maxLowerKeys of them.
	lower   map[string]string
	streams map[uint32]*stream
	maxID   uint32 // the highest stream the client opened
	// sendWin is the connection's window for sluice's DATA; peerWindow
	// and peerMaxFrame are the client's SETTINGS.
	sendWin      int32
	peerWindow   int32
	peerMaxFrame uint32
	// recvWin is what the client may still send on the connection;
	// unacked is what handlers have read (or sluice discarded) and not yet
	// given back with WINDOW_UPDATE.
	recvWin int32
	unacked int32
	// active counts the streams open or half-closed (settleLocked).
	active int
	// resets are the last streams sluice reset: frames the client had in
	// flight for them are ignored, not answered (RFC 9113 §5.1).
	resets  [8]uint32
	resetAt int
	// goAway: GOAWAY was sent with goAwayCode; new streams are ignored.
	goAway     bool
	goAwayCode http2.ErrCode
	lingering  bool
	idleSince  time.Time // when the last stream ended (zero: streams open)
	idleTimer  *time.Timer
}

var errClientGone = errors.New("http2: client connection lost")

// serve runs the connection: preface, SETTINGS, then one frame at a time.
func (c *conn) serve(o ServeConnOpts) {
	defer func() {
		c.mu.Lock()
		c.dieLocked(errClientGone)
		c.mu.Unlock()
		c.nc.Close()
		c.ended()
	}()
	c.nc.SetReadDeadline(time.Now().Add(c.prefaceTimeout()))
	c.mu.Lock()
	c.writeSettingsLocked() // the server's preface goes out at once
	c.flushLocked()
	c.mu.Unlock()
	if !o.SawClientPreface {
		var buf [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(c.nc, buf[:]); err != nil || string(buf[:]) != http2.ClientPreface {
			c.count("bad_preface")
			return
		}
	}
	if o.UpgradeRequest != nil {
		if err := c.upgrade(o.UpgradeRequest, o.Settings); err != nil {
			c.connError(err)
			return
		}
	}
	c.mu.Lock()
	c.startIdleLocked()
	c.mu.Unlock()
	for {
		f, err := c.readFrame()
		if err != nil {
			if !c.readError(err) {
				return
			}
			continue
		}
		if err := c.process(f); err != nil {
			return
		}
	}
}

// prefaceTimeout bounds the wait for the client's preface and first
// SETTINGS.
func (c *conn) prefaceTimeout() time.Duration {
	if pt := c.srv.PrefaceTimeout; pt > 0 {
		return pt
	}
	return defaultPrefaceTimeout
}

// startIdleLocked starts the idle timer, if there is an IdleTimeout.
func (c *conn) startIdleLocked() {
	if d := c.srv.IdleTimeout; d > 0 {
		if len(c.streams) == 0 {
			c.idleSince = time.Now()
		}
		c.idleTimer = time.AfterFunc(d, c.onIdle)
	}
}

// ended waits for the connection's goroutines once it is closed, and
// stops its timers.
func (c *conn) ended() {
	c.wg.Wait()
	c.mu.Lock()
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.workerTimer != nil {
		c.workerTimer.Stop()
	}
	c.mu.Unlock()
}

// setReadDeadlineLocked bounds the wait for what the client sends next
// (zero: no bound); past it the connection ends.
func (c *conn) setReadDeadlineLocked(t time.Time) {
	if c.lw != nil {
		c.lw.setReadDeadlineLocked(t)
		return
	}
	c.nc.SetReadDeadline(t)
}

// readFrame reads the next frame; a header block comes whole, as a
// MetaHeadersFrame.
func (c *conn) readFrame() (http2.Frame, error) {
	f, err := c.fr.ReadFrame()
	if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
		mh, err := c.meta.read(hf)
		if err != nil {
			return nil, err
		}
		return mh, nil
	}
	return f, err
}

// readError handles an error from ReadFrame; it reports whether to read on.
func (c *conn) readError(err error) bool {
	switch err := err.(type) {
	case http2.StreamError:
		// A malformed header block: the HPACK state is intact.
		c.count("malformed_header_block")
		c.mu.Lock()
		if err.StreamID > c.maxID && err.StreamID%2 == 1 {
			c.maxID = err.StreamID
		}
		c.mu.Unlock()
		return c.handleError(err)
	case http2.ConnectionError:
		c.count("bad_frame")
		return c.handleError(err)
	}
	if err == http2.ErrFrameTooLarge {
		c.count("frame_too_large")
		return c.handleError(http2.ConnectionError(http2.ErrCodeFrameSize))
	}
	return false
}

// handleError answers a protocol error; it reports whether to read on.
func (c *conn) handleError(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handleErrorLocked(err)
}

// handleErrorLocked is handleError with c.mu held: a stream error resets
// the stream in the same critical section that found it, so that its
// handler cannot end the stream in between.
func (c *conn) handleErrorLocked(err error) bool {
	switch err := err.(type) {
	case http2.StreamError:
		if st := c.streams[err.StreamID]; st != nil && !st.reset {
			c.resetLocked(st, err.Code, err)
		} else {
			c.writeRSTLocked(err.StreamID, err.Code)
		}
		c.flushLocked()
		return true
	case http2.ConnectionError:
		c.goAwayLocked(http2.ErrCode(err), "")
		c.flushLocked()
		return true // read on until the client closes or lingerTimeout
	}
	return false
}

// connError sends GOAWAY with the error's code (PROTOCOL_ERROR for one
// that is not a ConnectionError) and lingers.
func (c *conn) connError(err error) {
	var ce http2.ConnectionError
	if !errors.As(err, &ce) {
		ce = http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.handleError(ce)
}

func (c *conn) count(name string) {
	if f := c.srv.CountError; f != nil {
		f(name)
	}
}

// streamErr counts a stream error and returns it.
func (c *conn) streamErr(name string, id uint32, code http2.ErrCode) error {
	c.count(name)
	return http2.StreamError{StreamID: id, Code: code}
}

func (c *conn) connErr(name string, code http2.ErrCode) error {
	c.count(name)
	return http2.ConnectionError(code)
}

// resetLocked ends st with a stream error: RST_STREAM, and the handler's
// reads and writes fail from now on.
func (c *conn) resetLocked(st *stream, code http2.ErrCode, err error) {
	if st.reset {
		return
	}
	st.reset = true
	c.settleLocked(st)
	c.writeRSTLocked(st.id, code)
	st.abortLocked(err)
	if st.lo != nil {
		c.closeStreamLocked(st) // no handler will
	}
}

// kickLocked has what is queued written on a goroutine of its own, for
// callers that must not wait for a client that does not read (Shutdown,
// the idle timer). The goroutine is one of the connection's: serve waits
// for it.
func (c *conn) kickLocked() {
	if c.dead || c.flushing || len(c.out) == 0 {
		return
	}
	if c.lw != nil {
		c.flushLocked() // a write on a loop does not wait
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.mu.Lock()
		c.flushLocked()
		c.mu.Unlock()
	}()
}

// goAwayLocked queues GOAWAY once (an error after a graceful one is sent
// too); no stream after maxID is served. A connection with no stream left
// then lingers and closes.
func (c *conn) goAwayLocked(code http2.ErrCode, debug string) {
	if c.dead || c.goAway && (c.goAwayCode != http2.ErrCodeNo || code == http2.ErrCodeNo) {
		return
	}
	c.goAway, c.goAwayCode = true, code
	c.out = appendFrameHeader(c.out, 8+len(debug), http2.FrameGoAway, 0, 0)
	c.out = append(c.out, byte(c.maxID>>24), byte(c.maxID>>16), byte(c.maxID>>8), byte(c.maxID),
		byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
	c.out = append(c.out, debug...)
	if code != http2.ErrCodeNo {
		for _, st := range c.streams {
			st.abortLocked(errClientGone)
		}
	}
	if code != http2.ErrCodeNo || len(c.streams) == 0 {
		c.lingerLocked()
	}
}

// lingerLocked ends the connection after GOAWAY went out: the serve
// goroutine reads on, discarding, until the client closes or
// lingerTimeout passes.
func (c *conn) lingerLocked() {
	if c.lingering {
		return
	}
	c.lingering = true
	c.setReadDeadlineLocked(time.Now().Add(lingerTimeout))
}

// onIdle runs from the idle timer: a connection without streams for
// IdleTimeout is sent GOAWAY; otherwise the timer waits again.
func (c *conn) onIdle() {
	d := c.srv.IdleTimeout
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.lingering {
		return
	}
	if !c.idleSince.IsZero() {
		if left := d - time.Since(c.idleSince); left <= 0 {
			c.goAwayLocked(http2.ErrCodeNo, "")
			c.kickLocked()
			return
		} else {
			c.idleTimer.Reset(left)
			return
		}
	}
	c.idleTimer.Reset(d)
}

// dieLocked marks the connection closed: handlers waiting to write or read
// give up.
func (c *conn) dieLocked(err error) {
	if c.dead {
		return
	}
	c.dead, c.deadErr = true, err
	for _, st := range c.streams {
		st.abortLocked(err)
	}
	c.dismissLocked()
	c.drained.Broadcast()
}
