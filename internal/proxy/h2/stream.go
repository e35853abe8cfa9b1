package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// stream is one request and its response. Its fields are under c.mu but
// rw's own, which only the handler's goroutine touches.
type stream struct {
	c    *conn
	id   uint32
	cond sync.Cond // body bytes, windows, an end: L is &c.mu

	// remoteDone: the client ended its side (END_STREAM); localDone:
	// sluice queued its END_STREAM.
	remoteDone, localDone bool
	// reset: RST_STREAM was sent or received; the stream takes no more.
	reset bool
	// peerReset: the client reset it; its later frames are errors.
	peerReset bool
	// counted against MAX_CONCURRENT_STREAMS (see settleLocked)
	counted bool
	// err fails the handler's reads and writes (set by abortLocked).
	err error

	// The request body: body[off:] waits for the handler.
	body       []byte
	off        int
	eof        bool // everything arrived: after body, io.EOF
	bodyClosed bool // the handler closed the body: DATA is discarded
	declared   int64
	received   int64
	recvWin    int32 // what the client may still send on the stream
	unacked    int32 // read, not yet given back
	// trailer is the request's Trailer, which the handler owns: the
	// client's trailers wait in trailerIn and are copied into it on the
	// handler's side, by the read that returns io.EOF (as x/net does).
	trailer    http.Header
	trailerIn  http.Header
	continue_  bool // Expect: 100-continue, not answered yet
	headerSent bool // the response's HEADERS is queued: no 100 after it
	timer      *time.Timer
	timedOut   bool

	// sendWin is the client's window for sluice's DATA on the stream.
	sendWin int32

	// The request's context (streamCtx): ended, its Done channel (made
	// when asked for) and the functions to run when it ends.
	ended    bool
	done     chan struct{}
	after    []afterFunc
	afterBuf [2]afterFunc
	seq      uint64

	// rw is the handler's writer (newHandlerStream), which a stream the
	// loop forwards does without.
	rw *responseWriter
	// lo: the loop forwards the stream's request (loopstream_linux.go);
	// it has no handler.
	lo *loopStream

	// valBuf backs the values of the request's header fields when there
	// are no more (newRequestLocked).
	valBuf [8]string
}

// Errors a handler's reads and writes return.
var (
	errStreamClosed = errors.New("http2: stream closed")
	errBodyLength   = errors.New("http2: request body disagrees with its content-length")
)

type errStreamReset struct{ code http2.ErrCode }

func (e errStreamReset) Error() string { return "http2: client reset the stream: " + e.code.String() }

// abortLocked makes the handler's reads and writes fail with err from now
// on (keeping the first error).
func (st *stream) abortLocked(err error) {
	if st.err == nil {
		st.err = err
	}
	st.lo.cancelLocked()
	st.endCtxLocked()
	st.cond.Broadcast()
}

// endLocked takes the client's END_STREAM.
func (st *stream) endLocked() error {
	if st.declared >= 0 && st.received != st.declared {
		st.abortLocked(errBodyLength)
		return st.c.streamErr("content_length", st.id, http2.ErrCodeProtocol)
	}
	st.remoteDone, st.eof = true, true
	st.c.settleLocked(st)
	st.cond.Broadcast()
	return nil
}

func (st *stream) stopTimerLocked() {
	if st.timer != nil {
		st.timer.Stop()
	}
}

// connHeaders are the fields RFC 9113 §8.2.2 forbids in HTTP/2.
var connHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// reqLine is what checkRequestLocked found in a request's pseudo-header
// fields and host: its target, and its content-length (-1: none).
type reqLine struct {
	method, scheme, authority, path string
	declared                        int64
}

