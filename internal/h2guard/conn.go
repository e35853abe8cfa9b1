package h2guard

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures the Conns made by New. One Config may be shared by all
// the connections of a listener; New reads it once.
type Config struct {
	Limits Limits
	// Stats, when not nil, counts the connections wrapped and why they were
	// closed. Share one Stats between the Conns of a listener.
	Stats *Stats
	// OnClose, when not nil, is called once, on the goroutine calling Read,
	// after the Conn closed its connection for r (never for an ordinary
	// close). Keep it short: it runs on the connection's read path.
	OnClose func(c *Conn, r Reason)
	// PrefaceRead tells that the caller has already consumed the 24-byte
	// client preface (http2.ServeConnOpts.SawClientPreface): the first byte
	// read is a frame header's.
	PrefaceRead bool
	// Unbatched passes the server's writes straight to the connection: for
	// a server that gathers its frames into one write itself (package
	// h2's). Without it they are batched (see batchConn).
	Unbatched bool
}

// HTTP/2 wire constants (RFC 9113 §4.1, §6).
const (
	clientPreface  = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	prefaceLen     = len(clientPreface)
	frameHeaderLen = 9

	fData           = 0x0
	fHeaders        = 0x1
	fPriority       = 0x2
	fRSTStream      = 0x3
	fSettings       = 0x4
	fPushPromise    = 0x5
	fPing           = 0x6
	fGoAway         = 0x7
	fWindowUpdate   = 0x8
	fContinuation   = 0x9
	fPriorityUpdate = 0x10 // RFC 9218

	flagAck        = 0x1 // SETTINGS, PING
	flagEndStream  = 0x1 // DATA, HEADERS
	flagEndHeaders = 0x4 // HEADERS, CONTINUATION
	flagPadded     = 0x8 // DATA, HEADERS
	flagPriority   = 0x20

	errCodeEnhanceYourCalm = 0xb

	// goAwayTimeout bounds the wait for, and the write of, the GOAWAY sent
	// before closing. It must outlast a busy machine's scheduling delay of
	// the server's writer (which finishes a frame it began) and of a
	// client that is slow to read; a shorter one closed without a GOAWAY
	// on a loaded machine.
	goAwayTimeout = time.Second
	// lingerTimeout bounds the delayed close after a GOAWAY (Envoy's
	// delayed_close_timeout default).
	lingerTimeout = time.Second
)

type frameHeader struct {
	length uint32
	sid    uint32
	typ    uint8
	flags  uint8
}

// Conn is a net.Conn that counts the HTTP/2 frames a client sends and closes
// the connection when the client exceeds its Limits. Put it between the
// client's connection (after TLS) and http2.Server.ServeConn. Read passes the
// bytes through unchanged; Write passes the server's bytes through and
// counts the DATA and HEADERS frames in them (the allowances for PING and
// WINDOW_UPDATE depend on them).
//
// When a limit is exceeded, the Conn writes a GOAWAY (ENHANCE_YOUR_CALM,
// the reason as debug data) as soon as the server's frame stream is at a
// frame boundary with no write in progress (waiting up to 1 s for it),
// shuts the write side and discards what the client still sends until it
// closes (up to 1 s, against the TCP RST that would destroy the GOAWAY),
// closes the connection, and returns an *Error from that Read and every
// later one.
//
// Read must not be called from two goroutines at once (http2.Server reads
// from one); the other methods are safe for concurrent use.
type Conn struct {
	net.Conn

	lim     resolved
	stats   *Stats
	onClose func(*Conn, Reason)
	born    time.Time
	reason  atomic.Uint32

	// Read side, owned by the goroutine calling Read.
	err     *Error
	rb      readBuf
	preface int8 // preface bytes still to check; -1: not HTTP/2, pass through
	hdrN    uint8
	needPad bool
	hdr     [frameHeaderLen]byte
	skip    uint32      // payload bytes still to pass
	pend    frameHeader // padded frame waiting for its Pad Length byte
	nowOK   bool
	nowNS   int64 // since born, read once per Read call when needed
	rn      int64 // bytes scanned before this Read
	failAt  int64 // offset just past the byte that decided the close

	maxSID     uint32   // highest stream the client opened
	streams    int64    // streams the client opened
	resets     int64    // RST_STREAM frames the client sent
	counted    [2]int64 // streams and resets already in stats
	emptyRun   int
	inBlock    bool
	blockConts int
	blockBytes int64
	tat        [numKinds]int64 // GCRA theoretical arrival times, ns since born
	prioCount  int64
	wuCount    int64
	outAtPing  uint64

	marks     [4]uint32 // maxSID at markAt, markAt-q, markAt-2q, markAt-3q
	markAt    int64
	winStart  int64
	winResets int
	premature int64

	// Write side, under wmu.
	wmu        sync.Mutex
	whdrN      uint8
	whdr       [frameHeaderLen]byte
	wskip      uint32
	outData    atomic.Uint64
	outHeaders atomic.Uint64
	goaway     atomic.Bool
	lingering  atomic.Bool // fail owns the close (close.go)
}

