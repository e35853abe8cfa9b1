package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// This file: hostile HTTP/2 clients, written frame by frame with x/net's
// Framer and an HPACK encoder, on an h2c listener and on a TLS listener.
// Every malformed request (RFC 9113 §8.2, §8.3) must be refused, by a
// stream reset or a 4xx, with nothing forwarded; floods (rapid reset,
// CONTINUATION, PING, SETTINGS, empty frames) must end the connection.
// And h2spec, when it is installed.

// recordingBackend records every request that reaches it; in these tests
// no request may.
type recordingBackend struct {
	URL  string
	mu   sync.Mutex
	seen []string
	// partial: the request's body ended in an error: its head arrived,
	// but the request was cut off (never complete).
	partial []bool
}

func startRecordingBackend(t *testing.T) *recordingBackend {
	t.Helper()
	rb := &recordingBackend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		var hs []string
		for k, vv := range r.Header {
			for _, v := range vv {
				hs = append(hs, fmt.Sprintf("%s: %q", k, v))
			}
		}
		slices.Sort(hs)
		rb.mu.Lock()
		rb.seen = append(rb.seen, fmt.Sprintf("%s %s host %q [%s] body %d bytes (%v)",
			r.Method, r.RequestURI, r.Host, strings.Join(hs, ", "), n, err))
		rb.partial = append(rb.partial, err != nil)
		rb.mu.Unlock()
		w.WriteHeader(299) // a status nobody else sends
	}))
	t.Cleanup(srv.Close)
	rb.URL = srv.URL
	return rb
}

// since returns what reached the backend after the first n requests.
func (rb *recordingBackend) since(n int) []string {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return slices.Clone(rb.seen[min(n, len(rb.seen)):])
}

// complete returns the requests after the first n that arrived whole, and
// those cut off mid-body.
func (rb *recordingBackend) complete(n int) (whole, cut []string) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for i := n; i < len(rb.seen); i++ {
		if rb.partial[i] {
			cut = append(cut, rb.seen[i])
		} else {
			whole = append(whole, rb.seen[i])
		}
	}
	return whole, cut
}

func (rb *recordingBackend) count() int {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return len(rb.seen)
}

// rawH2 is a client connection driven frame by frame.
type rawH2 struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex // guards fr's writes, enc and hbuf
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	next uint32 // the next client stream id
}

// dialRawH2 connects to addr (over TLS with ALPN h2 when cfg is set, else
// h2c by prior knowledge), sends the preface and an empty SETTINGS frame.
func dialRawH2(t testing.TB, addr string, cfg *tls.Config) *rawH2 {
	t.Helper()
	var nc net.Conn
	var err error
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"h2"}
		var tc *tls.Conn
		tc, err = dialTLS(addr, cfg)
		if err == nil && tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("ALPN: negotiated %q, want h2", tc.ConnectionState().NegotiatedProtocol)
		}
		nc = tc
	} else {
		nc, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	h := &rawH2{t: t, nc: nc, next: 1}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.fr = http2.NewFramer(nc, nc)
	h.fr.AllowIllegalWrites = true
	h.fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatalf("preface: %v", err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatalf("settings: %v", err)
	}
	return h
}

// hf is a header field as sent, verbatim (no lower-casing, no checks).
type hf [2]string

// block HPACK-encodes fields as literals never indexed, so that a refused
// block leaves no state behind in either dynamic table. h.wmu is held.
func (h *rawH2) block(fields []hf) []byte {
	h.hbuf.Reset()
	for _, f := range fields {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
	}
	return bytes.Clone(h.hbuf.Bytes())
}

// send opens a stream with fields and then the DATA frames of data, the
// last one (or the HEADERS frame, without data) ending the stream unless
// open is set. It returns the stream id.
func (h *rawH2) send(fields []hf, data []string, open bool) uint32 {
	h.t.Helper()
	h.wmu.Lock()
	defer h.wmu.Unlock()
	sid := h.next
	h.next += 2
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: h.block(fields),
		EndHeaders: true, EndStream: len(data) == 0 && !open}); err != nil {
		h.t.Fatalf("write HEADERS: %v", err)
	}
	for i, d := range data {
		if err := h.fr.WriteData(sid, i == len(data)-1 && !open, []byte(d)); err != nil {
			h.t.Fatalf("write DATA: %v", err)
		}
	}
	return sid
}

func ptr[T any](v T) *T { return &v }

