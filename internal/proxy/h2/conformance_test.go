package h2

// An adversarial check of the server against RFC 9113 and net/http's
// handler semantics, with raw frames over loopback TCP, written from the
// RFC and net/http's documentation rather than from the server's code.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testWait bounds every wait of these tests for something to happen.
const testWait = 5 * time.Second

// startServerConns is startServer, and also tells served each time a
// ServeConn returns.
func startServerConns(t *testing.T, srv *Server, h http.Handler) (*testServer, <-chan struct{}) {
	served := make(chan struct{}, 64)
	return serveOn(t, srv, h, served), served
}

// waitServed waits for a ServeConn to return.
func waitServed(t *testing.T, served <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-served:
	case <-time.After(testWait):
		t.Fatalf("ServeConn did not return %s", what)
	}
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testWait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// hold is a handler's pause: it says it started, then waits for release
// (at most testWait).
func hold(started chan<- struct{}, release <-chan struct{}) {
	started <- struct{}{}
	select {
	case <-release:
	case <-time.After(testWait):
	}
}

// frame is a frame read from the server, copied out of the Framer's
// buffers so that it can be kept.
type frame struct {
	typ      http2.FrameType
	id       uint32
	length   uint32
	end      bool
	ack      bool
	fields   []hpack.HeaderField
	data     []byte
	code     http2.ErrCode
	lastID   uint32
	ping     [8]byte
	inc      uint32
	settings []http2.Setting
}

func (f *frame) String() string {
	return fmt.Sprintf("%v stream=%d len=%d end=%v code=%v fields=%v", f.typ, f.id, f.length, f.end, f.code, f.fields)
}

func (f *frame) field(name string) string {
	for _, hf := range f.fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

func (f *frame) has(name string) bool {
	for _, hf := range f.fields {
		if hf.Name == name {
			return true
		}
	}
	return false
}

// peer is a client that keeps the flow-control books both ways: it fails
// the test if the server sends DATA beyond the windows the client gave,
// and it sends DATA only within the server's windows.
type peer struct {
	*rawClient
	// What the server may still send: on the connection, per stream, and
	// a new stream (the client's SETTINGS_INITIAL_WINDOW_SIZE).
	recvInit, recvConn int64
	recvStream         map[uint32]int64
	// What the client may still send.
	sendInit, sendConn int64
	sendStream         map[uint32]int64
	sendMax            uint32
	// autoWU gives back every DATA byte received at once.
	autoWU         bool
	pending        []*frame
	settingsAcks   int
	serverSettings []http2.Setting
	ended          map[uint32]bool
}

func newPeer(t *testing.T, ts *testServer, settings ...http2.Setting) *peer {
	t.Helper()
	p := &peer{rawClient: dial(t, ts, settings...), recvInit: initialWindow, recvConn: initialWindow,
		recvStream: map[uint32]int64{}, sendInit: initialWindow, sendConn: initialWindow,
		sendStream: map[uint32]int64{}, sendMax: maxFrameSize, ended: map[uint32]bool{}}
	for _, s := range settings {
		if s.ID == http2.SettingInitialWindowSize {
			p.recvInit = int64(s.Val)
		}
	}
	return p
}

// open sends HEADERS opening stream id.
func (p *peer) open(id uint32, end bool, fields ...string) {
	p.t.Helper()
	p.recvStream[id] = p.recvInit
	p.sendStream[id] = p.sendInit
	p.headers(id, end, fields...)
}

// read returns the next frame, kept ones first.
func (p *peer) read() *frame {
	p.t.Helper()
	if len(p.pending) > 0 {
		f := p.pending[0]
		p.pending = p.pending[1:]
		return f
	}
	return p.readWire()
}

func (p *peer) readWire() *frame {
	p.t.Helper()
	f, err := p.fr.ReadFrame()
	if err != nil {
		p.t.Fatalf("reading a frame: %v", err)
	}
	return p.took(f)
}

// took books a frame read and copies it.
func (p *peer) took(f http2.Frame) *frame {
	p.t.Helper()
	h := f.Header()
	out := &frame{typ: h.Type, id: h.StreamID, length: h.Length}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		out.ack = f.IsAck()
		if out.ack {
			p.settingsAcks++
			break
		}
		f.ForeachSetting(func(s http2.Setting) error {
			out.settings = append(out.settings, s)
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - p.sendInit
				for id := range p.sendStream {
					p.sendStream[id] += delta
				}
				p.sendInit = int64(s.Val)
			case http2.SettingMaxFrameSize:
				p.sendMax = s.Val
			}
			return nil
		})
		p.serverSettings = append(p.serverSettings, out.settings...)
		p.fr.WriteSettingsAck()
	case *http2.WindowUpdateFrame:
		out.inc = f.Increment
		if h.StreamID == 0 {
			p.sendConn += int64(f.Increment)
		} else if _, ok := p.sendStream[h.StreamID]; ok {
			p.sendStream[h.StreamID] += int64(f.Increment)
		}
	case *http2.PingFrame:
		out.ack, out.ping = f.IsAck(), f.Data
	case *http2.MetaHeadersFrame:
		out.end = f.StreamEnded()
		out.fields = append([]hpack.HeaderField(nil), f.Fields...)
	case *http2.DataFrame:
		out.end = f.StreamEnded()
		out.data = bytes.Clone(f.Data())
		n := int64(h.Length)
		if n > maxFrameSize {
			p.t.Fatalf("DATA of %d bytes on stream %d: over the client's SETTINGS_MAX_FRAME_SIZE", n, h.StreamID)
		}
		w, ok := p.recvStream[h.StreamID]
		if !ok {
			p.t.Fatalf("DATA on stream %d, which the client never opened", h.StreamID)
		}
		if n > p.recvConn || n > w {
			p.t.Fatalf("DATA of %d bytes on stream %d beyond the client's windows (connection %d, stream %d)",
				n, h.StreamID, p.recvConn, w)
		}
		p.recvConn -= n
		p.recvStream[h.StreamID] = w - n
		if p.autoWU && n > 0 {
			p.windowUpdate(0, n)
			if !out.end {
				p.windowUpdate(h.StreamID, n)
			}
		}
	case *http2.RSTStreamFrame:
		out.code = f.ErrCode
	case *http2.GoAwayFrame:
		out.code, out.lastID = f.ErrCode, f.LastStreamID
	}
	return out
}

// nextFrame returns the next frame that is not SETTINGS, WINDOW_UPDATE or
// PING.
func (p *peer) nextFrame() *frame {
	p.t.Helper()
	for {
		f := p.read()
		switch f.typ {
		case http2.FrameSettings, http2.FrameWindowUpdate, http2.FramePing:
			continue
		}
		return f
	}
}

// windowUpdate gives the server n more bytes on stream id (0: the
// connection).
func (p *peer) windowUpdate(id uint32, n int64) {
	p.t.Helper()
	if err := p.fr.WriteWindowUpdate(id, uint32(n)); err != nil {
		p.t.Fatal(err)
	}
	if id == 0 {
		p.recvConn += n
	} else {
		p.recvStream[id] += n
	}
}