// TLSConn is the Conn New returns for a connection with a ConnectionState
// method (a *tls.Conn): it has that method too, so http2.Server sees the TLS
// state (Request.TLS, and RFC 9113 §9.2's version and cipher checks).
type TLSConn struct {
	Conn
	cs connectionStater
}

type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

// ConnectionState returns the wrapped connection's TLS state.
func (c *TLSConn) ConnectionState() tls.ConnectionState { return c.cs.ConnectionState() }

// New wraps nc, which must be at the start of the client's HTTP/2 stream
// (the preface is the next thing read, unless cfg.PrefaceRead) and of the
// server's (its SETTINGS frame is the next thing written). It returns a
// *Conn, or a *TLSConn when nc has a ConnectionState method. cfg may be nil
// (all defaults).
func New(nc net.Conn, cfg *Config) net.Conn {
	if cfg == nil {
		cfg = &Config{}
	}
	if cs, ok := nc.(connectionStater); ok {
		t := &TLSConn{cs: cs}
		t.Conn.init(nc, cfg)
		return t
	}
	c := new(Conn)
	c.init(nc, cfg)
	c.rb.on = true
	return c
}

// From returns the *Conn of a connection returned by New, or nil.
func From(nc net.Conn) *Conn {
	switch c := nc.(type) {
	case *Conn:
		return c
	case *TLSConn:
		return &c.Conn
	}
	return nil
}

func (c *Conn) init(nc net.Conn, cfg *Config) {
	if cfg.Unbatched {
		c.Conn = nc
	} else {
		c.Conn = newBatchConn(nc)
	}
	c.count(cfg)
}

// count readies the counting of a connection's frames by cfg's limits.
func (c *Conn) count(cfg *Config) {
	c.lim = cfg.Limits.resolve()
	c.stats = cfg.Stats
	c.onClose = cfg.OnClose
	c.born = time.Now()
	if !cfg.PrefaceRead {
		c.preface = int8(prefaceLen)
	}
	if c.stats != nil {
		c.stats.Conns.Add(1)
	}
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Reason returns why the Conn closed its connection, or None.
func (c *Conn) Reason() Reason { return Reason(c.reason.Load()) }

// Read reads from the connection and counts the frames read. It returns an
// *Error, having closed the connection, when the client exceeds a limit.
func (c *Conn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.read(p)
	if n > 0 && c.preface >= 0 {
		c.nowOK = false
		if r := c.scan(p[:n]); r != None {
			c.fail(r)
			return 0, c.err
		}
		c.rn += int64(n)
	}
	return n, err
}

// Write writes to the connection and counts the server's DATA and HEADERS
// frames.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.scanOut(p[:n])
	}
	c.wmu.Unlock()
	return n, err
}

func (c *Conn) now() int64 {
	if !c.nowOK {
		c.nowNS = int64(time.Since(c.born))
		c.nowOK = true
	}
	return c.nowNS
}

func parseHeader(h []byte) frameHeader {
	return frameHeader{
		length: uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]),
		typ:    h[3],
		flags:  h[4],
		sid:    binary.BigEndian.Uint32(h[5:9]) & (1<<31 - 1),
	}
}

// scan counts the frames in b, the next bytes of the client's stream,
// and adds the streams and resets among them to the Stats.
func (c *Conn) scan(b []byte) Reason {
	r := c.scanFrames(b)
	if c.stats != nil {
		if d := c.streams - c.counted[0]; d > 0 {
			c.stats.Streams.Add(uint64(d))
		}
		if d := c.resets - c.counted[1]; d > 0 {
			c.stats.ResetsReceived.Add(uint64(d))
		}
		c.counted = [2]int64{c.streams, c.resets}
	}
	return r
}