// frames returns n bytes of body as DATA payloads of 16 KiB at most.
func frames(n int) []string {
	var fs []string
	for n > 0 {
		k := min(n, 16<<10)
		fs = append(fs, strings.Repeat("d", k))
		n -= k
	}
	return fs
}

// h2Outcome is how the server ended one stream.
type h2Outcome struct {
	status     int // :status of the final response, 0 if none
	body       string
	rst        bool
	rstCode    http2.ErrCode
	goaway     bool
	goawayCode http2.ErrCode
	goawayLast uint32
	closed     bool // the connection ended (EOF, reset)
	timeout    bool
}

func (o h2Outcome) String() string {
	switch {
	case o.status != 0:
		return fmt.Sprintf("status %d %.80q", o.status, o.body)
	case o.rst:
		return "RST_STREAM " + o.rstCode.String()
	case o.goaway:
		return fmt.Sprintf("GOAWAY %s (last stream %d), closed %v", o.goawayCode, o.goawayLast, o.closed)
	case o.closed:
		return "connection closed"
	}
	return "no answer (timeout)"
}

// refused: the stream was reset, answered 4xx, or the connection ended.
func (o h2Outcome) refused() bool {
	return o.rst || (o.status >= 400 && o.status < 500) || o.goaway || o.closed
}

// control answers a SETTINGS or PING frame as a client must (an ACK).
func (h *rawH2) control(f http2.Frame) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			h.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			h.fr.WritePing(true, f.Data)
		}
	}
}

// await reads frames until stream sid ends (a complete response or a
// reset), the connection ends or d passes; it answers SETTINGS and PING.
func (h *rawH2) await(sid uint32, d time.Duration) h2Outcome {
	h.nc.SetReadDeadline(time.Now().Add(d))
	defer h.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var o h2Outcome
	var body bytes.Buffer
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				o.timeout = true
			} else {
				o.closed = true
			}
			o.body = body.String()
			return o
		}
		switch f := f.(type) {
		case *http2.SettingsFrame, *http2.PingFrame:
			h.control(f)
		case *http2.GoAwayFrame:
			o.goaway, o.goawayCode, o.goawayLast = true, f.ErrCode, f.LastStreamID
			if f.LastStreamID < sid {
				// Our stream will never be answered; wait for the close.
				continue
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != sid {
				continue
			}
			st, _ := strconv.Atoi(f.PseudoValue("status"))
			if st >= 200 || o.status == 0 {
				o.status = st
			}
			if f.StreamEnded() {
				o.body = body.String()
				return o
			}
		case *http2.DataFrame:
			if f.StreamID != sid {
				continue
			}
			body.Write(f.Data())
			if n := len(f.Data()); n > 0 {
				h.wmu.Lock()
				h.fr.WriteWindowUpdate(0, uint32(n))
				h.wmu.Unlock()
			}
			if f.StreamEnded() {
				o.body = body.String()
				return o
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == sid {
				o.rst, o.rstCode = true, f.ErrCode
				o.body = body.String()
				return o
			}
		}
	}
}

// h2Target is a listener the hostile clients go to.
type h2Target struct {
	name      string
	addr      string
	tls       *tls.Config // nil: h2c
	scheme    string
	authority string
}

// hostileH2Sluice starts sluice with an h2c listener and a TLS listener
// (certificate for a.test and 127.0.0.1): requests for /echo and /delay go to a demo
// backend, every other one to rb.
func hostileH2Sluice(t *testing.T, rb *recordingBackend) (*demoBackend, []h2Target) {
	t.Helper()
	good := startBackend(t, "good")
	ca := newTestCA(t, "e2e CA")
	site := ca.issue(t, leafOpts{names: []string{"a.test"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}}).write(t, t.TempDir(), "a")
	routes := []config.Route{{PathPrefix: "/echo", Pool: "good"}, {PathPrefix: "/delay/", Pool: "good"}}
	cfg := &config.Config{
		Listeners: []config.Listener{
			{Name: "h2c", Address: "127.0.0.1:0", Pool: "rec", H2C: true, Routes: routes},
			{Name: "tls", Address: "127.0.0.1:0", Pool: "rec", Routes: routes,
				TLS: &config.TLS{Certificates: []config.Certificate{site}}},
		},
		Pools:           []config.Pool{poolAt("rec", rb.URL), poolOf("good", good)},
		Admin:           config.Admin{Address: "127.0.0.1:0"},
		ShutdownTimeout: 5 * time.Second,
	}
	s := startSluice(t, cfg)
	return good, []h2Target{
		{name: "h2c", addr: s.Addr("h2c"), scheme: "http", authority: "a.test"},
		{name: "tls", addr: s.Addr("tls"), tls: clientTLS(ca, "a.test"), scheme: "https", authority: "a.test"},
	}
}

