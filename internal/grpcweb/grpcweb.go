// Package grpcweb translates gRPC-Web, the form of gRPC that browsers can
// send (over HTTP/1.1 or HTTP/2, without trailers), to gRPC for a backend
// and back, as a pool with grpc_web asks (the gRPC-Web protocol,
// github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md).
//
// A request is gRPC-Web by its content type: application/grpc-web (binary:
// the body is gRPC's length-prefixed messages as they are) or
// application/grpc-web-text (the same bytes in base64), each with an
// optional "+proto", "+json", … suffix. The backend gets application/grpc
// with that suffix, "te: trailers" and the decoded body. Its response
// goes back with the gRPC-Web content type the client used, the messages
// unchanged and the trailers (grpc-status, grpc-message, …) as a last
// length-prefixed frame whose flag byte is 0x80; for -text all of it in
// base64. The answer's form is the one the request's Accept field names
// (as Envoy's grpc_web filter reads it), else the request's own. A
// trailers-only response (the status in the header block, no message)
// stays as it is: gRPC-Web clients read the status there. An answer that
// is not gRPC (a backend's or a proxy's error page) becomes a
// trailers-only one: its HTTP status mapped to a gRPC status, and the
// start of its body as the message.
//
// It works on net/http's types, which every codec's HTTP/2 client side
// shares (package h2client): the codecs call it, and keep no copy of it.
package grpcweb

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// Mode is how a request speaks gRPC-Web.
type Mode uint8

const (
	// None: not a gRPC-Web request; it passes untouched.
	None Mode = iota
	// Binary: application/grpc-web.
	Binary
	// Text: application/grpc-web-text, the body in base64 both ways.
	Text
)

const (
	ctWeb     = "application/grpc-web"
	ctWebText = "application/grpc-web-text"
)

// Of reports how a request with content type ct speaks gRPC-Web.
func Of(ct string) Mode {
	switch {
	case proxy.IsMediaType(ct, ctWebText):
		return Text
	case proxy.IsMediaType(ct, ctWeb):
		return Binary
	}
	return None
}

// Answer is the form of the answer to a request of mode m whose Accept
// field is accept: the first gRPC-Web type accept names, else m.
func (m Mode) Answer(accept string) Mode {
	for accept != "" {
		var r string
		r, accept, _ = strings.Cut(accept, ",")
		switch r = strings.TrimSpace(r); {
		case proxy.IsMediaType(r, ctWebText):
			return Text
		case proxy.IsMediaType(r, ctWeb):
			return Binary
		}
	}
	return m
}

// ContentType is the mode's content type, without suffix.
func (m Mode) ContentType() string {
	if m == Text {
		return ctWebText
	}
	return ctWeb
}

// suffix is what follows the gRPC-Web type in ct ("+proto", "";
// parameters kept).
func (m Mode) suffix(ct string) string {
	n := len(ctWeb)
	if m == Text {
		n = len(ctWebText)
	}
	return ct[n:]
}

// Request rewrites the header of a gRPC-Web request of mode m for a gRPC
// backend: content type application/grpc with the client's suffix, and
// "te: trailers", which gRPC servers require. The body goes through Body.
func (m Mode) Request(h http.Header) {
	ct := h.Get("Content-Type")
	h.Set("Content-Type", "application/grpc"+m.suffix(ct))
	h.Set("Te", "trailers")
	h.Del("Content-Length") // the body's length is the request's, below
}

// Body returns the request body as the backend gets it, and its length
// (-1: unknown): as it is for Binary; for Text decoded from base64.
func (m Mode) Body(r io.Reader, length int64) (io.Reader, int64) {
	if m != Text || r == nil {
		return r, length
	}
	return &textDecoder{r: r}, -1
}

// ErrBadText is a gRPC-Web text request whose body is not base64: the
// client's error (400), whichever codec reads it.
var ErrBadText error = &edge.Error{Status: 400, Reason: "grpc-web-text request body is not base64"}

// textDecoder decodes a base64 body. Clients may send it in pieces each
// padded on its own, so it decodes four characters at a time: a quantum
// with padding ends a piece, not the body.
type textDecoder struct {
	r    io.Reader
	in   [4 << 10]byte
	have int    // bytes of in not yet decoded (fewer than 4 after a read)
	out  []byte // decoded, not yet returned
	buf  [3 << 10]byte
	err  error
}