// sendData sends data on stream id within the server's windows, reading
// (and keeping) frames while they are closed.
func (p *peer) sendData(id uint32, data []byte, end bool) {
	p.t.Helper()
	if len(data) == 0 {
		if err := p.fr.WriteData(id, end, nil); err != nil {
			p.t.Fatal(err)
		}
		return
	}
	for len(data) > 0 {
		n := min(int64(len(data)), int64(p.sendMax), p.sendConn, p.sendStream[id])
		if n <= 0 {
			f := p.readWire()
			switch f.typ {
			case http2.FrameSettings, http2.FrameWindowUpdate, http2.FramePing:
			default:
				p.pending = append(p.pending, f)
			}
			continue
		}
		chunk := data[:n]
		data = data[n:]
		if err := p.fr.WriteData(id, end && len(data) == 0, chunk); err != nil {
			p.t.Fatal(err)
		}
		p.sendConn -= n
		p.sendStream[id] -= n
	}
}

// ping sends a PING and reads up to its ACK, returning the frames (other
// than SETTINGS and WINDOW_UPDATE) read before it.
func (p *peer) ping(data [8]byte) []*frame {
	p.t.Helper()
	if err := p.fr.WritePing(false, data); err != nil {
		p.t.Fatal(err)
	}
	var before []*frame
	for {
		f := p.read()
		switch f.typ {
		case http2.FrameSettings, http2.FrameWindowUpdate:
			continue
		case http2.FramePing:
			if f.ack && f.ping == data {
				return before
			}
		}
		before = append(before, f)
	}
}

// waitClosed reads until the server closes the connection, failing on a
// response frame for a stream in refused and on a timeout.
func (p *peer) waitClosed(refused ...uint32) {
	p.t.Helper()
	p.nc.SetDeadline(time.Now().Add(testWait))
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.t.Fatalf("the server did not close the connection: %v", err)
			}
			return
		}
		for _, id := range refused {
			if f.Header().StreamID == id {
				p.t.Fatalf("a frame on stream %d, which should have been ignored: %v", id, f)
			}
		}
		p.took(f)
	}
}

// resp is one stream's response as collect saw it.
type resp struct {
	info       []string
	status     string
	header     http.Header
	body       bytes.Buffer
	dataFrames int
	trailer    http.Header
	ended      bool
	reset      bool
	code       http2.ErrCode
	firstEnd   bool // the HEADERS of the final status ended the stream
}

func regular(fields []hpack.HeaderField) http.Header {
	h := http.Header{}
	for _, hf := range fields {
		if !strings.HasPrefix(hf.Name, ":") {
			h[http.CanonicalHeaderKey(hf.Name)] = append(h[http.CanonicalHeaderKey(hf.Name)], hf.Value)
		}
	}
	return h
}

// collect reads the responses of streams ids until each has ended or been
// reset. It fails on frames out of order, on frames for other streams (but
// RST_STREAM NO_ERROR on a stream that ended) and on GOAWAY.
func (p *peer) collect(ids ...uint32) map[uint32]*resp {
	p.t.Helper()
	rs := map[uint32]*resp{}
	for _, id := range ids {
		rs[id] = &resp{}
	}
	for left := len(ids); left > 0; {
		f := p.nextFrame()
		r := rs[f.id]
		if r == nil || r.ended || r.reset {
			if f.typ == http2.FrameRSTStream && f.code == http2.ErrCodeNo && (p.ended[f.id] || r != nil) {
				continue
			}
			p.t.Fatalf("unexpected frame (waiting for streams %v): %v", ids, f)
		}
		switch f.typ {
		case http2.FrameHeaders:
			status := f.field(":status")
			switch {
			case r.status == "" && status == "":
				p.t.Fatalf("HEADERS without :status on stream %d: %v", f.id, f)
			case r.status == "" && status[0] == '1':
				if f.end {
					p.t.Fatalf("a %s response ended stream %d", status, f.id)
				}
				r.info = append(r.info, status)
			case r.status == "":
				r.status, r.header, r.firstEnd = status, regular(f.fields), f.end
			default:
				if !f.end {
					p.t.Fatalf("HEADERS after the final ones on stream %d without END_STREAM: %v", f.id, f)
				}
				if status != "" || len(regular(f.fields)) != len(f.fields) {
					p.t.Fatalf("a pseudo-header in the trailers of stream %d: %v", f.id, f)
				}
				r.trailer = regular(f.fields)
			}
		case http2.FrameData:
			if r.status == "" {
				p.t.Fatalf("DATA before HEADERS on stream %d", f.id)
			}
			r.body.Write(f.data)
			if len(f.data) > 0 {
				r.dataFrames++
			}
		case http2.FrameRSTStream:
			r.reset, r.code = true, f.code
			p.ended[f.id] = true
			left--
			continue
		case http2.FrameGoAway:
			p.t.Fatalf("GOAWAY %v (last stream %d) waiting for streams %v", f.code, f.lastID, ids)
		}
		if f.end {
			r.ended = true
			p.ended[f.id] = true
			left--
		}
	}
	return rs
}

func (p *peer) response(id uint32) *resp {
	p.t.Helper()
	return p.collect(id)[id]
}

// expectReset checks that stream id was reset with code and had no
// response.
func (p *peer) expectReset(id uint32, code http2.ErrCode, what string) {
	p.t.Helper()
	r := p.response(id)
	if !r.reset || r.code != code || r.status != "" {
		p.t.Errorf("%s: stream %d: got status %q reset=%v %v, want RST_STREAM %v and no response",
			what, id, r.status, r.reset, r.code, code)
	}
}

func post(path string, more ...string) []string {
	return append([]string{":method", "POST", ":scheme", "http", ":authority", "example.com", ":path", path}, more...)
}

// bodySummary is what the echo handlers answer: length, error and hash.
func bodySummary(b []byte, err error, cl int64) string {
	return fmt.Sprintf("n=%d err=%v cl=%d sha=%x", len(b), err, cl, sha256.Sum256(b))
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

var echoSummary = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	io.WriteString(w, bodySummary(b, err, r.ContentLength))
})

// 1. A body across several DATA frames, with and without content-length.
func TestConformanceRequestBodyAcrossFrames(t *testing.T) {
	ts := startServer(t, &Server{}, echoSummary)
	p := newPeer(t, ts)
	body := pattern(40000)

	p.open(1, false, post("/cl", "content-length", "40000")...)
	p.sendData(1, body[:16384], false)
	p.sendData(1, body[16384:32768], false)
	p.sendData(1, body[32768:], true)
	if r := p.response(1); r.status != "200" || r.body.String() != bodySummary(body, nil, 40000) {
		t.Errorf("with content-length: %s %q", r.status, r.body.String())
	}

	// No content-length; END_STREAM on an empty DATA frame; a padded frame.
	p.open(3, false, post("/nocl")...)
	p.sendData(3, body[:10000], false)
	if err := p.fr.WriteDataPadded(3, false, body[10000:20000], make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	p.sendConn -= 10101
	p.sendStream[3] -= 10101
	p.sendData(3, body[20000:], false)
	p.sendData(3, nil, true)
	if r := p.response(3); r.status != "200" || r.body.String() != bodySummary(body, nil, -1) {
		t.Errorf("without content-length: %s %q", r.status, r.body.String())
	}
}

// 1. A body over the stream window (1 MiB) and the connection window (4
// MiB) arrives whole: the server gives the windows back as the handler
// reads. The client never sends beyond them (sendData), and the server
// would answer that with FLOW_CONTROL_ERROR.
func TestConformanceRequestBodyBeyondWindows(t *testing.T) {
	n := 5<<20 + 12345
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Small reads, as a slow handler does.
		var b bytes.Buffer
		buf := make([]byte, 3000)
		var err error
		for {
			var k int
			k, err = r.Body.Read(buf)
			b.Write(buf[:k])
			if err != nil {
				break
			}
		}
		if err == io.EOF {
			err = nil
		}
		io.WriteString(w, bodySummary(b.Bytes(), err, r.ContentLength))
	}))
	p := newPeer(t, ts)
	p.nc.SetDeadline(time.Now().Add(60 * time.Second))
	body := pattern(n)
	p.open(1, false, post("/big", "content-length", strconv.Itoa(n))...)
	p.sendData(1, body, true)
	r := p.response(1)
	if r.status != "200" || r.body.String() != bodySummary(body, nil, int64(n)) {
		t.Fatalf("got %s %q", r.status, r.body.String())
	}
	var win uint32
	for _, s := range p.serverSettings {
		if s.ID == http2.SettingInitialWindowSize {
			win = s.Val
		}
	}
	if win != defaultStreamWindow {
		t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d, want %d", win, defaultStreamWindow)
	}
}