func (c *Conn) scanFrames(b []byte) Reason {
	n := len(b)
	for len(b) > 0 {
		switch {
		case c.preface > 0:
			off := prefaceLen - int(c.preface)
			k := min(len(b), int(c.preface))
			if string(b[:k]) != clientPreface[off:off+k] {
				// Not HTTP/2: the server answers that itself.
				c.preface = -1
				return None
			}
			c.preface -= int8(k)
			b = b[k:]
		case c.skip > 0:
			if c.needPad {
				c.needPad = false
				if r := c.frame(c.pend, 1+uint32(b[0])); r != None {
					c.failAt = c.rn + int64(n-len(b)) + 1
					return r
				}
			}
			k := c.skip
			if uint32(len(b)) < k {
				k = uint32(len(b))
			}
			c.skip -= k
			b = b[k:]
		default:
			var h []byte
			if c.hdrN == 0 && len(b) >= frameHeaderLen {
				h, b = b[:frameHeaderLen], b[frameHeaderLen:]
			} else {
				k := copy(c.hdr[c.hdrN:], b)
				c.hdrN += uint8(k)
				b = b[k:]
				if c.hdrN < frameHeaderLen {
					return None
				}
				c.hdrN = 0
				h = c.hdr[:]
			}
			f := parseHeader(h)
			c.skip = f.length
			if f.flags&flagPadded != 0 && (f.typ == fData || f.typ == fHeaders) && f.length > 0 {
				// Its emptiness depends on the Pad Length byte.
				c.needPad = true
				c.pend = f
				continue
			}
			if r := c.frame(f, 0); r != None {
				c.failAt = c.rn + int64(n-len(b))
				return r
			}
		}
	}
	return None
}

// payload is a frame's content: its length without padding (pad, the Pad
// Length byte included) and priority fields.
func payload(length, pad, prio uint32) uint32 {
	if pad+prio >= length {
		return 0
	}
	return length - pad - prio
}

// frame applies the limits to one frame; pad is its padding overhead.
func (c *Conn) frame(f frameHeader, pad uint32) Reason {
	if c.inBlock && f.typ != fContinuation {
		c.inBlock = false // a protocol error x/net reports itself
	}
	switch f.typ {
	case fData:
		return c.empty(payload(f.length, pad, 0) == 0 && f.flags&flagEndStream == 0)
	case fHeaders:
		var prio uint32
		if f.flags&flagPriority != 0 {
			prio = 5
		}
		n := payload(f.length, pad, prio)
		if f.sid&1 == 1 && f.sid > c.maxSID {
			c.open(f.sid)
		}
		c.inBlock = f.flags&flagEndHeaders == 0
		c.blockConts = 0
		c.blockBytes = int64(n)
		if c.lim.maxBlock >= 0 && c.blockBytes > c.lim.maxBlock {
			return HeaderBlockTooLarge
		}
		return c.empty(n == 0 && f.flags&flagEndStream == 0)
	case fContinuation:
		if c.inBlock {
			c.inBlock = f.flags&flagEndHeaders == 0
			c.blockConts++
			c.blockBytes += int64(f.length)
			if c.lim.maxConts >= 0 && c.blockConts > c.lim.maxConts {
				return ContinuationFlood
			}
			if c.lim.maxBlock >= 0 && c.blockBytes > c.lim.maxBlock {
				return HeaderBlockTooLarge
			}
		}
		return c.empty(f.length == 0) // END_STREAM is not a CONTINUATION flag
	case fPriority, fPriorityUpdate:
		c.prioCount++
		if c.lim.prioPerStream >= 0 && c.prioCount <= c.lim.prioPerStream*(1+c.streams) {
			return None
		}
		return c.take(kPriority, PriorityFlood)
	case fRSTStream:
		c.resets++
		return c.reset(f.sid)
	case fSettings:
		if f.flags&flagAck != 0 {
			return c.take(kOther, OtherFlood)
		}
		return c.take(kSettings, SettingsFlood)
	case fPing:
		if f.flags&flagAck != 0 {
			return c.take(kOther, OtherFlood)
		}
		if out := c.outData.Load() + c.outHeaders.Load(); out != c.outAtPing {
			c.outAtPing = out // the server sent data since the last PING
			return None
		}
		return c.take(kPing, PingFlood)
	case fWindowUpdate:
		c.wuCount++
		if c.lim.wuPerData >= 0 && c.wuCount <= 1+2*(c.streams+c.lim.wuPerData*int64(c.outData.Load())) {
			return None
		}
		return c.take(kWindowUpdate, WindowUpdateFlood)
	default: // GOAWAY, PUSH_PROMISE, unknown types
		return c.take(kOther, OtherFlood)
	}
}