// TestHostile2MalformedRequests sends every kind of malformed HTTP/2
// request that an HTTP/1.1 backend could be smuggled by: each is refused
// (stream reset or 4xx) and nothing reaches the backend; the connection
// goes on serving good requests after a stream error.
func TestHostile2MalformedRequests(t *testing.T) {
	t.Parallel()
	rb := startRecordingBackend(t)
	_, targets := hostileH2Sluice(t, rb)

	type tcase struct {
		name   string
		fields func(tg h2Target) []hf
		data   []string // DATA frames, the last ending the stream
		// cut: the head may reach the backend before the DATA that
		// contradicts it arrives (a body over 64 KiB streams); then
		// sluice must cut the backend's request off, never let it
		// complete. Without it nothing may reach the backend at all
		// (docs/http2.md: smaller bodies are read whole first).
		cut bool
		// late, when not nil, is a last DATA frame (ending the stream)
		// sent 300ms after the others, once sluice had time to forward
		// what came before it.
		late *string
	}
	req := func(tg h2Target, extra ...hf) []hf {
		return append([]hf{{":method", "POST"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority}}, extra...)
	}
	with := func(extra ...hf) func(h2Target) []hf {
		return func(tg h2Target) []hf { return req(tg, extra...) }
	}
	cases := []tcase{
		{name: "connection", fields: with(hf{"connection", "keep-alive"})},
		{name: "connection close", fields: with(hf{"connection", "close"})},
		{name: "keep-alive", fields: with(hf{"keep-alive", "timeout=5"})},
		{name: "transfer-encoding chunked", fields: with(hf{"transfer-encoding", "chunked"}), data: []string{"5\r\nhello\r\n0\r\n\r\n"}},
		{name: "transfer-encoding identity", fields: with(hf{"transfer-encoding", "identity"})},
		{name: "upgrade", fields: with(hf{"upgrade", "websocket"})},
		{name: "upgrade h2c", fields: with(hf{"upgrade", "h2c"})},
		{name: "proxy-connection", fields: with(hf{"proxy-connection", "keep-alive"})},
		{name: "te gzip", fields: with(hf{"te", "gzip"})},
		{name: "te trailers, gzip", fields: with(hf{"te", "trailers, gzip"})},
		{name: "upper-case name", fields: with(hf{"X-Upper", "1"})},
		{name: "upper-case pseudo value name", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":Authority", tg.authority}}
		}},
		{name: "CR in a value", fields: with(hf{"x-a", "1\rx-b: 2"})},
		{name: "LF in a value", fields: with(hf{"x-a", "1\nx-b: 2"})},
		{name: "CRLF in a value", fields: with(hf{"x-a", "1\r\nTransfer-Encoding: chunked"})},
		{name: "NUL in a value", fields: with(hf{"x-a", "1\x00"})},
		{name: "CR in a name", fields: with(hf{"x-a\rx-b", "1"})},
		{name: "LF in a name", fields: with(hf{"x-a\nx-b", "1"})},
		{name: "NUL in a name", fields: with(hf{"x-a\x00", "1"})},
		{name: "colon in a name", fields: with(hf{"x-a:b", "1"})},
		{name: "space in a name", fields: with(hf{"x-a b", "1"})},
		{name: "empty name", fields: with(hf{"", "1"})},
		{name: "CRLF in :path", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/hostile HTTP/1.1\r\nHost: evil\r\n\r\nGET /x"}, {":authority", tg.authority}}
		}},
		{name: "space in :method", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET /smuggled HTTP/1.1\r\n"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
		{name: "CRLF in :authority", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority + "\r\nX-Evil: 1"}}
		}},
		{name: "pseudo-header after a regular field", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {"x-a", "1"}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
		{name: "repeated :path", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":path", "/echo"}, {":authority", tg.authority}}
		}},
		{name: "repeated :method", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":method", "POST"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
		{name: "repeated :authority", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority}, {":authority", "evil.test"}}
		}},
		{name: "repeated :scheme", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":scheme", "https"}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
		{name: "unknown pseudo-header", fields: with(hf{":protocol-x", "1"})},
		{name: "response pseudo-header in a request", fields: with(hf{":status", "200"})},
		{name: "missing :path", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":authority", tg.authority}}
		}},
		{name: "empty :path", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", ""}, {":authority", tg.authority}}
		}},
		{name: "missing :method", fields: func(tg h2Target) []hf {
			return []hf{{":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
		{name: "missing :scheme", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
		{name: "missing :authority and host", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/hostile"}}
		}},
		{name: "absolute :path", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "http://evil.test/hostile"}, {":authority", tg.authority}}
		}},
		{name: "asterisk :path on GET", fields: func(tg h2Target) []hf {
			return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "*"}, {":authority", tg.authority}}
		}},
		{name: "host differs from :authority", fields: with(hf{"host", "evil.test"})},
		{name: "two host fields", fields: with(hf{"host", "a.test"}, hf{"host", "evil.test"})},
		{name: "content-length longer than DATA", fields: with(hf{"content-length", "10"}), data: []string{"hello"}},
		{name: "content-length shorter than DATA", fields: with(hf{"content-length", "3"}), data: []string{"hello"}},
		{name: "content-length shorter than two DATA frames", fields: with(hf{"content-length", "5"}), data: []string{"hello", "world"}},
		{name: "content-length without DATA", fields: with(hf{"content-length", "5"})},
		{name: "content-length 0 with DATA", fields: with(hf{"content-length", "0"}), data: []string{"hello"}},
		{name: "content-length 0, DATA late", fields: with(hf{"content-length", "0"}), late: ptr("hello")},
		{name: "content-length shorter than DATA, the excess late", fields: with(hf{"content-length", "5"}),
			data: []string{"hello"}, late: ptr("world")},
		{name: "content-length longer than DATA, the end late", fields: with(hf{"content-length", "10"}),
			data: []string{"hello"}, late: ptr("")},
		// Bodies over 64 KiB stream to the backend as they arrive.
		{name: "128 KiB content-length shorter than DATA, the excess late", fields: with(hf{"content-length", strconv.Itoa(128 << 10)}),
			data: frames(128 << 10), late: ptr("x"), cut: true},
		{name: "128 KiB content-length longer than DATA, the end late", fields: with(hf{"content-length", strconv.Itoa(128<<10 + 1)}),
			data: frames(128 << 10), late: ptr(""), cut: true},
		{name: "content-length not a number", fields: with(hf{"content-length", "5x"}), data: []string{"hello"}},
		{name: "content-length negative", fields: with(hf{"content-length", "-1"}), data: []string{"hello"}},
		{name: "two content-lengths that differ", fields: with(hf{"content-length", "5"}, hf{"content-length", "10"}), data: []string{"hello"}},
		{name: "CONNECT", fields: func(tg h2Target) []hf {
			return []hf{{":method", "CONNECT"}, {":authority", "evil.test:443"}}
		}},
		{name: "TRACE", fields: func(tg h2Target) []hf {
			return []hf{{":method", "TRACE"}, {":scheme", tg.scheme}, {":path", "/hostile"}, {":authority", tg.authority}}
		}},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			h := dialRawH2(t, tg.addr, tg.tls)
			for _, tc := range cases {
				before := rb.count()
				sid := h.send(tc.fields(tg), tc.data, tc.late != nil)
				if tc.late != nil {
					time.Sleep(300 * time.Millisecond)
					h.wmu.Lock()
					h.fr.WriteData(sid, true, []byte(*tc.late))
					h.wmu.Unlock()
				}
				o := h.await(sid, 5*time.Second)
				if !o.refused() {
					t.Errorf("%s: %v, want a stream reset or a 4xx", tc.name, o)
				}
				// A request smuggled through would reach the backend a
				// moment later.
				time.Sleep(20 * time.Millisecond)
				whole, cut := rb.complete(before)
				if len(whole) > 0 || (len(cut) > 0 && !tc.cut) {
					t.Errorf("%s (%v): the backend received %q", tc.name, o, append(whole, cut...))
				} else if len(cut) > 0 {
					t.Logf("%s (%v): the head reached the backend, which saw the body cut off: %q", tc.name, o, cut)
				}
				if o.closed || o.goaway {
					t.Logf("%s: %v; reconnecting", tc.name, o)
					h = dialRawH2(t, tg.addr, tg.tls)
				}
				// The connection (or its replacement) still serves.
				sid = h.send([]hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/echo/after"}, {":authority", tg.authority}}, nil, false)
				if o := h.await(sid, 5*time.Second); o.status != 200 {
					t.Errorf("after %q: a good request got %v, want 200", tc.name, o)
					h = dialRawH2(t, tg.addr, tg.tls)
				}
			}
			// Controls: the same client's well-formed requests pass, and
			// what may pass does (te: trailers, a host equal to
			// :authority, a content-length that matches).
			for _, ctl := range []struct {
				name   string
				fields []hf
				data   []string
			}{
				{"plain GET", []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/echo"}, {":authority", tg.authority}}, nil},
				{"te trailers", []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/echo"}, {":authority", tg.authority}, {"te", "trailers"}}, nil},
				{"host equal to :authority", []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", "/echo"}, {":authority", tg.authority}, {"host", tg.authority}}, nil},
				{"content-length that matches", []hf{{":method", "POST"}, {":scheme", tg.scheme}, {":path", "/echo"}, {":authority", tg.authority}, {"content-length", "10"}}, []string{"hello", "world"}},
			} {
				sid := h.send(ctl.fields, ctl.data, false)
				o := h.await(sid, 5*time.Second)
				if o.status != 200 {
					t.Errorf("control %q: %v, want 200", ctl.name, o)
					continue
				}
				e := parseEcho(t, o.body)
				if ctl.data != nil && e.BodyBytes != 10 {
					t.Errorf("control %q: the backend got %d body bytes, want 10", ctl.name, e.BodyBytes)
				}
				if got := e.Headers.Values("Te"); ctl.name == "te trailers" && (len(got) != 1 || got[0] != "trailers") {
					t.Errorf("control %q: the backend saw Te %q, want [trailers]", ctl.name, got)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if whole, _ := rb.complete(0); len(whole) > 0 {
		t.Errorf("the recording backend received %d whole requests, want none:\n%s", len(whole), strings.Join(whole, "\n"))
	}
}

// TestHostile2Floods: rapid reset (CVE-2023-44487), a CONTINUATION flood
// (CVE-2024-27316) with full and with empty frames, PING and SETTINGS
// floods, and empty DATA frames: the server ends the connection (GOAWAY
// or close) within a bounded time and keeps serving other clients.
func TestHostile2Floods(t *testing.T) {
	t.Parallel()
	rb := startRecordingBackend(t)
	good, targets := hostileH2Sluice(t, rb)
	bc := newClient(t)

	type flood struct {
		name string
		// maxDelays bounds the requests for /delay/1s that reach the
		// backend during the flood.
		maxDelays int64
		// pieces > 0: the flood is written in that many equal pieces,
		// pace apart (a client staying under the per-second buckets).
		pieces int
		pace   time.Duration
		// frames writes the flood into fr; enc encodes header blocks.
		frames func(fr *http2.Framer, block func([]hf) []byte, tg h2Target)
	}
	get := func(tg h2Target, path string) []hf {
		return []hf{{":method", "GET"}, {":scheme", tg.scheme}, {":path", path}, {":authority", tg.authority}}
	}
	floods := []flood{
		// At most 200 premature resets (h2guard's RapidResetMax) and 250
		// streams at once (MaxConcurrentStreams) may start requests.
		{"rapid reset", 450, 0, 0, func(fr *http2.Framer, block func([]hf) []byte, tg h2Target) {
			for i := range 5000 {
				sid := uint32(2*i + 1)
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: block(get(tg, "/delay/1s")),
					EndHeaders: true, EndStream: true})
				fr.WriteRSTStream(sid, http2.ErrCodeCancel)
			}
		}},
		{"rapid reset paced under the reset bucket", 450, 300, 4 * time.Millisecond, func(fr *http2.Framer, block func([]hf) []byte, tg h2Target) {
			for i := range 300 {
				sid := uint32(2*i + 1)
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: block(get(tg, "/delay/1s")),
					EndHeaders: true, EndStream: true})
				fr.WriteRSTStream(sid, http2.ErrCodeCancel)
			}
		}},
		{"CONTINUATION flood", 0, 0, 0, func(fr *http2.Framer, block func([]hf) []byte, tg h2Target) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get(tg, "/echo"))})
			for i := range 4000 {
				fr.WriteContinuation(1, false, block([]hf{{"x-junk-" + strconv.Itoa(i), strings.Repeat("j", 1000)}}))
			}
		}},
		{"empty CONTINUATION flood", 0, 0, 0, func(fr *http2.Framer, block func([]hf) []byte, tg h2Target) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get(tg, "/echo"))})
			for range 100000 {
				fr.WriteContinuation(1, false, nil)
			}
		}},
		{"PING flood", 0, 0, 0, func(fr *http2.Framer, _ func([]hf) []byte, _ h2Target) {
			for i := range 100000 {
				fr.WritePing(false, [8]byte{byte(i), byte(i >> 8), byte(i >> 16)})
			}
		}},
		{"SETTINGS flood", 0, 0, 0, func(fr *http2.Framer, _ func([]hf) []byte, _ h2Target) {
			for range 100000 {
				fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
			}
		}},
		{"empty DATA flood", 0, 0, 0, func(fr *http2.Framer, block func([]hf) []byte, tg h2Target) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
				BlockFragment: block([]hf{{":method", "POST"}, {":scheme", tg.scheme}, {":path", "/echo"}, {":authority", tg.authority}})})
			for range 100000 {
				fr.WriteData(1, false, nil)
			}
		}},
		{"WINDOW_UPDATE flood", 0, 0, 0, func(fr *http2.Framer, _ func([]hf) []byte, _ h2Target) {
			for range 100000 {
				fr.WriteWindowUpdate(0, 1)
			}
		}},
		{"PRIORITY flood", 0, 0, 0, func(fr *http2.Framer, _ func([]hf) []byte, _ h2Target) {
			for i := range 100000 {
				fr.WritePriority(uint32(2*(i%1000)+1), http2.PriorityParam{StreamDep: 0, Weight: 15})
			}
		}},
	}
	for _, tg := range targets {
		for _, fl := range floods {
			t.Run(tg.name+"/"+fl.name, func(t *testing.T) {
				before := rb.count()
				delays := pathCount(t, bc, "/delay/1s", good)
				h := dialRawH2(t, tg.addr, tg.tls)
				// The flood, built up front, then written in one go while
				// a reader watches for the end of the connection.
				var buf bytes.Buffer
				fr := http2.NewFramer(&buf, nil)
				fr.AllowIllegalWrites = true
				var hbuf bytes.Buffer
				enc := hpack.NewEncoder(&hbuf)
				block := func(fields []hf) []byte {
					hbuf.Reset()
					for _, f := range fields {
						enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
					}
					return bytes.Clone(hbuf.Bytes())
				}
				fl.frames(fr, block, tg)
				flood := buf.Bytes()
				start := time.Now()
				h.nc.SetDeadline(start.Add(15 * time.Second))
				written := make(chan int, 1)
				go func() {
					if fl.pieces == 0 {
						n, _ := h.nc.Write(flood)
						written <- n
						return
					}
					size, n := len(flood)/fl.pieces, 0
					for i := 0; i < fl.pieces; i++ {
						m, err := h.nc.Write(flood[i*size : (i+1)*size])
						n += m
						if err != nil {
							break
						}
						time.Sleep(fl.pace)
					}
					written <- n
				}()
				var goaway *http2.GoAwayFrame
				var goawayDebug string
				var endErr error
				frames := 0
				for {
					f, err := h.fr.ReadFrame()
					if err != nil {
						endErr = err
						break
					}
					frames++
					if g, ok := f.(*http2.GoAwayFrame); ok {
						goaway, goawayDebug = g, string(g.DebugData())
					}
				}
				elapsed := time.Since(start)
				n := <-written
				var ne net.Error
				timedOut := errors.As(endErr, &ne) && ne.Timeout()
				desc := fmt.Sprintf("after %v, %d of %d flood bytes written, %d frames read", elapsed.Round(time.Millisecond), n, len(flood), frames)
				if goaway != nil {
					desc += fmt.Sprintf(", GOAWAY %v %q", goaway.ErrCode, goawayDebug)
				}
				if timedOut {
					t.Errorf("the connection was still open 15s into the flood (%s), want it ended", desc)
				} else {
					t.Logf("connection ended: %v (%s)", endErr, desc)
				}
				if n == len(flood) && goaway == nil && !timedOut {
					t.Logf("the whole flood was taken before the connection closed without a GOAWAY")
				}
				// Another client is served meanwhile.
				h2 := dialRawH2(t, tg.addr, tg.tls)
				sid := h2.send(get(tg, "/echo"), nil, false)
				if o := h2.await(sid, 5*time.Second); o.status != 200 {
					t.Errorf("a good client after the flood got %v, want 200", o)
				}
				if got := rb.since(before); len(got) > 0 {
					t.Errorf("the recording backend received %q", got)
				}
				time.Sleep(100 * time.Millisecond)
				if n := pathCount(t, bc, "/delay/1s", good) - delays; n > fl.maxDelays {
					t.Errorf("%d of the flood's requests reached the backend, want at most %d", n, fl.maxDelays)
				} else if n > 0 {
					t.Logf("%d of the flood's requests reached the backend (bound %d)", n, fl.maxDelays)
				}
			})
		}
	}
}