// 2. DATA that disagree with content-length reset the stream
// (PROTOCOL_ERROR), and the handler's body read fails.
func TestConformanceContentLengthMismatch(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	results := make(chan result, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		results <- result{len(b), err}
	}))
	p := newPeer(t, ts)
	id := uint32(1)
	for _, tc := range []struct {
		name   string
		frames [][]byte // the last one ends the stream
	}{
		{"more in one frame", [][]byte{make([]byte, 15)}},
		{"more across frames", [][]byte{make([]byte, 6), make([]byte, 6)}},
		{"more, then the end on an empty frame", [][]byte{make([]byte, 11), nil}},
		{"fewer, END_STREAM early", [][]byte{make([]byte, 5)}},
		{"fewer across frames", [][]byte{make([]byte, 4), make([]byte, 5)}},
		{"none, END_STREAM on an empty frame", [][]byte{nil}},
	} {
		p.open(id, false, post("/cl", "content-length", "10")...)
		for i, d := range tc.frames {
			p.sendData(id, d, i == len(tc.frames)-1)
		}
		// (An RST_STREAM NO_ERROR may come first:
		// TestConformanceContentLengthResetIsProtocolError.)
		if codes := p.resetCodes(id, http2.ErrCodeProtocol); codes[len(codes)-1] != http2.ErrCodeProtocol {
			t.Errorf("%s: resets %v, want PROTOCOL_ERROR", tc.name, codes)
		}
		// (DATA sent after the overflow may be answered with STREAM_CLOSED:
		// TestConformanceFramesAfterOwnResetIgnored.)
		for _, f := range p.ping([8]byte{7}) {
			if f.typ != http2.FrameRSTStream || f.id != id || f.code == http2.ErrCodeProtocol {
				t.Fatalf("%s: after the reset: %v", tc.name, f)
			}
		}
		res := recv(t, results, "the handler's read: "+tc.name)
		if res.err == nil {
			t.Errorf("%s: the handler read %d bytes and then io.EOF", tc.name, res.n)
		}
		id += 2
	}
	// The connection still serves.
	p.open(id, false, post("/cl", "content-length", "3")...)
	p.sendData(id, []byte("abc"), true)
	p.response(id)
	if res := recv(t, results, "the handler's read"); res.err != nil || res.n != 3 {
		t.Errorf("a good body: %d %v", res.n, res.err)
	}
}

// resetCodes reads stream id's frames until it is reset with code (or
// with anything but NO_ERROR), failing on a response; it returns the codes
// of the resets read.
func (p *peer) resetCodes(id uint32, code http2.ErrCode) []http2.ErrCode {
	p.t.Helper()
	var codes []http2.ErrCode
	for {
		f := p.nextFrame()
		if f.id != id || f.typ != http2.FrameRSTStream {
			p.t.Fatalf("waiting for stream %d's reset: %v", id, f)
		}
		codes = append(codes, f.code)
		if f.code == code || f.code != http2.ErrCodeNo {
			p.ended[id] = true
			return codes
		}
	}
}

// 2. A stream error is one RST_STREAM with its code: the handler, woken by
// the failed read, must not end the stream first with NO_ERROR (which
// says "the response is complete, stop sending", RFC 9113 §8.1).
func TestConformanceContentLengthResetIsProtocolError(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
	}))
	p := newPeer(t, ts)
	p.nc.SetDeadline(time.Now().Add(30 * time.Second))
	bad := 0
	const n = 300
	for i := 0; i < n; i++ {
		id := uint32(2*i + 1)
		p.open(id, false, post("/", "content-length", "10")...)
		p.sendData(id, make([]byte, 11), false)
		if codes := p.resetCodes(id, http2.ErrCodeProtocol); len(codes) != 1 {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d streams were reset with NO_ERROR before PROTOCOL_ERROR", bad, n)
	}
}

// 2. A request ended by its HEADERS that declares content-length: 5 has
// DATA totalling 0: malformed (RFC 9113 §8.1.1).
func TestConformanceContentLengthOnEndedHeaders(t *testing.T) {
	var called atomic.Int32
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
	}))
	p := newPeer(t, ts)
	p.open(1, true, post("/", "content-length", "5")...)
	p.expectReset(1, http2.ErrCodeProtocol, "content-length 5, no DATA")
	if called.Load() != 0 {
		t.Error("the handler was called")
	}
}

// 2. A content-length that is not one number must not let a body through
// that disagrees with r.ContentLength.
func TestConformanceContentLengthInvalid(t *testing.T) {
	type result struct {
		n   int
		cl  int64
		err error
	}
	results := make(chan result, 4)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		results <- result{len(b), r.ContentLength, err}
	}))
	p := newPeer(t, ts)
	p.open(1, false, post("/", "content-length", "abc")...)
	p.sendData(1, []byte("abc"), true)
	r := p.response(1)
	if r.reset && r.code == http2.ErrCodeProtocol {
		return
	}
	select {
	case res := <-results:
		if res.err == nil && int64(res.n) != res.cl {
			t.Errorf("content-length abc: the handler read %d bytes to io.EOF with r.ContentLength %d (response %s)", res.n, res.cl, r.status)
		}
	case <-time.After(testWait):
		t.Fatal("the handler did not run")
	}
}