func (d *textDecoder) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			if d.err == io.EOF && d.have != 0 {
				d.have = 0
				d.err = ErrBadText // a truncated quantum
			}
			return 0, d.err
		}
		n, err := d.r.Read(d.in[d.have:])
		d.have += n
		d.err = err
		whole := d.have &^ 3
		o := 0
		for i := 0; i < whole; i += 4 {
			k, derr := base64.StdEncoding.Decode(d.buf[o:], d.in[i:i+4])
			if derr != nil {
				d.err, d.have, d.out = ErrBadText, 0, nil
				return 0, d.err
			}
			o += k
		}
		copy(d.in[:], d.in[whole:d.have])
		d.have -= whole
		d.out = d.buf[:o]
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// Response turns a gRPC backend's response to a request of mode m, with
// content type reqCT and Accept field accept, into a gRPC-Web one: a copy
// of resp in the form accept asks for (Answer), with the request's suffix,
// no length, no HTTP trailers, and a body that ends with the trailers'
// frame. The original resp stays the transport's: its Trailer is read
// once its body ends, and the caller closes its body. A trailers-only
// response (the status in its header) gets only the content type; one
// already in gRPC-Web passes as it is; any other (not gRPC, or not 200)
// becomes a trailers-only answer (notGRPC).
func (m Mode) Response(resp *http.Response, reqCT, accept string) *http.Response {
	ans := m.Answer(accept)
	webCT := ans.ContentType() + m.suffix(reqCT)
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode == http.StatusOK && (proxy.IsMediaType(ct, ctWeb) || proxy.IsMediaType(ct, ctWebText)):
		return resp // the backend speaks gRPC-Web itself
	case resp.Header.Get("Grpc-Status") == "" && (resp.StatusCode != http.StatusOK || !proxy.IsMediaType(ct, "application/grpc")):
		return notGRPC(resp, webCT)
	}
	out := *resp
	out.Header = resp.Header.Clone()
	out.Header.Set("Content-Type", webCT)
	if resp.Header.Get("Grpc-Status") != "" {
		// Trailers-only: the status is in the header block, where gRPC-Web
		// clients read it too; the body stays empty.
		return &out
	}
	out.Header.Del("Content-Length")
	out.Header.Del("Trailer")
	out.ContentLength = -1
	out.Trailer = nil
	b := &body{resp: resp}
	out.Body = b
	if ans == Text {
		out.Body = &textEncoder{r: b}
	}
	return &out
}

// notGRPC is the trailers-only gRPC-Web answer (content type ct) in place
// of resp, which is not a gRPC response: an error page from the backend or
// from a proxy in front of it. The HTTP status stays, as Envoy keeps it;
// grpc-status is the one gRPC clients derive from it (HTTPStatus), and
// grpc-message the first maxMessage bytes of the body, which is not read
// further (the status's text when the body is empty or compressed).
func notGRPC(resp *http.Response, ct string) *http.Response {
	var msg string
	if ce := resp.Header.Get("Content-Encoding"); ce == "" || strings.EqualFold(ce, "identity") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
		msg = strings.TrimSpace(string(b))
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	out := *resp
	out.Header = resp.Header.Clone()
	for _, k := range []string{"Content-Length", "Content-Encoding", "Transfer-Encoding", "Trailer"} {
		out.Header.Del(k)
	}
	out.Header.Set("Content-Type", ct)
	out.Header.Set("Grpc-Status", strconv.Itoa(HTTPStatus(resp.StatusCode)))
	out.Header.Set("Grpc-Message", proxy.GRPCEncode(msg))
	out.ContentLength = 0
	out.Trailer = nil
	out.Body = http.NoBody
	return &out
}

// maxMessage bounds the grpc-message taken from a non-gRPC answer's body.
const maxMessage = 1 << 10

// HTTPStatus is the gRPC status a gRPC client derives from an HTTP
// status that is not a gRPC answer (gRPC's "HTTP to gRPC Status Code
// Mapping"): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
// 404 UNIMPLEMENTED, 429, 502, 503 and 504 UNAVAILABLE, any other UNKNOWN.
func HTTPStatus(status int) int {
	switch status {
	case http.StatusBadRequest:
		return 13
	case http.StatusUnauthorized:
		return 16
	case http.StatusForbidden:
		return 7
	case http.StatusNotFound:
		return 12
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14
	}
	return 2
}

// Broken reports the error that ended a Response's body before the
// backend's trailers (nil: none): the client got a trailers frame with
// UNAVAILABLE (or DEADLINE_EXCEEDED) in their place, and the codec counts
// the attempt as broken off.
func Broken(rc io.ReadCloser) error {
	switch b := rc.(type) {
	case *body:
		return b.broken
	case *textEncoder:
		return b.r.broken
	}
	return nil
}