// h2specBinary returns the path of h2spec (see needProgram).
func h2specBinary(t *testing.T) string {
	t.Helper()
	return testenv.Program(t, "h2spec", "go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
}

// h2specFailures returns the ids ("http2/6.5.3/1") of the tests listed
// under "Failures:" in h2spec's output: each "× N: ..." line under the
// section it belongs to, in the group whose title precedes it.
func h2specFailures(out string) []string {
	i := strings.Index(out, "\nFailures:")
	if i < 0 {
		return nil
	}
	section := regexp.MustCompile(`^\s+(\d+(?:\.\d+)*)\.\s`)
	failed := regexp.MustCompile(`^\s+× (\d+):`)
	var group, sec string
	var ids []string
	for _, line := range strings.Split(out[i:], "\n") {
		switch {
		case strings.HasPrefix(line, "Generic tests"):
			group = "generic"
		case strings.HasPrefix(line, "Hypertext Transfer Protocol"):
			group = "http2"
		case strings.HasPrefix(line, "HPACK"):
			group = "hpack"
		}
		if m := failed.FindStringSubmatch(line); m != nil {
			ids = append(ids, group+"/"+sec+"/"+m[1])
		} else if m := section.FindStringSubmatch(line); m != nil {
			sec = m[1]
		}
	}
	return ids
}

// h2specAllowed returns, for each listener of TestH2Spec ("tls", "h2c",
// with engine std "tls-std", "h2c-std", on the event loops "tls-loop",
// "h2c-loop"), the h2spec test ids that
// docs/http2.md lists as expected failures, each on a line
// "- `ID` (LISTENERS): why", where LISTENERS names TLS, h2c or both, and
// "engine std" when the failure is x/net's server's alone or "both
// servers" when it is both servers'.
func h2specAllowed(t *testing.T) map[string]map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "http2.md"))
	if err != nil {
		t.Fatalf("docs/http2.md: %v", err)
	}
	allowed := map[string]map[string]bool{"tls": {}, "h2c": {}, "tls-std": {}, "h2c-std": {}}
	re := regexp.MustCompile("(?m)^- `((?:generic|http2|hpack)/[0-9.]+/[0-9]+)` \\(([^)]*)\\)")
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		suffixes := []string{""}
		switch {
		case strings.Contains(m[2], "both servers"):
			suffixes = []string{"", "-std"}
		case strings.Contains(m[2], "engine std"):
			suffixes = []string{"-std"}
		}
		for _, suffix := range suffixes {
			if strings.Contains(m[2], "TLS") {
				allowed["tls"+suffix][m[1]] = true
			}
			if strings.Contains(m[2], "h2c") {
				allowed["h2c"+suffix][m[1]] = true
			}
		}
	}
	// The same server on the event loops.
	allowed["tls-loop"], allowed["h2c-loop"] = allowed["tls"], allowed["h2c"]
	return allowed
}