// 3. Malformed requests are reset (PROTOCOL_ERROR) and reach no handler;
// the connection (and its HPACK state) goes on.
func TestConformanceMalformedRequests(t *testing.T) {
	var mu sync.Mutex
	var called []string
	ts, served := startServerConns(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		called = append(called, r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	p := newPeer(t, ts)
	g := func(more ...string) []string { return append(get("/bad"), more...) }
	cases := []struct {
		name   string
		fields []string
	}{
		{"connection", g("connection", "keep-alive")},
		{"keep-alive", g("keep-alive", "timeout=5")},
		{"proxy-connection", g("proxy-connection", "keep-alive")},
		{"transfer-encoding", g("transfer-encoding", "chunked")},
		{"upgrade", g("upgrade", "websocket")},
		{"te: gzip", g("te", "gzip")},
		{"te: trailers, gzip", g("te", "trailers, gzip")},
		{"upper-case name", g("X-Upper", "1")},
		{"missing :path", []string{":method", "GET", ":scheme", "http", ":authority", "example.com"}},
		{"missing :method", []string{":scheme", "http", ":authority", "example.com", ":path", "/bad"}},
		{"missing :scheme", []string{":method", "GET", ":authority", "example.com", ":path", "/bad"}},
		{":protocol", g(":protocol", "websocket")},
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "example.com", ":path", "/bad"}},
		{"host differs from :authority", g("host", "other.example")},
		{"two host fields", g("host", "example.com", "host", "example.com")},
		{"two host fields, no :authority", []string{":method", "GET", ":scheme", "http", ":path", "/bad", "host", "a.example", "host", "b.example"}},
		{"empty :path", []string{":method", "GET", ":scheme", "http", ":authority", "example.com", ":path", ""}},
		{"path not starting with /", []string{":method", "GET", ":scheme", "http", ":authority", "example.com", ":path", "bad"}},
		{"absolute-form path", []string{":method", "GET", ":scheme", "http", ":authority", "example.com", ":path", "http://example.com/bad"}},
		{"empty :method", []string{":method", "", ":scheme", "http", ":authority", "example.com", ":path", "/bad"}},
		{"pseudo-header after a regular one", []string{":method", "GET", ":scheme", "http", "x-a", "1", ":authority", "example.com", ":path", "/bad"}},
		{"repeated :path", g(":path", "/bad2")},
		{"unknown pseudo-header", g(":foo", "bar")},
		{":status in a request", g(":status", "200")},
		{"userinfo in :authority", []string{":method", "GET", ":scheme", "http", ":authority", "u@example.com", ":path", "/bad"}},
		{"NUL in a value", g("x-a", "a\x00b")},
		{"newline in a value", g("x-a", "a\nb")},
	}
	id := uint32(1)
	for _, tc := range cases {
		p.open(id, true, tc.fields...)
		p.expectReset(id, http2.ErrCodeProtocol, tc.name)
		id += 2
	}
	// A malformed request with a body: its DATA must not reach anyone, nor
	// end the connection.
	p.open(id, false, post("/bad", "connection", "close")...)
	p.expectReset(id, http2.ErrCodeProtocol, "connection, with a body")
	p.fr.WriteData(id, true, []byte("ignored"))
	// (The server answers RST_STREAM STREAM_CLOSED:
	// TestConformanceFramesAfterOwnResetIgnored.)
	for _, f := range p.ping([8]byte{5}) {
		if f.typ != http2.FrameRSTStream || f.id != id {
			t.Fatalf("after DATA on a refused stream: %v", f)
		}
	}
	id += 2

	p.open(id, true, get("/good")...)
	if r := p.response(id); r.status != "200" || r.body.String() != "ok /good" {
		t.Errorf("after the malformed requests: %s %q", r.status, r.body.String())
	}
	p.nc.Close()
	waitServed(t, served, "after its client closed")
	mu.Lock()
	defer mu.Unlock()
	if len(called) != 1 {
		t.Errorf("handlers called for %q, want only /good", called)
	}
}

// RFC 9113 §5.1 (closed): "An endpoint MUST ignore frames that it receives
// on closed streams after it has sent a RST_STREAM frame": the client's
// DATA, sent before it saw the server's RST_STREAM, gets no answer.
func TestConformanceFramesAfterOwnResetIgnored(t *testing.T) {
	ts := startServer(t, &Server{MaxConcurrentStreams: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	p := newPeer(t, ts)
	p.open(1, false, post("/bad", "connection", "close")...)
	p.fr.WriteData(1, false, []byte("in flight"))
	p.expectReset(1, http2.ErrCodeProtocol, "a malformed request")
	p.fr.WriteData(1, true, []byte("more"))
	p.open(3, false, post("/block")...) // takes the one slot
	p.open(5, false, post("/refused")...)
	p.expectReset(5, http2.ErrCodeRefusedStream, "over the limit")
	p.fr.WriteData(5, true, []byte("in flight"))
	for _, f := range p.ping([8]byte{6}) {
		t.Errorf("after the server's reset, the client's DATA was answered: %v", f)
	}
}

// 4. Request trailers reach r.Trailer once the body has been read to EOF.
func TestConformanceRequestTrailers(t *testing.T) {
	type result struct {
		declared bool
		before   string
		body     string
		err      error
		after    http.Header
	}
	results := make(chan result, 1)
	started := make(chan struct{}, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res result
		_, res.declared = r.Trailer["X-Checksum"]
		res.before = r.Trailer.Get("X-Checksum")
		started <- struct{}{}
		b, err := io.ReadAll(r.Body)
		res.body, res.err, res.after = string(b), err, r.Trailer.Clone()
		results <- res
	}))
	p := newPeer(t, ts)
	p.open(1, false, post("/", "trailer", "X-Checksum, X-Other")...)
	recv(t, started, "the handler")
	p.sendData(1, []byte("hello "), false)
	p.sendData(1, []byte("world"), false)
	p.headers(1, true, "x-checksum", "abc", "x-other", "1", "x-other", "2")
	r := p.response(1)
	res := recv(t, results, "the handler")
	if r.status != "200" || !res.declared || res.before != "" || res.body != "hello world" || res.err != nil {
		t.Fatalf("got %s %+v", r.status, res)
	}
	if res.after.Get("X-Checksum") != "abc" || strings.Join(res.after["X-Other"], ",") != "1,2" {
		t.Errorf("trailers after EOF: %v", res.after)
	}

	// Trailers without END_STREAM, or with a pseudo-header, are malformed.
	p.open(3, false, post("/", "trailer", "X-Checksum")...)
	recv(t, started, "the handler")
	p.sendData(3, []byte("x"), false)
	p.headers(3, false, "x-checksum", "abc")
	p.expectReset(3, http2.ErrCodeProtocol, "trailers without END_STREAM")
	if res := recv(t, results, "the handler"); res.err == nil {
		t.Errorf("trailers without END_STREAM: the body read ended with io.EOF")
	}
	p.open(5, false, post("/", "trailer", "X-Checksum")...)
	recv(t, started, "the handler")
	p.sendData(5, []byte("x"), false)
	p.headers(5, true, ":path", "/x", "x-checksum", "abc")
	p.expectReset(5, http2.ErrCodeProtocol, "a pseudo-header in trailers")
	if res := recv(t, results, "the handler"); res.err == nil {
		t.Errorf("a pseudo-header in trailers: the body read ended with io.EOF")
	}
}

// 4. net/http: r.Trailer holds only the declared keys until the body's
// EOF; a handler may look at it (http.Request.Clone does, so
// httputil.ReverseProxy does) before it reads the body. The trailers must
// not be written into the handler's map meanwhile by another goroutine.
func TestConformanceRequestTrailersNotWrittenBeforeEOF(t *testing.T) {
	results := make(chan string, 1)
	started := make(chan struct{}, 1)
	sent := make(chan struct{})
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hold(started, sent)
		clone := r.Clone(r.Context()) // reads r.Trailer
		before := clone.Trailer.Get("X-Checksum")
		io.ReadAll(r.Body)
		results <- before + "|" + r.Trailer.Get("X-Checksum")
	}))
	p := newPeer(t, ts)
	p.open(1, false, post("/", "trailer", "X-Checksum")...)
	recv(t, started, "the handler")
	p.sendData(1, []byte("body"), false)
	p.headers(1, true, "x-checksum", "abc")
	p.ping([8]byte{4}) // the server has taken the trailers
	close(sent)
	if got := recv(t, results, "the handler"); got != "|abc" {
		t.Errorf("trailer before EOF | after: %q, want %q", got, "|abc")
	}
	p.response(1)
}

