package main

// HTTP/2 on the loops (-h2c-listen): issue 10's question put to the same
// design as issue 15's. sluice's HTTP/2 server runs a reader goroutine per
// connection and a goroutine per stream that blocks on its backend; here
// frames are parsed on the loop from the connection's buffer, each stream's
// request goes to a backend connection the loop owns (as an HTTP/1.1
// exchange does), and the frames of every response that came in one
// wake-up leave in one write (flushH2).
//
// Per request it does what sluice's HTTP/2 path does with its default
// config: HPACK decoding, the checks of RFC 9113 §8.2-8.3 sluice makes
// (pseudo-fields once each and first, lowercase names, no
// connection-specific fields, te only "trailers", valid values, :authority
// or host), the HTTP/1.1 head the backend gets (normalised path, the
// client's fields less hop-by-hop and forwarding ones, cookies joined,
// X-Forwarded-For/-Proto/-Host, X-Request-Id), and the response's fields
// less hop-by-hop ones, HPACK-encoded, with X-Request-Id.
//
// Left out, beyond what main.go lists: TLS (prior knowledge over cleartext
// only), request bodies (a stream that does not end with its HEADERS gets
// 501), chunked responses (502), 1xx responses (dropped), CONNECT, PUSH,
// trailers, priorities, and timeouts on HTTP/2 connections. Flow control
// is kept for responses (stream and connection windows; a stream whose
// window is shut stops reading its backend until WINDOW_UPDATE), and the
// connection window for the DATA it discards.

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net/netip"

	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
)

const (
	h2MaxFrame   = 16384 // SETTINGS_MAX_FRAME_SIZE sluice accepts (the default)
	h2MaxStreams = 100   // SETTINGS_MAX_CONCURRENT_STREAMS
	h2MaxBlock   = 64 << 10
	h2InitWin    = 65535
)

// h2client is one HTTP/2 connection from a client.
type h2client struct {
	l  *worker
	fd int
	loop.Ready
	closed   bool
	dirty    bool // deferred to the end of the wake-up: has frames to write
	closeEnd bool // close once out is written (GOAWAY sent)
	preface  bool
	in       []byte
	r, w     int
	out      []byte
	off      int
	peer     netip.Addr
	tc       *tls.Conn // over TLS (tls.go): records in and out; nil in cleartext
	tio      *tlsIO
	dec      *hpack.Decoder
	enc      *hpack.Encoder
	hbuf     bytes.Buffer
	fields   []hpack.HeaderField
	streams  map[uint32]*h2stream
	lastID   uint32
	blk      []byte // a header block being assembled (HEADERS, CONTINUATION)
	blkID    uint32
	blkEnd   bool
	sendWin  int64 // connection send window
	initWin  int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame int   // the client's SETTINGS_MAX_FRAME_SIZE
	unacked  int   // DATA bytes received and not yet given back (WINDOW_UPDATE)
	// interned strings for response field names and values, so that HPACK
	// encoding (whose dynamic table keeps the strings) allocates only for
	// new ones
	intern map[string]string
}

// h2Listener accepts HTTP/2 connections (prior knowledge) on -h2c-listen.
type h2Listener struct {
	l   *worker
	lfd int
}

func (h h2Listener) Event(loop.Events) {
	for {
		fd, peer, ok := h.l.accept(h.lfd)
		if !ok {
			return
		}
		if h.l.newH2(fd, peer) != nil {
			h.l.accepted++
		}
	}
}

func (h2Listener) Fail() {}