// TestH2Spec runs h2spec against a TLS listener and an h2c listener of
// each HTTP/2 server (sluice's on goroutines and on the event loops, and
// x/net's with engine std): every test passes, or its failure is listed
// in docs/http2.md; a listed failure that passes fails the test too, so
// that the list stays true.
func TestH2Spec(t *testing.T) {
	bin := h2specBinary(t)
	be := startBackend(t, "b1")
	ca := newTestCA(t, "e2e CA")
	site := ca.issue(t, leafOpts{names: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}}).write(t, t.TempDir(), "site")
	// h2spec's 5.1.2 opens one stream more than the listener allows, each
	// a request sluice proxies, all at once; with the default 250 a loaded
	// machine could starve the refusal of the last past h2spec's wait for
	// an answer (-o). The rules are the same at 16.
	lim := config.Limits{MaxConcurrentStreams: 16}
	cfg := &config.Config{
		Listeners: []config.Listener{
			// Engines named: whatever SLUICE_E2E_ENGINE says, the same six.
			{Name: "h2c", Address: "127.0.0.1:0", Pool: "web", H2C: true, Limits: lim, Engine: "h1"},
			{Name: "tls", Address: "127.0.0.1:0", Pool: "web", TLS: &config.TLS{Certificates: []config.Certificate{site}}, Limits: lim, Engine: "h1"},
			{Name: "h2c-std", Address: "127.0.0.1:0", Pool: "web", H2C: true, Limits: lim, Engine: "std"},
			{Name: "tls-std", Address: "127.0.0.1:0", Pool: "web", TLS: &config.TLS{Certificates: []config.Certificate{site}}, Limits: lim, Engine: "std"},
			// sluice's server on the event loops (ServeLoop).
			{Name: "h2c-loop", Address: "127.0.0.1:0", Pool: "web", H2C: true, Limits: lim, Engine: "loop"},
			{Name: "tls-loop", Address: "127.0.0.1:0", Pool: "web", TLS: &config.TLS{Certificates: []config.Certificate{site}}, Limits: lim, Engine: "loop"},
		},
		Pools:           []config.Pool{poolOf("web", be)},
		Admin:           config.Admin{Address: "127.0.0.1:0"},
		ShutdownTimeout: 5 * time.Second,
	}
	s := startSluice(t, cfg)
	allowed := h2specAllowed(t)
	for _, tc := range []struct {
		listener string
		args     []string
	}{{"tls", []string{"-t", "-k"}}, {"h2c", nil}, {"tls-std", []string{"-t", "-k"}}, {"h2c-std", nil},
		{"tls-loop", []string{"-t", "-k"}}, {"h2c-loop", nil}} {
		t.Run(tc.listener, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(s.Addr(tc.listener))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// -o: seconds h2spec waits for each answer (default 2), more
			// on a loaded machine.
			args := append([]string{"-h", "127.0.0.1", "-p", port, "-o", strconv.Itoa(h2specTimeout())}, tc.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.WaitDelay = 5 * time.Second
			out, err := cmd.CombinedOutput()
			text := string(out)
			if ctx.Err() != nil {
				t.Fatalf("h2spec %s did not finish within 5 minutes:\n%s", strings.Join(args, " "), text)
			}
			summary := regexp.MustCompile(`(?m)^\d+ tests, \d+ passed, \d+ skipped, \d+ failed$`).FindString(text)
			if summary == "" {
				t.Fatalf("h2spec %s: no summary (%v):\n%s", strings.Join(args, " "), err, text)
			}
			t.Logf("h2spec %s: %s", strings.Join(args, " "), summary)
			var total, failedN int
			fmt.Sscanf(summary, "%d tests, %d passed, %d skipped, %d failed", &total, new(int), new(int), &failedN)
			failures := h2specFailures(text)
			if len(failures) != failedN {
				t.Fatalf("h2spec %s: %d failures in the summary, %d found in the output:\n%s", strings.Join(args, " "), failedN, len(failures), text)
			}
			if total < 140 {
				t.Errorf("h2spec ran %d tests, want the whole suite (145 in v2.2.1)", total)
			}
			var unexpected []string
			for _, id := range failures {
				if allowed[tc.listener][id] {
					t.Logf("expected failure, explained in docs/http2.md: %s", id)
				} else {
					unexpected = append(unexpected, id)
				}
			}
			for id := range allowed[tc.listener] {
				if !slices.Contains(failures, id) {
					t.Errorf("docs/http2.md lists %s as failing on %s, but it passed: take it out of the list", id, tc.listener)
				}
			}
			if len(unexpected) > 0 {
				i := strings.Index(text, "\nFailures:")
				t.Errorf("h2spec %s: failures not explained in docs/http2.md: %q\n%s", strings.Join(args, " "), unexpected, text[i+1:])
			}
		})
	}
}

// h2specTimeout is h2spec's per-test wait in seconds: 2 (its default) on
// an idle machine, more with few CPUs or under the race detector.
func h2specTimeout() int {
	if runtime.NumCPU() <= 2 {
		return 5
	}
	return 3
}