// 4. Response trailers, declared or with http.TrailerPrefix, arrive in a
// final HEADERS frame with END_STREAM, and the response has no
// content-length.
func TestConformanceResponseTrailers(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/declared":
			w.Header().Set("Trailer", "X-T1, X-T2")
			w.WriteHeader(200)
			io.WriteString(w, "body")
			w.Header().Set("X-T1", "a")
			w.Header().Set("X-T2", "b")
		case "/prefix":
			io.WriteString(w, "body")
			w.Header().Set(http.TrailerPrefix+"X-Late", "z")
		case "/flushed":
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("Grpc-Status", "0")
		case "/nobody":
			w.Header().Set("Trailer", "X-T")
			w.WriteHeader(200)
			w.Header().Set("X-T", "v")
		case "/big":
			w.Header().Set("Trailer", "X-T")
			w.Write(make([]byte, 40000))
			w.Header().Set("X-T", "v")
		}
	}))
	p := newPeer(t, ts)
	p.autoWU = true
	for i, tc := range []struct {
		path    string
		body    int
		trailer http.Header
	}{
		{"/declared", 4, http.Header{"X-T1": {"a"}, "X-T2": {"b"}}},
		{"/prefix", 4, http.Header{"X-Late": {"z"}}},
		{"/flushed", 4, http.Header{"Grpc-Status": {"0"}}},
		{"/nobody", 0, http.Header{"X-T": {"v"}}},
		{"/big", 40000, http.Header{"X-T": {"v"}}},
	} {
		id := uint32(2*i + 1)
		p.open(id, true, get(tc.path)...)
		r := p.response(id)
		if r.status != "200" || r.body.Len() != tc.body || r.firstEnd || r.reset {
			t.Errorf("%s: %s body %d reset=%v", tc.path, r.status, r.body.Len(), r.reset)
		}
		if r.trailer == nil {
			t.Errorf("%s: no trailers (the stream ended on DATA)", tc.path)
		} else if fmt.Sprint(r.trailer) != fmt.Sprint(tc.trailer) {
			t.Errorf("%s: trailers %v, want %v", tc.path, r.trailer, tc.trailer)
		}
		if v, ok := r.header["Content-Length"]; ok {
			t.Errorf("%s: a response with trailers has content-length %v", tc.path, v)
		}
		for k := range r.header {
			if strings.HasPrefix(k, http.TrailerPrefix) || strings.HasPrefix(strings.ToLower(k), "trailer:") {
				t.Errorf("%s: the header carries %q", tc.path, k)
			}
		}
	}
}

// net/http: "Changing the header map after a call to WriteHeader (or
// Write) has no effect unless ... the modified headers are trailers."
func TestConformanceHeaderChangesAfterWriteHeaderIgnored(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/writeheader":
			w.Header().Set("X-A", "1")
			w.WriteHeader(200)
			w.Header().Set("X-A", "2")
			w.Header().Set("X-B", "b")
			io.WriteString(w, "body")
		case "/write":
			io.WriteString(w, "body")
			w.Header().Set("X-C", "c")
		case "/trailer":
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "body")
			w.Header().Set("X-T", "v")
		}
	}))
	p := newPeer(t, ts)
	p.open(1, true, get("/writeheader")...)
	if r := p.response(1); r.header.Get("X-A") != "1" || r.header.Get("X-B") != "" {
		t.Errorf("/writeheader: header %v, want X-A: 1 and no X-B", r.header)
	}
	p.open(3, true, get("/write")...)
	if r := p.response(3); r.header.Get("X-C") != "" {
		t.Errorf("/write: header %v, want no X-C", r.header)
	}
	p.open(5, true, get("/trailer")...)
	if r := p.response(5); r.header.Get("X-T") != "" || r.trailer.Get("X-T") != "v" {
		t.Errorf("/trailer: header %v trailer %v: X-T must be a trailer only", r.header, r.trailer)
	}
}

// RFC 9113 §8.2.2: a response never carries connection-specific fields,
// whatever the spelling of the handler's keys.
func TestConformanceResponseConnectionFieldsDropped(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if r.URL.Path == "/canonical" {
			h.Set("Connection", "close")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Proxy-Connection", "close")
			h.Set("Transfer-Encoding", "chunked")
			h.Set("Upgrade", "h2c")
		} else {
			h["connection"] = []string{"close"}
			h["keep-alive"] = []string{"timeout=5"}
			h["proxy-connection"] = []string{"close"}
			h["transfer-encoding"] = []string{"chunked"}
			h["upgrade"] = []string{"h2c"}
		}
		io.WriteString(w, "ok")
	}))
	p := newPeer(t, ts)
	for i, path := range []string{"/canonical", "/raw"} {
		id := uint32(2*i + 1)
		p.open(id, true, get(path)...)
		r := p.response(id)
		for _, k := range connHeaders {
			if v, ok := r.header[k]; ok {
				t.Errorf("%s: the response carries %s: %v", path, k, v)
			}
		}
	}
}

// 5. The server's DATA stay within the stream window the client gives
// (SETTINGS_INITIAL_WINDOW_SIZE 10), including a change of that setting
// that makes the window negative (RFC 9113 §6.9.2).
func TestConformanceStreamFlowControl(t *testing.T) {
	body := strings.Repeat("0123456789", 10)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	p := newPeer(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	p.open(1, true, get("/")...)
	var got strings.Builder
	var ended bool
	readTo := func(n int) {
		t.Helper()
		for got.Len() < n && !ended {
			f := p.nextFrame()
			if f.id != 1 {
				t.Fatalf("unexpected %v", f)
			}
			switch f.typ {
			case http2.FrameData:
				got.Write(f.data)
				ended = f.end
			case http2.FrameHeaders:
				if f.field(":status") != "200" || f.end {
					t.Fatalf("HEADERS %v", f)
				}
			default:
				t.Fatalf("unexpected %v", f)
			}
		}
	}
	readTo(10) // (took fails the test on DATA beyond the window)
	// Nothing more comes while the window is shut.
	for _, f := range p.ping([8]byte{1}) {
		t.Fatalf("with the window shut: %v", f)
	}
	p.windowUpdate(1, 25)
	readTo(35)
	// The window is 0 again. SETTINGS_INITIAL_WINDOW_SIZE 0 makes it -10:
	// a WINDOW_UPDATE of 10 leaves it at 0, 15 more let 15 bytes through.
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	p.recvStream[1] -= 10
	p.recvInit = 0
	acks := p.settingsAcks
	for p.settingsAcks == acks {
		if f := p.read(); f.typ != http2.FrameSettings && f.typ != http2.FrameWindowUpdate {
			t.Fatalf("waiting for the SETTINGS ACK: %v", f)
		}
	}
	p.windowUpdate(1, 10)
	for _, f := range p.ping([8]byte{2}) {
		t.Fatalf("with the window at 0 after SETTINGS: %v", f)
	}
	p.windowUpdate(1, 15)
	readTo(50)
	// Raising the setting opens the window by the difference.
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 50})
	p.recvStream[1] += 50
	readTo(100)
	if got.String() != body || !ended {
		t.Errorf("got %q ended=%v", got.String(), ended)
	}
}

