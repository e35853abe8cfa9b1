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
	"strconv"
	"strings"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
	"golang.org/x/net/http/httpguts"
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
	l        *loop
	fd       int
	gen      uint32
	rd, wr   bool
	hup      bool
	closed   bool
	dirty    bool // in l.dirty: has frames to write
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

// h2stream is one request and its response.
type h2stream struct {
	c        *h2client
	id       uint32
	u        *upconn
	be       int
	ob       []byte // the HTTP/1.1 head for the backend; ob[ooff:] is unwritten
	ooff     int
	retry    bool // may go once more on a new connection (bodiless, idempotent)
	retried  bool
	gotByte  bool
	isHead   bool
	rh       edge.ResponseHead
	mode     int
	rleft    int64
	headSent bool
	respDone bool
	upClose  bool
	ended    bool // END_STREAM sent
	sendWin  int64
	pend     []byte // response body waiting for window
	idv      []byte
	idb      [64]byte
	// -core (core.go)
	cored  bool
	cr     coreReq
	bytes  int64
	status int // the prototype's own answer (fail)
}

func (l *loop) acceptH2() {
	for {
		fd, peer, ok := l.acceptOne(l.h2fd)
		if !ok {
			return
		}
		if l.newH2(fd, peer) != nil {
			l.accepted++
		}
	}
}

// newH2 registers the HTTP/2 connection on fd and queues the server's
// preface; nil when it cannot (then fd is closed).
func (l *loop) newH2(fd int, peer netip.Addr) *h2client {
	pad, gen := l.tag(kindH2)
	c := &h2client{l: l, fd: fd, gen: gen, wr: true, peer: peer, in: make([]byte, 2*(h2MaxFrame+9)),
		streams: map[uint32]*h2stream{}, sendWin: h2InitWin, initWin: h2InitWin, maxFrame: h2MaxFrame,
		intern: map[string]string{}}
	c.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { c.fields = append(c.fields, f) })
	c.dec.SetMaxStringLength(16 << 10)
	c.enc = hpack.NewEncoder(&c.hbuf)
	if fd >= len(l.h2s) {
		l.grow(fd)
	}
	l.h2s[fd] = c
	if err := l.register(fd, pad); err != nil {
		l.h2s[fd] = nil
		unix.Close(fd)
		return nil
	}
	// The server's preface: SETTINGS.
	c.out = appendFrameHeader(c.out, 12, http2.FrameSettings, 0, 0)
	c.out = appendSetting(c.out, http2.SettingMaxConcurrentStreams, h2MaxStreams)
	c.out = appendSetting(c.out, http2.SettingMaxHeaderListSize, h2MaxBlock)
	c.markDirty()
	return c
}

func (c *h2client) markDirty() {
	if !c.dirty && !c.closed {
		c.dirty = true
		c.l.dirty = append(c.l.dirty, c)
	}
}

// flushH2 writes what the loop's HTTP/2 connections have queued.
func (l *loop) flushH2() {
	for i, c := range l.dirty {
		l.dirty[i] = nil
		c.dirty = false
		if !c.closed {
			c.flush()
		}
	}
	l.dirty = l.dirty[:0]
}