// checkRequestLocked checks the request that f opens as RFC 9113 §8.3 asks
// (and x/net's newWriterAndRequest and httpcommon.NewServerRequest do);
// an error is the stream error to answer with. Both ways of serving a
// stream (newRequestLocked, and forwardLocked on a loop) check it so.
func (c *conn) checkRequestLocked(f *http2.MetaHeadersFrame) (rl reqLine, err error) {
	id := f.StreamID
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			rl.method = hf.Value
		case ":scheme":
			rl.scheme = hf.Value
		case ":authority":
			rl.authority = hf.Value
		case ":path":
			rl.path = hf.Value
		case ":protocol":
			// Extended CONNECT (RFC 8441) is not offered.
			return rl, c.streamErr("bad_connect", id, http2.ErrCodeProtocol)
		}
	}
	if rl.method == "CONNECT" {
		if rl.path != "" || rl.scheme != "" || rl.authority == "" {
			return rl, c.streamErr("bad_connect", id, http2.ErrCodeProtocol)
		}
	} else if rl.method == "" || rl.path == "" || rl.scheme != "https" && rl.scheme != "http" {
		return rl, c.streamErr("bad_path_method", id, http2.ErrCodeProtocol)
	}
	// Field names are lower case (meta.go refuses others), so a name is
	// its http.Header key's lower-case form.
	var hosts, tes int
	var host, te, cl string
	cls, clBad := 0, false
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return rl, c.streamErr("connection_specific", id, http2.ErrCodeProtocol)
		case "te":
			if tes++; tes == 1 {
				te = hf.Value
			}
		case "host":
			if hosts++; hosts == 1 {
				host = hf.Value
			}
		case "content-length":
			if cls++; cls == 1 {
				cl = hf.Value
			} else if hf.Value != cl {
				clBad = true // repeated fields must agree
			}
		}
	}
	if tes > 1 || tes == 1 && te != "trailers" && te != "" {
		return rl, c.streamErr("bad_te", id, http2.ErrCodeProtocol)
	}
	if hosts == 1 {
		if rl.authority == "" {
			rl.authority = host
		} else if host != rl.authority {
			return rl, c.streamErr("authority_host_mismatch", id, http2.ErrCodeProtocol)
		}
	} else if hosts > 1 {
		return rl, c.streamErr("multiple_host_headers", id, http2.ErrCodeProtocol)
	}
	if strings.IndexByte(rl.authority, '@') >= 0 || rl.authority != "" && !httpguts.ValidHostHeader(rl.authority) {
		return rl, c.streamErr("invalid_authority", id, http2.ErrCodeProtocol)
	}
	if rl.method != "CONNECT" && (rl.path[0] != '/' && rl.path != "*" || !validRequestURI(rl.path)) {
		return rl, c.streamErr("bad_path", id, http2.ErrCodeProtocol)
	}
	// content-length: one valid value (repeated fields must agree), and
	// 0 when the stream has ended (RFC 9113 §8.1.1).
	rl.declared = -1
	if cls > 0 {
		n, err := strconv.ParseUint(cl, 10, 63)
		if err != nil || clBad || f.StreamEnded() && n != 0 {
			return rl, c.streamErr("content_length", id, http2.ErrCodeProtocol)
		}
		rl.declared = int64(n)
	}
	return rl, nil
}