// 5. The connection window (65,535 until the client sends WINDOW_UPDATE on
// stream 0) bounds the DATA of all streams together.
func TestConformanceConnFlowControl(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(pattern(n))
	}))
	p := newPeer(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	p.open(1, true, get("/?n=40000")...)
	p.open(3, true, get("/?n=40000")...)
	got := map[uint32]int{}
	ended := map[uint32]bool{}
	// take reads one frame: DATA counted per stream, HEADERS skipped.
	take := func() {
		t.Helper()
		f := p.nextFrame()
		switch f.typ {
		case http2.FrameData:
			got[f.id] += len(f.data)
			if f.end {
				ended[f.id] = true
			}
		case http2.FrameHeaders:
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	for got[1]+got[3] < initialWindow {
		take()
	}
	for _, f := range p.ping([8]byte{3}) {
		if f.typ != http2.FrameData || f.length != 0 {
			t.Fatalf("with the connection window shut: %v", f)
		}
		ended[f.id] = f.end // an empty DATA takes no window
	}
	p.windowUpdate(0, 80000-initialWindow)
	for !ended[1] || !ended[3] {
		take()
	}
	if got[1] != 40000 || got[3] != 40000 {
		t.Errorf("got %v", got)
	}
}

// A server that asks for windows smaller than the protocol's 65,535 must
// still take what a client sent before it saw (or could see) the server's
// SETTINGS (RFC 9113 §6.9.2, §6.5.3); the connection window can never be
// made smaller than 65,535 at all.
func TestConformanceSmallWindowsBeforeSettingsAck(t *testing.T) {
	for _, srv := range []*Server{{StreamWindow: 1000}, {ConnWindow: 1000}} {
		ts := startServer(t, srv, echoSummary)
		p := newPeer(t, ts)
		body := pattern(20000)
		p.open(1, false, post("/", "content-length", "20000")...)
		// Without reading the server's SETTINGS: within the initial windows.
		p.fr.WriteData(1, false, body[:16384])
		p.fr.WriteData(1, true, body[16384:])
		r := p.response(1)
		if r.status != "200" || r.body.String() != bodySummary(body, nil, 20000) {
			t.Errorf("StreamWindow %d ConnWindow %d: %s %q", srv.StreamWindow, srv.ConnWindow, r.status, r.body.String())
		}
	}
}

// 6. MAX_CONCURRENT_STREAMS: a stream over the limit is refused; once one
// ends, a new one is served.
func TestConformanceMaxConcurrentStreams(t *testing.T) {
	started := make(chan string, 4)
	release := map[string]chan struct{}{"/b1": make(chan struct{}), "/b3": make(chan struct{})}
	var called sync.Map
	ts := startServer(t, &Server{MaxConcurrentStreams: 2}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Store(r.URL.Path, true)
		if ch := release[r.URL.Path]; ch != nil {
			started <- r.URL.Path
			select {
			case <-ch:
			case <-time.After(testWait):
			}
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	p := newPeer(t, ts)
	p.open(1, true, get("/b1")...)
	p.open(3, true, get("/b3")...)
	recv(t, started, "a handler")
	recv(t, started, "a handler")
	p.open(5, true, get("/refused")...)
	p.expectReset(5, http2.ErrCodeRefusedStream, "a third stream")
	if _, ok := called.Load("/refused"); ok {
		t.Error("the refused stream's handler ran")
	}
	var max uint32
	for _, s := range p.serverSettings {
		if s.ID == http2.SettingMaxConcurrentStreams {
			max = s.Val
		}
	}
	if max != 2 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 2", max)
	}
	close(release["/b1"])
	if r := p.response(1); r.body.String() != "ok /b1" {
		t.Fatalf("stream 1: %s %q", r.status, r.body.String())
	}
	// A new stream is served. The server may free the slot a moment after
	// the END_STREAM (TestConformanceStreamSlotFreedAtEndStream): retry a
	// refusal a few times.
	id := uint32(7)
	for ; ; id += 2 {
		p.open(id, true, get("/new")...)
		r := p.response(id)
		if r.reset && r.code == http2.ErrCodeRefusedStream && id < 7+2*50 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if r.body.String() != "ok /new" {
			t.Fatalf("a new stream after one ended: %s %q reset=%v %v", r.status, r.body.String(), r.reset, r.code)
		}
		break
	}
	close(release["/b3"])
	if r := p.response(3); r.body.String() != "ok /b3" {
		t.Fatalf("stream 3: %s %q", r.status, r.body.String())
	}
}

// 6. Once the client has seen a stream's END_STREAM (and sent its own), the
// stream is closed (RFC 9113 §5.1.2: it no longer counts) and the client
// may open another at once.
func TestConformanceStreamSlotFreedAtEndStream(t *testing.T) {
	ts := startServer(t, &Server{MaxConcurrentStreams: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	p := newPeer(t, ts)
	p.nc.SetDeadline(time.Now().Add(30 * time.Second))
	refused := 0
	const n = 500
	for i := 0; i < n; i++ {
		id := uint32(2*i + 1)
		p.open(id, true, get("/")...)
		if r := p.response(id); r.reset {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("%d of %d streams opened right after the previous one ended were refused", refused, n)
	}
}

// 7. The client's RST_STREAM cancels the request's context.
func TestConformanceClientResetCancelsContext(t *testing.T) {
	started := make(chan struct{}, 1)
	results := make(chan error, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/wait" {
			io.WriteString(w, "ok")
			return
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			results <- r.Context().Err()
		case <-time.After(testWait):
			results <- errors.New("the context was not canceled")
		}
	}))
	p := newPeer(t, ts)
	p.open(1, false, post("/wait")...)
	recv(t, started, "the handler")
	p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	if err := recv(t, results, "the handler's context"); !errors.Is(err, context.Canceled) {
		t.Errorf("the handler's context: %v", err)
	}
	p.open(3, true, get("/ok")...)
	if r := p.response(3); r.body.String() != "ok" {
		t.Errorf("after a reset: %s %q", r.status, r.body.String())
	}
}

// 8. Shutdown: GOAWAY NO_ERROR naming the stream in flight, which
// completes; a later stream is ignored; then the connection closes and
// ServeConn returns.
func TestConformanceShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var calledNew atomic.Int32
	srv := &Server{}
	ts, served := startServerConns(t, srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			calledNew.Add(1)
			io.WriteString(w, "new")
			return
		}
		hold(started, release)
		io.WriteString(w, "done")
	}))
	p := newPeer(t, ts)
	p.open(1, true, get("/slow")...)
	recv(t, started, "the handler")
	srv.Shutdown()
	f := p.nextFrame()
	if f.typ != http2.FrameGoAway || f.code != http2.ErrCodeNo || f.lastID != 1 {
		t.Fatalf("after Shutdown: %v last=%d, want GOAWAY NO_ERROR last stream 1", f, f.lastID)
	}
	p.open(3, true, get("/new")...)
	close(release)
	if r := p.response(1); r.status != "200" || r.body.String() != "done" {
		t.Errorf("the stream in flight: %s %q", r.status, r.body.String())
	}
	p.waitClosed(3)
	waitServed(t, served, "after Shutdown")
	if calledNew.Load() != 0 {
		t.Error("a stream opened after GOAWAY was served")
	}
}