// flush writes what the connection has queued for the client.
func (c *h2client) flush() {
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
	if *off < len(*b) && c.wr {
		n, e := rawWrite(c.fd, (*b)[*off:])
		if e != 0 && e != unix.EAGAIN {
			c.close()
			return
		}
		if *off += n; *off < len(*b) {
			c.wr = false // EPOLLOUT brings it back
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

func (c *h2client) event(ev uint32) {
	readiness(ev, &c.rd, &c.hup, &c.wr)
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.pending() {
		c.markDirty()
	}
	if c.tc != nil {
		c.readTLS()
		c.markDirty()
		return
	}
	for !c.closed && !c.closeEnd {
		c.parse()
		if c.closed || c.closeEnd || !c.rd {
			break
		}
		if c.r > 0 {
			c.w = copy(c.in, c.in[c.r:c.w])
			c.r = 0
		}
		n, e := rawRead(c.fd, c.in[c.w:])
		if e == unix.EAGAIN {
			c.rd = false
			break
		}
		if e != 0 || n == 0 {
			c.close()
			return
		}
		if n < len(c.in)-c.w && !c.hup {
			c.rd = false
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

// start checks the request's fields, writes its HTTP/1.1 head for the
// backend and sends it on a connection of the loop's.
func (c *h2client) start(id uint32) {
	l := c.l
	var method, path, authority, scheme, host string
	regular, cookies := false, 0
	for _, f := range c.fields {
		if strings.HasPrefix(f.Name, ":") {
			var dst *string
			switch f.Name {
			case ":method":
				dst = &method
			case ":path":
				dst = &path
			case ":authority":
				dst = &authority
			case ":scheme":
				dst = &scheme
			}
			if regular || dst == nil || *dst != "" {
				c.rst(id, http2.ErrCodeProtocol)
				return
			}
			*dst = f.Value
			continue
		}
		regular = true
		if !validLowerName(f.Name) || !httpguts.ValidHeaderFieldValue(f.Value) {
			c.rst(id, http2.ErrCodeProtocol)
			return
		}
		switch f.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			c.rst(id, http2.ErrCodeProtocol)
			return
		case "te":
			if f.Value != "trailers" {
				c.rst(id, http2.ErrCodeProtocol)
				return
			}
		case "host":
			if host != "" {
				c.rst(id, http2.ErrCodeProtocol)
				return
			}
			host = f.Value
		case "cookie":
			cookies++
		}
	}
	if method == "CONNECT" {
		c.answer(id, 501)
		return
	}
	if method == "" || path == "" || path[0] != '/' || scheme != "http" && scheme != "https" ||
		authority != "" && host != "" && authority != host {
		c.rst(id, http2.ErrCodeProtocol)
		return
	}
	if authority == "" {
		authority = host
	}
	if authority == "" || strings.IndexByte(authority, '@') >= 0 || !httpguts.ValidHostHeader(authority) {
		c.rst(id, http2.ErrCodeProtocol)
		return
	}
	st := l.newStream()
	st.c, st.id, st.sendWin = c, id, c.initWin
	st.isHead = method == "HEAD"
	switch method {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE":
		st.retry = true
	}
	for _, f := range c.fields {
		if f.Name == "x-request-id" && proxy.ValidRequestID(f.Value) {
			st.idv = append(st.idb[:0], f.Value...)
			break
		}
	}
	if st.idv == nil {
		st.idv = l.cfg.ids.AppendNext(st.idb[:0])
	}
	_, escaped, query := proxy.SplitTarget(path)
	npath := route.NormalizePath(escaped)
	be, refused := -1, 0
	if k := l.cfg.core; k != nil {
		be, refused = k.begin(&st.cr, proxy.HTTP2, st.retry, authority, npath, query, h2Fields(c.fields), c.peer)
		st.cored = true
	}
	o := l.getOut()
	o = append(o, method...)
	o = append(o, ' ')
	o = append(o, npath...)
	if query != "" {
		o = append(o, '?')
		o = append(o, query...)
	}
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, authority...)
	o = append(o, "\r\n"...)
	for _, f := range c.fields {
		n := f.Name
		if n[0] == ':' || n == "host" || n == "x-request-id" || n == "cookie" && cookies > 1 ||
			proxy.IsHop(n) || dropsForwarding([]byte(n)) {
			continue
		}
		o = append(o, n...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	if cookies > 1 { // one field, as HTTP/1.1 wants (RFC 9113 §8.2.3)
		o = append(o, "cookie: "...)
		sep := false
		for _, f := range c.fields {
			if f.Name == "cookie" {
				if sep {
					o = append(o, "; "...)
				}
				o, sep = append(o, f.Value...), true
			}
		}
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Forwarded-For: "...)
	o = c.peer.AppendTo(o)
	o = append(o, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "...)
	o = append(o, authority...)
	o = append(o, "\r\nX-Request-Id: "...)
	o = append(o, st.idv...)
	o = append(o, "\r\n\r\n"...)
	st.ob = o
	c.streams[id] = st
	if st.cored {
		if be < 0 {
			st.fail(refused)
			return
		}
		st.be = be
	} else {
		st.be = l.rr % len(l.cfg.backends)
		l.rr++
	}
	u, err := l.getUp(st.be)
	if err != nil {
		st.fail(503)
		return
	}
	st.u, u.s = u, st
	st.pump()
}

// validLowerName reports whether s is a field name as HTTP/2 carries it:
// a token in lower case.
func validLowerName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' || !httpguts.IsTokenRune(rune(b)) {
			return false
		}
	}
	return true
}

func (l *loop) newStream() *h2stream {
	if n := len(l.sts); n > 0 {
		st := l.sts[n-1]
		l.sts = l.sts[:n-1]
		return st
	}
	return new(h2stream)
}

// pump writes the request to the backend and reads and relays its
// response, as far as the sockets and the windows allow.
func (st *h2stream) pump() {
	for !st.respDone {
		u := st.u
		if u == nil || u.connecting {
			return
		}
		if st.ooff < len(st.ob) {
			switch u.send(st.ob, &st.ooff) {
			case ioWait:
				return
			case ioFailed:
				st.upFailed()
			}
			continue
		}
		if u.r < u.w {
			if !st.headSent {
				if !st.parseHead() {
					if st.respDone || st.u != u {
						continue
					}
					if !st.readUp() {
						return
					}
				}
			} else {
				st.relay()
			}
			continue
		}
		if len(st.pend) > 0 {
			return // the window is shut: read no more until it opens
		}
		if !st.readUp() {
			return
		}
	}
	st.tryEnd()
}

// readUp reads from the backend; false when nothing more can be read now.
func (st *h2stream) readUp() bool {
	switch st.u.fill() {
	case ioWait:
		return false
	case ioTooLong:
		st.fail(502) // a head larger than the buffer
		return false
	case ioFailed:
		if st.headSent && st.mode == bodyClose {
			st.respDone, st.upClose = true, true
			return true
		}
		st.upFailed()
		return true
	}
	st.gotByte = true
	return true
}

// parseHead parses the response head and queues its HEADERS; false when
// the head is not whole yet or the stream failed.
func (st *h2stream) parseHead() bool {
	u, c := st.u, st.c
	n, err := edge.ParseResponseHead(u.in[u.r:u.w], &st.rh)
	if err != nil {
		st.fail(502)
		return false
	}
	if n == 0 {
		return false
	}
	rh := &st.rh
	head := u.in[u.r : u.r+n]
	u.r += n
	if rh.Status < 200 {
		if rh.Status == 101 {
			st.fail(502)
			return false
		}
		return true // an interim response: dropped, the final one follows
	}
	switch {
	case edge.NoBody(st.isHead, rh.Status):
		st.mode = bodyNone
	case rh.Chunked:
		st.fail(502) // chunked responses are left out of the prototype
		return false
	case rh.ContentLength >= 0:
		st.mode, st.rleft = bodyFixed, rh.ContentLength
	default:
		st.mode = bodyClose
		st.upClose = true
	}
	if rh.Close {
		st.upClose = true
	}
	st.respDone = st.mode == bodyNone || st.mode == bodyFixed && st.rleft == 0
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusString(rh.Status)})
	var cn connNames
	cn.collect(head, rh.First)
	var lb [64]byte
	for f := range edge.Fields(head, rh.First) {
		name := bstr(f.Name)
		if len(f.Name) > len(lb) || proxy.IsHop(name) || cn.names(f.Name) ||
			len(name) == 12 && edge.EqualFold(f.Name, "x-request-id") ||
			st.mode != bodyFixed && len(name) == 14 && edge.EqualFold(f.Name, "content-length") {
			continue
		}
		for i, b := range f.Name {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			lb[i] = b
		}
		c.enc.WriteField(hpack.HeaderField{Name: c.interned(lb[:len(f.Name)]), Value: c.interned(f.Value)})
	}
	// The request ID differs per request: never indexed, so the encoder
	// keeps no reference to the stream's buffer.
	c.enc.WriteField(hpack.HeaderField{Name: "x-request-id", Value: bstr(st.idv), Sensitive: true})
	c.writeHeaders(st.id, c.hbuf.Bytes(), st.respDone)
	st.headSent = true
	if st.cored {
		c.l.cfg.core.header(&st.cr)
	}
	st.ended = st.respDone
	return true
}

// interned returns b as a string, the same one each time (up to 4,096
// distinct strings per connection, then it starts again).
func (c *h2client) interned(b []byte) string {
	if s, ok := c.intern[bstr(b)]; ok {
		return s
	}
	if len(c.intern) >= 4096 {
		clear(c.intern)
	}
	s := string(b)
	c.intern[s] = s
	return s
}

var statusStrings [600]string

func statusString(code int) string {
	if code < 0 || code >= len(statusStrings) {
		return strconv.Itoa(code)
	}
	if statusStrings[code] == "" {
		statusStrings[code] = strconv.Itoa(code) // only the loops write it, the same value
	}
	return statusStrings[code]
}

// relay sends the body bytes at u.in[u.r:u.w] that belong to the response.
func (st *h2stream) relay() {
	u := st.u
	avail := u.in[u.r:u.w]
	m := len(avail)
	if st.mode == bodyFixed {
		m = int(min(int64(m), st.rleft))
		if st.rleft -= int64(m); st.rleft == 0 {
			st.respDone = true
		}
	}
	u.r += m
	st.bytes += int64(m)
	st.send(avail[:m])
}

// send queues body bytes as DATA frames as far as the windows allow; the
// rest waits in st.pend.
func (st *h2stream) send(p []byte) {
	c := st.c
	if len(st.pend) > 0 {
		st.pend = append(st.pend, p...)
		return
	}
	for len(p) > 0 {
		n := int(min(int64(len(p)), int64(c.maxFrame), st.sendWin, c.sendWin))
		if n <= 0 {
			st.pend = append(st.pend, p...)
			return
		}
		end := n == len(p) && st.respDone
		var fl http2.Flags
		if end {
			fl = http2.FlagDataEndStream
			st.ended = true
		}
		c.out = appendFrameHeader(c.out, n, http2.FrameData, fl, st.id)
		c.out = append(c.out, p[:n]...)
		st.sendWin -= int64(n)
		c.sendWin -= int64(n)
		p = p[n:]
	}
}

// pushPending sends what streams hold for want of window, and moves them
// on.
func (c *h2client) pushPending() {
	for _, st := range c.streams {
		if len(st.pend) == 0 {
			continue
		}
		p := st.pend
		st.pend = nil
		st.send(p)
		if len(st.pend) == 0 {
			st.pump()
		}
	}
}

// tryEnd ends a stream whose response was read whole, once its body is
// sent.
func (st *h2stream) tryEnd() {
	if !st.respDone || len(st.pend) > 0 {
		return
	}
	if !st.ended {
		st.c.out = appendFrameHeader(st.c.out, 0, http2.FrameData, http2.FlagDataEndStream, st.id)
		st.ended = true
	}
	st.end(true)
}

// end ends the stream: its backend connection goes back to the idle stack
// when the response ended cleanly, else it is closed.
func (st *h2stream) end(clean bool) {
	c, l := st.c, st.c.l
	if st.cored {
		l.cfg.core.finish(&st.cr, answered(st.status, st.headSent, &st.rh), st.bytes)
	}
	if u := st.u; u != nil {
		u.s, st.u = nil, nil
		u.release(clean && !st.upClose && st.ooff == len(st.ob))
	}
	delete(c.streams, st.id)
	if st.ob != nil {
		l.putOut(st.ob)
	}
	*st = h2stream{}
	l.sts = append(l.sts, st)
}

// upFailed handles a backend connection that failed before the response
// was whole: a bodiless idempotent request that got no byte back on a
// reused connection goes once more on a new one; else the client gets a
// 502, or a reset if its response had begun.
func (st *h2stream) upFailed() {
	c, l := st.c, st.c.l
	if u := st.u; u != nil {
		u.s, st.u = nil, nil
		u.close()
		if !st.gotByte && u.reused && st.retry && !st.retried {
			st.retried = true
			l.retries++
			if nu, err := l.dial(st.be); err == nil {
				st.u, nu.s, st.ooff = nu, st, 0
				return
			}
		}
	}
	if st.headSent {
		c.rst(st.id, http2.ErrCodeInternal)
		st.end(false)
		return
	}
	st.fail(502)
}

// fail answers the stream with an error status of the prototype's own.
func (st *h2stream) fail(status int) {
	c, id := st.c, st.id
	st.upClose, st.status = true, status
	st.end(false)
	c.answer(id, status)
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
	c.l.h2s[c.fd] = nil
	rawClose(c.fd)
}

func appendFrameHeader(b []byte, n int, typ http2.FrameType, fl http2.Flags, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(typ), byte(fl),
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

func appendSetting(b []byte, id http2.SettingID, v uint32) []byte {
	return append(b, byte(id>>8), byte(id), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