// validRequestURI reports whether url.ParseRequestURI takes p, a request
// target that is "*" or begins with "/", without its allocations: no
// control byte, and in the path (before "?") every "%" two hex digits
// (TestValidRequestURI holds the two to the same answers).
func validRequestURI(p string) bool {
	for i := 0; i < len(p); i++ {
		if b := p[i]; b < ' ' || b == 0x7f {
			return false
		}
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

// newRequestLocked checks the request that f opens (checkRequestLocked)
// and builds it; an error is the stream error to answer with.
func (c *conn) newRequestLocked(f *http2.MetaHeadersFrame) (*http.Request, *stream, error) {
	rl, err := c.checkRequestLocked(f)
	if err != nil {
		return nil, nil, err
	}
	id := f.StreamID
	st := c.newHandlerStream(id)
	regular := f.RegularFields()
	header := make(http.Header, len(regular))
	// One backing array for the values: a field's slice is a one-element
	// window of it (a repeated field's append copies out). The stream's
	// own array when they fit.
	var vals []string
	if len(regular) <= len(st.valBuf) {
		vals = st.valBuf[:len(regular)]
	} else {
		vals = make([]string, len(regular))
	}
	for i, hf := range regular {
		k := canonicalKey(hf.Name)
		if vv, ok := header[k]; ok {
			header[k] = append(vv, hf.Value)
		} else {
			vals[i] = hf.Value
			header[k] = vals[i : i+1 : i+1]
		}
	}
	st.cond.L = &c.mu
	if httpguts.HeaderValuesContainsToken(header["Expect"], "100-continue") {
		delete(header, "Expect")
		st.continue_ = !f.StreamEnded()
	}
	if cookies := header["Cookie"]; len(cookies) > 1 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	var trailer http.Header
	for _, v := range header["Trailer"] {
		for _, key := range strings.Split(v, ",") {
			key = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(key))
			switch key {
			case "Transfer-Encoding", "Trailer", "Content-Length":
			default:
				if trailer == nil {
					trailer = http.Header{}
				}
				trailer[key] = nil
			}
		}
	}
	delete(header, "Trailer")
	delete(header, "Host")
	var u *url.URL
	requestURI := rl.path
	if rl.method == "CONNECT" {
		u, requestURI = &url.URL{Host: rl.authority}, rl.authority
	} else if u, err = url.ParseRequestURI(rl.path); err != nil {
		return nil, nil, c.streamErr("bad_path", id, http2.ErrCodeProtocol)
	}
	req := &http.Request{Method: rl.method, URL: u, RemoteAddr: c.remoteAddr, Header: header,
		RequestURI: requestURI, Proto: "HTTP/2.0", ProtoMajor: 2, Host: rl.authority, Trailer: trailer}
	if rl.scheme == "https" {
		req.TLS = c.tls
	}
	st.declared = rl.declared
	if f.StreamEnded() {
		st.remoteDone, st.eof = true, true
		req.Body = http.NoBody
	} else {
		req.Body = body{st}
		req.ContentLength = st.declared
	}
	st.trailer = trailer
	return c.withStream(st, req), st, nil
}

// handlerStream is a stream with a handler, and its writer: one
// allocation.
type handlerStream struct {
	st stream
	rw responseWriter
}

// newHandlerStream makes stream id, whose request a handler serves.
func (c *conn) newHandlerStream(id uint32) *stream {
	h := &handlerStream{st: stream{c: c, id: id, declared: -1, recvWin: c.streamWindow, sendWin: c.peerWindow}}
	h.st.rw = &h.rw
	return &h.st
}

// withStream gives req the stream's context and st its writer.
func (c *conn) withStream(st *stream, req *http.Request) *http.Request {
	// r2, not req reassigned: escape analysis would then make the caller's
	// request (newRequestLocked's) escape too, one allocation more.
	r2 := req.WithContext(streamCtx{st})
	*st.rw = responseWriter{st: st, req: r2, header: http.Header{},
		buf: st.rw.bodyBuf[:0], hdr: st.rw.hdrBuf[:0]}
	return r2
}

// upgrade starts stream 1 from the HTTP/1.1 request that asked for h2c,
// with the client's SETTINGS from its HTTP2-Settings field.
func (c *conn) upgrade(r *http.Request, settings []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(settings)%6 != 0 {
		return c.connErr("upgrade_settings", http2.ErrCodeProtocol)
	}
	for i := 0; i < len(settings); i += 6 {
		s := http2.Setting{ID: http2.SettingID(uint16(settings[i])<<8 | uint16(settings[i+1])),
			Val: uint32(settings[i+2])<<24 | uint32(settings[i+3])<<16 | uint32(settings[i+4])<<8 | uint32(settings[i+5])}
		if err := c.settingLocked(s); err != nil {
			return err
		}
	}
	c.maxID = 1
	st := c.newHandlerStream(1)
	st.remoteDone, st.eof = true, true
	st.cond.L = &c.mu
	req := r.Clone(context.Background())
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	req.RemoteAddr = c.remoteAddr
	if req.Body == nil {
		req.Body = http.NoBody
	}
	c.startLocked(st, c.withStream(st, req))
	return nil
}

// body is a request's body as the handler reads it.
type body struct{ st *stream }

func (b body) Read(p []byte) (int, error) { return b.st.read(p) }

// Close discards what is left: the client's further DATA is dropped (its
// credit given back).
func (b body) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	if !st.bodyClosed {
		st.bodyClosed = true
		c.giveBackLocked(int32(len(st.body) - st.off))
		st.body, st.off = nil, 0
		c.flushLocked()
	}
	c.mu.Unlock()
	return nil
}

func (st *stream) read(p []byte) (int, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.continue_ {
		st.continue_ = false
		if st.err == nil && !c.dead && !st.headerSent {
			c.writeStatusLocked(st.id, http.StatusContinue, "")
			c.flushLocked()
		}
	}
	for st.off == len(st.body) {
		switch {
		case st.bodyClosed:
			return 0, http.ErrBodyReadAfterClose
		case st.eof && st.err == nil:
			if st.trailer != nil { // declared: undeclared ones are dropped, as by x/net
				for k, vv := range st.trailerIn {
					st.trailer[k] = vv
				}
			}
			st.trailerIn = nil
			return 0, io.EOF
		case st.timedOut:
			return 0, fmt.Errorf("http2: request body: %w", os.ErrDeadlineExceeded)
		case st.err != nil:
			return 0, st.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		st.cond.Wait()
	}
	n := copy(p, st.body[st.off:])
	st.off += n
	if st.off == len(st.body) {
		st.body, st.off = st.body[:0], 0
	}
	st.unacked += int32(n)
	c.unacked += int32(n)
	c.ackLocked(st)
	c.flushLocked()
	return n, nil
}

// setReadDeadline makes body reads fail from t on (the zero time: never).
func (st *stream) setReadDeadline(t time.Time) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.stopTimerLocked()
	st.timedOut = false
	if t.IsZero() {
		return
	}
	d := time.Until(t)
	if d <= 0 {
		st.timedOut = true
		st.cond.Broadcast()
		return
	}
	st.timer = time.AfterFunc(d, func() {
		c.mu.Lock()
		st.timedOut = true
		st.cond.Broadcast()
		c.mu.Unlock()
	})
}