// 8. Shutdown of a connection that has not yet sent its SETTINGS: the
// connection must still end (its client's SETTINGS must not undo the
// linger deadline).
func TestConformanceShutdownBeforeClientSettings(t *testing.T) {
	srv := &Server{}
	ts, served := startServerConns(t, srv, http.NotFoundHandler())
	nc, err := net.Dial("tcp", ts.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(testWait))
	io.WriteString(nc, http2.ClientPreface)
	deadline := time.Now().Add(testWait)
	for {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection was not served")
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.Shutdown()
	fr := http2.NewFramer(nc, nc)
	sawGoAway := false
	for !sawGoAway {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("before GOAWAY: %v", err)
		}
		_, sawGoAway = f.(*http2.GoAwayFrame)
	}
	fr.WriteSettings()
	for {
		if _, err := fr.ReadFrame(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection is still open %v after GOAWAY", testWait)
			}
			break
		}
	}
	waitServed(t, served, "after Shutdown")
}

// 9. IdleTimeout: a connection without streams gets GOAWAY NO_ERROR and is
// closed; not while a stream is open.
func TestConformanceIdleTimeout(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ts, served := startServerConns(t, &Server{IdleTimeout: 100 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			hold(started, release)
		}
		io.WriteString(w, "ok")
	}))
	p := newPeer(t, ts)
	p.open(1, true, get("/slow")...)
	recv(t, started, "the handler")
	time.Sleep(400 * time.Millisecond) // a chance for the idle timer to (wrongly) fire
	for _, f := range p.ping([8]byte{9}) {
		t.Fatalf("while a stream is open: %v", f)
	}
	close(release)
	if r := p.response(1); r.body.String() != "ok" {
		t.Fatalf("%s %q", r.status, r.body.String())
	}
	f := p.nextFrame()
	if f.typ != http2.FrameGoAway || f.code != http2.ErrCodeNo || f.lastID != 1 {
		t.Fatalf("when idle: %v last=%d, want GOAWAY NO_ERROR last stream 1", f, f.lastID)
	}
	p.waitClosed()
	waitServed(t, served, "after the idle GOAWAY")
}

func expectContinue(path string) []string {
	return post(path, "expect", "100-continue", "content-length", "5")
}

// 10. Expect: 100-continue is answered when the handler first reads the
// body, not before, and not at all if it never reads.
func TestConformanceExpectContinue(t *testing.T) {
	entered := make(chan struct{}, 1)
	readNow := make(chan struct{})
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusExpectationFailed)
			return
		}
		entered <- struct{}{}
		select {
		case <-readNow:
		case <-time.After(testWait):
		}
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %v", b, err)
	}))
	p := newPeer(t, ts)
	p.open(1, false, expectContinue("/read")...)
	recv(t, entered, "the handler")
	for _, f := range p.ping([8]byte{10}) {
		t.Fatalf("before the handler read: %v", f)
	}
	close(readNow)
	f := p.nextFrame()
	if f.typ != http2.FrameHeaders || f.id != 1 || f.field(":status") != "100" || f.end {
		t.Fatalf("once the handler reads: %v, want HEADERS :status 100", f)
	}
	p.sendData(1, []byte("hello"), true)
	if r := p.response(1); r.status != "200" || r.body.String() != "hello <nil>" {
		t.Errorf("%s %q", r.status, r.body.String())
	}

	p.open(3, false, expectContinue("/refuse")...)
	if r := p.response(3); len(r.info) != 0 || r.status != "417" {
		t.Errorf("a handler that does not read: informational %v, status %s", r.info, r.status)
	}
}

// 10. A handler that sent its final header before reading the body (an
// echo, a gRPC stream) must not make the server send 100 Continue after it:
// a HEADERS without END_STREAM after the final one is malformed (RFC 9113
// §8.1); x/net skips it (golang.org/issue/14030).
func TestConformanceNoContinueAfterFinalHeaders(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	p := newPeer(t, ts)
	p.open(1, false, expectContinue("/")...)
	f := p.nextFrame()
	if f.typ != http2.FrameHeaders || f.field(":status") != "200" {
		t.Fatalf("first frame %v, want HEADERS :status 200", f)
	}
	p.sendData(1, []byte("hello"), true)
	for ended := false; !ended; {
		f := p.nextFrame()
		if f.id != 1 {
			t.Fatalf("unexpected %v", f)
		}
		switch f.typ {
		case http2.FrameHeaders:
			if s := f.field(":status"); s != "" {
				t.Fatalf("a :status %s HEADERS after the final 200", s)
			}
		case http2.FrameRSTStream:
			t.Fatalf("reset: %v", f.code)
		}
		ended = f.end
	}
}

// 11. A handler's panic, http.ErrAbortHandler included, resets its stream
// (INTERNAL_ERROR) and nothing else.
func TestConformancePanicResetsOnlyItsStream(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/partial":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom after a flush")
		}
		io.WriteString(w, "ok")
	}))
	p := newPeer(t, ts)
	p.open(1, true, get("/panic")...)
	p.open(3, true, get("/abort")...)
	p.open(5, true, get("/partial")...)
	p.open(7, true, get("/ok")...)
	p.open(9, false, post("/panic")...)
	rs := p.collect(1, 3, 5, 7, 9)
	for _, id := range []uint32{1, 3, 9} {
		if r := rs[id]; !r.reset || r.code != http2.ErrCodeInternal || r.status != "" {
			t.Errorf("stream %d: %s reset=%v %v, want RST_STREAM INTERNAL_ERROR", id, r.status, r.reset, r.code)
		}
	}
	if r := rs[5]; !r.reset || r.code != http2.ErrCodeInternal || r.status != "200" || r.body.String() != "partial" {
		t.Errorf("stream 5: %s %q reset=%v %v", r.status, r.body.String(), r.reset, r.code)
	}
	if r := rs[7]; r.reset || r.body.String() != "ok" {
		t.Errorf("stream 7: %s %q reset=%v", r.status, r.body.String(), r.reset)
	}
	p.open(11, true, get("/ok")...)
	if r := p.response(11); r.body.String() != "ok" {
		t.Errorf("after the panics: %s %q", r.status, r.body.String())
	}
}

// 12. HEAD has no DATA payload; Write on a 204 or 304 returns
// http.ErrBodyNotAllowed and sends nothing.
func TestConformanceHeadAndNoBodyStatuses(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	results := make(chan result, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		case "/big":
			n, err := w.Write(make([]byte, 100000))
			results <- result{n, err}
			return
		}
		n, err := io.WriteString(w, "hello world")
		results <- result{n, err}
	}))
	p := newPeer(t, ts)
	head := func(path string) []string {
		return []string{":method", "HEAD", ":scheme", "http", ":authority", "example.com", ":path", path}
	}
	p.open(1, true, head("/")...)
	r := p.response(1)
	res := recv(t, results, "the handler")
	if r.status != "200" || r.dataFrames != 0 || res.n != 11 || res.err != nil {
		t.Errorf("HEAD: %s, %d DATA frames with a payload; Write %d %v", r.status, r.dataFrames, res.n, res.err)
	}
	p.open(3, true, head("/big")...)
	r = p.response(3)
	res = recv(t, results, "the handler")
	if r.status != "200" || r.dataFrames != 0 || res.n != 100000 || res.err != nil {
		t.Errorf("HEAD, a large body: %s, %d DATA frames; Write %d %v", r.status, r.dataFrames, res.n, res.err)
	}
	for i, status := range []string{"204", "304"} {
		id := uint32(5 + 2*i)
		p.open(id, true, get("/"+status)...)
		r := p.response(id)
		res := recv(t, results, "the handler")
		if r.status != status || r.dataFrames != 0 || !errors.Is(res.err, http.ErrBodyNotAllowed) || res.n != 0 {
			t.Errorf("%s: got %s, %d DATA frames; Write %d %v", status, r.status, r.dataFrames, res.n, res.err)
		}
		if status == "204" && r.header.Get("Content-Length") != "" {
			t.Errorf("204 with content-length %s", r.header.Get("Content-Length"))
		}
	}
}