// newH2 registers the HTTP/2 connection on fd and queues the server's
// preface; nil when it cannot (then fd is closed).
func (l *worker) newH2(fd int, peer netip.Addr) *h2client {
	c := &h2client{l: l, fd: fd, peer: peer, in: make([]byte, 2*(h2MaxFrame+9)),
		streams: map[uint32]*h2stream{}, sendWin: h2InitWin, initWin: h2InitWin, maxFrame: h2MaxFrame,
		intern: map[string]string{}}
	c.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { c.fields = append(c.fields, f) })
	c.dec.SetMaxStringLength(16 << 10)
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.Wr = true
	if err := l.ev.Add(fd, c); err != nil {
		l.ev.CloseFD(fd)
		return nil
	}
	// The server's preface: SETTINGS.
	c.out = appendFrameHeader(c.out, 12, http2.FrameSettings, 0, 0)
	c.out = appendSetting(c.out, http2.SettingMaxConcurrentStreams, h2MaxStreams)
	c.out = appendSetting(c.out, http2.SettingMaxHeaderListSize, h2MaxBlock)
	c.markDirty()
	return c
}

// markDirty has the connection write at the end of this wake-up: the
// frames of every stream whose response came in the batch go in one write.
func (c *h2client) markDirty() {
	if !c.dirty && !c.closed {
		c.dirty = true
		c.l.ev.Defer(c)
	}
}

// Flush writes what the connection has queued for the client (Defer).
func (c *h2client) Flush() {
	c.dirty = false
	if c.closed {
		return
	}
	if c.tc == nil {
		c.writeOut(&c.out, &c.off)
		return
	}
	// Over TLS: what is queued is encrypted in one Write (records of up
	// to 16 KiB), which appends to c.tio.out and cannot fail.
	if c.off < len(c.out) {
		c.tc.Write(c.out[c.off:])
		c.out, c.off = c.out[:0], 0
	}
	c.writeOut(&c.tio.out, &c.tio.off)
}

// writeOut writes (*b)[*off:] to the client; once all is written it empties
// *b (dropping a large one), and closes the connection when it was to end.
func (c *h2client) writeOut(b *[]byte, off *int) {
	if *off < len(*b) && c.Wr {
		n, e := loop.Write(c.fd, (*b)[*off:])
		if e != 0 && e != unix.EAGAIN {
			c.close()
			return
		}
		if *off += n; *off < len(*b) {
			c.Wr = false // EPOLLOUT brings it back
			return
		}
	}
	if *off == len(*b) {
		*b, *off = (*b)[:0], 0
		if cap(*b) > 256<<10 {
			*b = nil
		}
		if c.closeEnd {
			c.close()
		}
	}
}

// pending reports whether bytes wait for the client's socket.
func (c *h2client) pending() bool {
	return c.off < len(c.out) || c.tio != nil && c.tio.off < len(c.tio.out)
}

// Fail closes the connection after a panic on the loop.
func (c *h2client) Fail() { c.close() }

func (c *h2client) Event(ev loop.Events) {
	c.Note(ev)
	if ev&(loop.Out|loop.Hup|loop.Err) != 0 && c.pending() {
		c.markDirty()
	}
	if c.tc != nil {
		c.readTLS()
		c.markDirty()
		return
	}
	for !c.closed && !c.closeEnd {
		c.parse()
		if c.closed || c.closeEnd || !c.Rd {
			break
		}
		if c.r > 0 {
			c.w = copy(c.in, c.in[c.r:c.w])
			c.r = 0
		}
		n, e := loop.Read(c.fd, c.in[c.w:])
		if e == unix.EAGAIN {
			c.Rd = false
			break
		}
		if e != 0 || n == 0 {
			c.close()
			return
		}
		if n < len(c.in)-c.w && !c.Hup {
			c.Rd = false
		}
		c.w += n
	}
	c.markDirty()
}

// readTLS decrypts what the client sent and handles its frames: Read
// until the socket has nothing more (the temporary errWouldBlock).
func (c *h2client) readTLS() {
	for !c.closed && !c.closeEnd {
		c.parse()
		if c.closed || c.closeEnd {
			return
		}
		if c.r > 0 {
			c.w = copy(c.in, c.in[c.r:c.w])
			c.r = 0
		}
		n, err := c.tc.Read(c.in[c.w:])
		c.w += n
		if n > 0 {
			continue
		}
		if err != errWouldBlock {
			c.close()
		}
		return
	}
}