func (c *Conn) empty(isEmpty bool) Reason {
	if !isEmpty {
		c.emptyRun = 0
		return None
	}
	c.emptyRun++
	if c.lim.maxEmpty >= 0 && c.emptyRun > c.lim.maxEmpty {
		return EmptyFrames
	}
	return None
}

// take takes a token of bucket k (GCRA), or returns r when there is none.
func (c *Conn) take(k int, r Reason) Reason {
	iv := c.lim.interval[k]
	if iv < 0 {
		return None
	}
	now := c.now()
	tat := max(c.tat[k], now)
	if tat-now > c.lim.tau[k] {
		return r
	}
	c.tat[k] = tat + iv
	return None
}

func (c *Conn) open(sid uint32) {
	if c.lim.prematureQ > 0 {
		c.roll(c.now())
	}
	c.maxSID = sid
	c.streams++
}

// roll advances the marks to now. marks[i] is the highest stream opened by
// markAt-i×q; every stream open and reset rolls first, so maxSID has not
// changed since the last roll.
func (c *Conn) roll(now int64) {
	q := c.lim.prematureQ
	steps := (now - c.markAt) / q
	if steps <= 0 {
		return
	}
	c.markAt += steps * q
	if steps >= int64(len(c.marks)) {
		for i := range c.marks {
			c.marks[i] = c.maxSID
		}
		return
	}
	for ; steps > 0; steps-- {
		copy(c.marks[1:], c.marks[:len(c.marks)-1])
		c.marks[0] = c.maxSID
	}
}

func (c *Conn) reset(sid uint32) Reason {
	if r := c.take(kRST, RSTStreamFlood); r != None {
		return r
	}
	if c.lim.prematureQ > 0 {
		c.roll(c.now())
		// Streams up to the oldest mark are at least 3q old.
		if sid <= c.marks[len(c.marks)-1] {
			return None
		}
	}
	c.premature++
	if c.lim.rapidMax >= 0 {
		now := c.now()
		if c.winResets == 0 || now-c.winStart >= c.lim.rapidWindow {
			c.winStart, c.winResets = now, 0
		}
		c.winResets++
		if c.winResets > c.lim.rapidMax {
			return RapidReset
		}
	}
	if c.lim.minStreams >= 0 && 2*c.premature >= max(c.streams, c.lim.minStreams) {
		return PrematureReset
	}
	return None
}

// scanOut counts the frames in b, the next bytes of the server's stream.
func (c *Conn) scanOut(b []byte) {
	var data, heads, resets uint64
	for len(b) > 0 {
		if c.wskip > 0 {
			k := c.wskip
			if uint32(len(b)) < k {
				k = uint32(len(b))
			}
			c.wskip -= k
			b = b[k:]
			continue
		}
		var h []byte
		if c.whdrN == 0 && len(b) >= frameHeaderLen {
			h, b = b[:frameHeaderLen], b[frameHeaderLen:]
		} else {
			k := copy(c.whdr[c.whdrN:], b)
			c.whdrN += uint8(k)
			b = b[k:]
			if c.whdrN < frameHeaderLen {
				break
			}
			c.whdrN = 0
			h = c.whdr[:]
		}
		f := parseHeader(h)
		c.wskip = f.length
		switch f.typ {
		case fData:
			data++
		case fHeaders:
			heads++
		case fRSTStream:
			resets++
		case fGoAway:
			c.goaway.Store(true)
		}
	}
	if data > 0 {
		c.outData.Add(data)
	}
	if heads > 0 {
		c.outHeaders.Add(heads)
	}
	if resets > 0 && c.stats != nil {
		c.stats.ResetsSent.Add(resets)
	}
}