// 13. SetReadDeadline makes a blocked body Read fail with
// os.ErrDeadlineExceeded, a deadline in the past as one that passes.
func TestConformanceReadDeadline(t *testing.T) {
	results := make(chan error, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		done := make(chan struct{})
		if r.URL.Path == "/past" {
			go func() {
				defer close(done)
				time.Sleep(50 * time.Millisecond) // a chance for the Read to block
				if err := rc.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
					panic(err)
				}
			}()
		} else {
			close(done)
			if err := rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				panic(err)
			}
		}
		_, err := r.Body.Read(make([]byte, 10))
		<-done
		results <- err
		io.WriteString(w, "timed out")
	}))
	p := newPeer(t, ts)
	for i, path := range []string{"/past", "/future"} {
		id := uint32(2*i + 1)
		p.open(id, false, post(path)...)
		if err := recv(t, results, "the handler's read"); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the read returned %v", path, err)
		}
		if r := p.response(id); r.body.String() != "timed out" {
			t.Errorf("%s: %s %q", path, r.status, r.body.String())
		}
	}
}

// 14. Flush sends the header and the body so far while the handler goes
// on.
func TestConformanceFlush(t *testing.T) {
	flushed := make(chan struct{}, 1)
	proceed := make(chan struct{}, 1)
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := func() {
			flushed <- struct{}{}
			select {
			case <-proceed:
			case <-time.After(testWait):
			}
		}
		if r.URL.Path == "/header" {
			w.WriteHeader(202)
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			wait()
			return
		}
		io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		wait()
		io.WriteString(w, "part2")
	}))
	p := newPeer(t, ts)
	p.open(1, true, get("/")...)
	recv(t, flushed, "the handler's flush")
	f := p.nextFrame()
	if f.typ != http2.FrameHeaders || f.field(":status") != "200" || f.end || f.has("content-length") {
		t.Fatalf("after Flush: %v", f)
	}
	f = p.nextFrame()
	if f.typ != http2.FrameData || string(f.data) != "part1" || f.end {
		t.Fatalf("after Flush: %v %q", f, f.data)
	}
	proceed <- struct{}{}
	var rest strings.Builder
	for ended := false; !ended; {
		f := p.nextFrame()
		if f.typ != http2.FrameData || f.id != 1 {
			t.Fatalf("unexpected %v", f)
		}
		rest.Write(f.data)
		ended = f.end
	}
	if rest.String() != "part2" {
		t.Errorf("the rest: %q", rest.String())
	}

	p.open(3, true, get("/header")...)
	recv(t, flushed, "the handler's flush")
	f = p.nextFrame()
	if f.typ != http2.FrameHeaders || f.id != 3 || f.field(":status") != "202" || f.end {
		t.Fatalf("after a Flush of the header alone: %v", f)
	}
	proceed <- struct{}{}
	f = p.nextFrame()
	if f.id != 3 || !f.end || len(f.data) != 0 {
		t.Fatalf("the end: %v", f)
	}
}

// 15. PING is answered with an ACK carrying its data, a PING ACK not at
// all; SETTINGS is acknowledged.
func TestConformancePingAndSettingsAck(t *testing.T) {
	ts := startServer(t, &Server{}, http.NotFoundHandler())
	p := newPeer(t, ts)
	for p.settingsAcks == 0 {
		if f := p.read(); f.typ != http2.FrameSettings && f.typ != http2.FrameWindowUpdate {
			t.Fatalf("waiting for the SETTINGS ACK: %v", f)
		}
	}
	p.fr.WritePing(true, [8]byte{'u', 'n', 's', 'o', 'l', 'i', 'c', 'd'})
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	p.fr.WritePing(false, data)
	f := p.read()
	if f.typ != http2.FramePing || !f.ack || f.ping != data || f.id != 0 || f.length != 8 {
		t.Fatalf("got %v ack=%v %v, want PING ACK %v", f, f.ack, f.ping, data)
	}
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1 << 16},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	p.fr.WriteSettings()
	for p.settingsAcks < 3 {
		if f := p.read(); f.typ != http2.FrameSettings {
			t.Fatalf("waiting for the SETTINGS ACKs: %v", f)
		}
	}
	// The connection still serves.
	p.open(1, true, get("/")...)
	if r := p.response(1); r.status != "404" {
		t.Errorf("status %s", r.status)
	}
}

// 16. A hundred concurrent streams on one connection each get their own
// response: header, body and trailer.
func TestConformanceManyConcurrentStreams(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		n, _ := strconv.Atoi(path[1:])
		w.Header().Set("X-Path", path)
		w.Header().Set("X-Path-"+strconv.Itoa(n%7), path) // varied HPACK state
		if n%3 == 0 {
			w.Header().Set("Trailer", "X-End")
		}
		chunk := strings.Repeat(path+";", 1+n*20)
		for i := 0; i < 1+n%4; i++ {
			io.WriteString(w, chunk)
			if n%2 == 0 {
				w.(http.Flusher).Flush()
			}
			runtime.Gosched()
		}
		if n%3 == 0 {
			w.Header().Set("X-End", path)
		}
	}))
	p := newPeer(t, ts)
	p.autoWU = true
	p.nc.SetDeadline(time.Now().Add(30 * time.Second))
	var ids []uint32
	for i := 0; i < 100; i++ {
		id := uint32(2*i + 1)
		ids = append(ids, id)
		p.open(id, true, get("/"+strconv.Itoa(i))...)
	}
	rs := p.collect(ids...)
	for i, id := range ids {
		r := rs[id]
		path := "/" + strconv.Itoa(i)
		want := strings.Repeat(strings.Repeat(path+";", 1+i*20), 1+i%4)
		if r.reset || r.status != "200" || r.header.Get("X-Path") != path ||
			r.header.Get("X-Path-"+strconv.Itoa(i%7)) != path || r.body.String() != want {
			t.Errorf("stream %d (%s): %s reset=%v header %v, body %d bytes (want %d)", id, path, r.status, r.reset,
				r.header, r.body.Len(), len(want))
		}
		if i%3 == 0 && r.trailer.Get("X-End") != path {
			t.Errorf("stream %d (%s): trailer %v", id, path, r.trailer)
		}
	}
}

// RFC 9113 §8.2.3: several cookie fields reach the handler as one.
func TestConformanceCookieFieldsJoined(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q", r.Header["Cookie"])
	}))
	p := newPeer(t, ts)
	p.open(1, true, append(get("/"), "cookie", "a=1", "cookie", "b=2")...)
	if r := p.response(1); r.body.String() != `["a=1; b=2"]` {
		t.Errorf("got %s", r.body.String())
	}
}