// upEvent moves stream st on after an event of its backend connection.
func (c *h2client) upEvent(st *h2stream) {
	st.pump()
	c.markDirty()
}

// parse handles the whole frames in c.in[c.r:c.w].
func (c *h2client) parse() {
	if !c.preface {
		if c.w-c.r < len(http2.ClientPreface) {
			return
		}
		if string(c.in[c.r:c.r+len(http2.ClientPreface)]) != http2.ClientPreface {
			c.close()
			return
		}
		c.r += len(http2.ClientPreface)
		c.preface = true
	}
	for c.w-c.r >= 9 && !c.closed && !c.closeEnd {
		b := c.in[c.r:]
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if n > h2MaxFrame {
			c.goAway(http2.ErrCodeFrameSize)
			return
		}
		if len(b) < 9+n {
			return
		}
		typ, flags := http2.FrameType(b[3]), http2.Flags(b[4])
		id := binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1)
		p := b[9 : 9+n]
		c.r += 9 + n
		if c.blkID != 0 && typ != http2.FrameContinuation {
			c.goAway(http2.ErrCodeProtocol)
			return
		}
		c.frame(typ, flags, id, p)
	}
}

func (c *h2client) frame(typ http2.FrameType, flags http2.Flags, id uint32, p []byte) {
	switch typ {
	case http2.FrameSettings:
		if id != 0 || len(p)%6 != 0 {
			c.goAway(http2.ErrCodeProtocol)
			return
		}
		if flags.Has(http2.FlagSettingsAck) {
			return
		}
		for ; len(p) > 0; p = p[6:] {
			v := binary.BigEndian.Uint32(p[2:6])
			switch http2.SettingID(binary.BigEndian.Uint16(p)) {
			case http2.SettingInitialWindowSize:
				if v > 1<<31-1 {
					c.goAway(http2.ErrCodeFlowControl)
					return
				}
				d := int64(v) - c.initWin
				c.initWin = int64(v)
				for _, st := range c.streams {
					st.sendWin += d
				}
			case http2.SettingMaxFrameSize:
				if v < h2MaxFrame || v > 1<<24-1 {
					c.goAway(http2.ErrCodeProtocol)
					return
				}
				c.maxFrame = int(v)
			case http2.SettingHeaderTableSize:
				c.enc.SetMaxDynamicTableSizeLimit(v)
			}
		}
		c.out = appendFrameHeader(c.out, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
		c.pushPending()
	case http2.FramePing:
		if id != 0 || len(p) != 8 {
			c.goAway(http2.ErrCodeProtocol)
			return
		}
		if !flags.Has(http2.FlagPingAck) {
			c.out = appendFrameHeader(c.out, 8, http2.FramePing, http2.FlagPingAck, 0)
			c.out = append(c.out, p...)
		}
	case http2.FrameWindowUpdate:
		if len(p) != 4 {
			c.goAway(http2.ErrCodeFrameSize)
			return
		}
		inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
		if id == 0 {
			c.sendWin += inc
		} else if st := c.streams[id]; st != nil {
			st.sendWin += inc
		}
		c.pushPending()
	case http2.FrameHeaders:
		if id == 0 || id%2 == 0 || id <= c.lastID {
			c.goAway(http2.ErrCodeProtocol)
			return
		}
		if flags.Has(http2.FlagHeadersPadded) {
			if len(p) < 1 || int(p[0]) >= len(p) {
				c.goAway(http2.ErrCodeProtocol)
				return
			}
			p = p[1 : len(p)-int(p[0])]
		}
		if flags.Has(http2.FlagHeadersPriority) {
			if len(p) < 5 {
				c.goAway(http2.ErrCodeProtocol)
				return
			}
			p = p[5:]
		}
		c.blk = append(c.blk[:0], p...)
		c.blkID, c.blkEnd = id, flags.Has(http2.FlagHeadersEndStream)
		if flags.Has(http2.FlagHeadersEndHeaders) {
			c.headerBlock()
		}
	case http2.FrameContinuation:
		if id != c.blkID || len(c.blk)+len(p) > h2MaxBlock {
			c.goAway(http2.ErrCodeProtocol)
			return
		}
		c.blk = append(c.blk, p...)
		if flags.Has(http2.FlagContinuationEndHeaders) {
			c.headerBlock()
		}
	case http2.FrameData:
		// Request bodies are left out: their streams were answered
		// (501). The connection window is given back.
		if id == 0 {
			c.goAway(http2.ErrCodeProtocol)
			return
		}
		if c.unacked += len(p); c.unacked >= h2InitWin/2 {
			c.out = appendFrameHeader(c.out, 4, http2.FrameWindowUpdate, 0, 0)
			c.out = binary.BigEndian.AppendUint32(c.out, uint32(c.unacked))
			c.unacked = 0
		}
	case http2.FrameRSTStream:
		if st := c.streams[id]; st != nil {
			st.end(false)
		}
	case http2.FrameGoAway:
		if len(c.streams) == 0 {
			c.closeEnd = true
		}
	}
}

// headerBlock starts the stream of the header block just completed.
func (c *h2client) headerBlock() {
	id, endStream := c.blkID, c.blkEnd
	c.blkID, c.lastID = 0, id
	c.fields = c.fields[:0]
	if _, err := c.dec.Write(c.blk); err != nil {
		c.goAway(http2.ErrCodeCompression)
		return
	}
	if err := c.dec.Close(); err != nil {
		c.goAway(http2.ErrCodeCompression)
		return
	}
	if len(c.streams) >= h2MaxStreams {
		c.rst(id, http2.ErrCodeRefusedStream)
		return
	}
	if !endStream {
		c.answer(id, 501) // request bodies are left out of the prototype
		return
	}
	c.start(id)
}

// answer sends a bodiless response with status on stream id.
func (c *h2client) answer(id uint32, status int) {
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusString(status)})
	c.writeHeaders(id, c.hbuf.Bytes(), true)
}