// body is a gRPC response's body followed by the trailers' frame.
type body struct {
	resp   *http.Response
	tail   []byte // the trailers' frame, once the body ended; then returned
	ended  bool
	broken error
}

func (b *body) Read(p []byte) (int, error) {
	if !b.ended {
		n, err := b.resp.Body.Read(p)
		if err == nil || n > 0 && err == io.EOF {
			if err == io.EOF {
				b.end(nil)
			}
			return n, nil
		}
		b.end(err)
		if n > 0 {
			return n, nil
		}
	}
	if len(b.tail) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.tail)
	b.tail = b.tail[n:]
	return n, nil
}

// end builds the trailers' frame: the backend's trailers, or (err, before
// any grpc-status) proxy.GRPCBroken's status.
func (b *body) end(err error) {
	b.ended = true
	tr := b.resp.Trailer
	if err != nil && err != io.EOF && tr.Get("Grpc-Status") == "" {
		b.broken = err
		code, msg := proxy.GRPCBroken(b.resp, err)
		tr = http.Header{"Grpc-Status": {strconv.Itoa(code)}, "Grpc-Message": {msg}}
	}
	b.tail = Trailers(tr)
}

func (b *body) Close() error { return b.resp.Body.Close() }

// Trailers is the gRPC-Web frame that carries tr: flag 0x80, the length,
// then "name: value\r\n" lines with names in lower case, sorted (each
// value of a name on its own line).
func Trailers(tr http.Header) []byte {
	keys := make([]string, 0, len(tr))
	for k := range tr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	f := make([]byte, 5, 64)
	f[0] = 0x80
	for _, k := range keys {
		for _, v := range tr[k] {
			f = append(f, strings.ToLower(k)...)
			f = append(f, ": "...)
			f = append(f, v...)
			f = append(f, "\r\n"...)
		}
	}
	binary.BigEndian.PutUint32(f[1:5], uint32(len(f)-5))
	return f
}

// textEncoder is a body in base64. Each message must reach the client as
// soon as the backend sent it, so whatever ends a frame (a message or the
// trailers) is encoded at once, padded; within a frame it encodes whole
// 3-byte groups and keeps the rest (at most 2 bytes) for the next read.
// Clients decode four characters at a time, so padding between frames is
// read as such (the gRPC-Web protocol allows it).
type textEncoder struct {
	r    *body
	raw  [3 << 10]byte
	have int // bytes of raw not yet encoded
	out  []byte
	enc  [4<<10 + 8]byte
	eof  bool
	// The frame the stream is in: header bytes seen (0–5), its header,
	// and its payload bytes still to come.
	hdrN int
	hdr  [5]byte
	left uint32
}

func (e *textEncoder) Read(p []byte) (int, error) {
	for len(e.out) == 0 {
		if e.eof {
			return 0, io.EOF
		}
		old := e.have
		n, err := e.r.Read(e.raw[e.have:])
		e.have += n
		if err != nil && err != io.EOF {
			return 0, err
		}
		end := e.frameEnd(old)
		if err == io.EOF {
			e.eof, end = true, e.have
		}
		k := 0
		if end > 0 { // through a frame's end: all of it, padded
			k = base64.StdEncoding.EncodedLen(end)
			base64.StdEncoding.Encode(e.enc[:k], e.raw[:end])
		}
		whole := (e.have - end) / 3 * 3 // then whole groups of what follows
		k2 := base64.StdEncoding.EncodedLen(whole)
		base64.StdEncoding.Encode(e.enc[k:k+k2], e.raw[end:end+whole])
		copy(e.raw[:], e.raw[end+whole:e.have])
		e.have -= end + whole
		e.out = e.enc[:k+k2]
	}
	n := copy(p, e.out)
	e.out = e.out[n:]
	return n, nil
}

// frameEnd follows the frames through raw[from:have] and returns the
// offset in raw just past the last frame that ends there (0: none).
func (e *textEncoder) frameEnd(from int) int {
	end := 0
	for pos := from; pos < e.have; {
		if e.hdrN < 5 {
			k := copy(e.hdr[e.hdrN:], e.raw[pos:e.have])
			e.hdrN += k
			pos += k
			if e.hdrN < 5 {
				break
			}
			e.left = binary.BigEndian.Uint32(e.hdr[1:])
		} else {
			k := int(min(uint32(e.have-pos), e.left))
			e.left -= uint32(k)
			pos += k
		}
		if e.hdrN == 5 && e.left == 0 {
			e.hdrN, end = 0, pos
		}
	}
	return end
}

func (e *textEncoder) Close() error { return e.r.Close() }