func (c *h2client) writeHeaders(id uint32, block []byte, end bool) {
	typ, fl := http2.FrameHeaders, http2.Flags(0)
	if end {
		fl = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(block), c.maxFrame)
		f := fl
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		c.out = appendFrameHeader(c.out, n, typ, f, id)
		c.out = append(c.out, block[:n]...)
		if block = block[n:]; len(block) == 0 {
			return
		}
		typ, fl = http2.FrameContinuation, 0
	}
}

func (c *h2client) rst(id uint32, code http2.ErrCode) {
	c.out = appendFrameHeader(c.out, 4, http2.FrameRSTStream, 0, id)
	c.out = binary.BigEndian.AppendUint32(c.out, uint32(code))
}

// goAway ends the connection with a connection error: GOAWAY, then close
// once it is written.
func (c *h2client) goAway(code http2.ErrCode) {
	c.out = appendFrameHeader(c.out, 8, http2.FrameGoAway, 0, 0)
	c.out = binary.BigEndian.AppendUint32(c.out, c.lastID)
	c.out = binary.BigEndian.AppendUint32(c.out, uint32(code))
	c.closeEnd = true
	c.markDirty()
}

func (c *h2client) close() {
	if c.closed {
		return
	}
	for _, st := range c.streams {
		st.upClose = true
		st.end(false)
	}
	c.closed = true
	c.l.ev.CloseFD(c.fd)
}

func appendFrameHeader(b []byte, n int, typ http2.FrameType, fl http2.Flags, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(typ), byte(fl),
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

func appendSetting(b []byte, id http2.SettingID, v uint32) []byte {
	return append(b, byte(id>>8), byte(id), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
