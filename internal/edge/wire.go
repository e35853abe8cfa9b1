package edge

import (
	"iter"
	"net/http"
)

// This file holds what the HTTP/1.1 engine needs beyond ParseRequestHead:
// walking the fields of a parsed head, the chunked tracker as an exported
// type, and a strict parser of response heads from backends.

// Field is one field line of a head that ParseRequestHead or
// ParseResponseHead accepted: its name as sent and its value without
// optional whitespace. Both alias the head.
type Field struct {
	Name, Value []byte
}

// Fields iterates over the field lines of the accepted head b from position
// first (see FirstField and ResponseHead.First). It allocates nothing.
func Fields(b []byte, first int) iter.Seq[Field] {
	return func(yield func(Field) bool) {
		for p := first; ; {
			f, next, ok := NextField(b, p)
			if !ok || !yield(f) {
				return
			}
			p = next
		}
	}
}

// NextField returns the field line of the accepted head b that starts at p,
// and the position of the next one; ok is false at the empty line that ends
// the head. Start with p = FirstField(b).
func NextField(b []byte, p int) (f Field, next int, ok bool) {
	l, next := line(b, p)
	if len(l) == 0 {
		return Field{}, next, false
	}
	i := indexByte(l, ':')
	return Field{Name: l[:i], Value: TrimOWS(l[i+1:])}, next, true
}

// FirstField returns the position of the first field line of the accepted
// head b: just after its start line (lead bytes of a request included).
func FirstField(b []byte, lead int) int {
	_, p := line(b, lead)
	return p
}

// EqualFold reports whether b equals the lower-case ASCII string s,
// ignoring ASCII case.
func EqualFold(b []byte, s string) bool { return equalFold(b, s) }

// HasToken reports whether the comma-separated list v holds the lower-case
// token tok, ignoring case and optional whitespace.
func HasToken(v []byte, tok string) bool { return hasToken(v, tok) }

// Chunked follows a chunked body (RFC 9112 §7.1) and says where it ends;
// see chunked for the rules. The zero value is at the start of a body.
type Chunked struct {
	k   chunked
	lim Limits
}

// NewChunked returns a tracker whose trailer section is bounded by lim
// (MaxHeaderBytes and MaxHeaders).
func NewChunked(lim Limits) Chunked { return Chunked{lim: lim.resolved()} }

// Feed consumes a prefix of b: the n bytes that belong to the body and are
// valid, and either done (the body ended after them) or an error.
func (c *Chunked) Feed(b []byte) (n int, done bool, err error) {
	n, done, e := c.k.feed(b, &c.lim)
	if e != nil {
		return n, false, e
	}
	return n, done, nil
}

// DataLeft is the number of chunk-data bytes that may follow at once; they
// may be copied without Feed (then call Skip).
func (c *Chunked) DataLeft() int64 { return c.k.dataLeft() }

// Data is the number of chunk-data bytes (the content) so far.
func (c *Chunked) Data() int64 { return c.k.data }

// Skip accounts for n ≤ DataLeft() bytes of chunk data copied without Feed.
func (c *Chunked) Skip(n int) { c.k.consumeData(n) }

// InTrailer reports whether the bytes fed from now on belong to the trailer
// section (after the last chunk, its final empty line included).
func (c *Chunked) InTrailer() bool { return c.k.state >= ckTrailer && c.k.state < ckDone }

// ResponseHead is one parsed response head from a backend.
type ResponseHead struct {
	// Minor is the minor version of HTTP/1.x.
	Minor  int
	Status int
	// ContentLength is -1 when the head has none (or is chunked).
	ContentLength int64
	Chunked       bool
	// Close: the backend will close the connection after this response.
	Close bool
	// Upgrade is the first Upgrade field's value (nil when none).
	Upgrade []byte
	// First is the position of the first field line.
	First int
}

// Limits on response heads: backends are trusted more than clients, but a
// broken one must not make sluice buffer without bound (net/http's
// Transport allows 1 MiB as well).
const (
	MaxResponseHeaderBytes = 1 << 20
	maxResponseFields      = 1000
)

var (
	errRespTooLarge = &Error{Status: http.StatusBadGateway, Reason: "response head too large"}
	errRespStatus   = &Error{Status: http.StatusBadGateway, Reason: "malformed status line"}
	errRespField    = &Error{Status: http.StatusBadGateway, Reason: "malformed response header field"}
	errRespCL       = &Error{Status: http.StatusBadGateway, Reason: "invalid or conflicting Content-Length in response"}
	errRespTE       = &Error{Status: http.StatusBadGateway, Reason: "unsupported Transfer-Encoding in response"}
	errRespBareCR   = &Error{Status: http.StatusBadGateway, Reason: "CR not followed by LF in response head"}
)

// ParseResponseHead parses the response head at the start of b, as
// ParseRequestHead does for requests: 0 and nil while b ends before the
// head does, the head's length once it is whole, an *Error (status 502)
// when it is malformed. Like net/http's Transport it accepts bare LF line
// ends and a missing reason phrase, and a chunked Transfer-Encoding
// overrides Content-Length (which it then ignores); unlike it, it refuses
// obs-fold and other transfer codings. It does not allocate.
func ParseResponseHead(b []byte, h *ResponseHead) (int, error) {
	n, err := responseHeadEnd(b)
	if n == 0 {
		return 0, err
	}
	*h = ResponseHead{ContentLength: -1}
	status, p := line(b[:n], 0)
	if err := h.statusLine(status); err != nil {
		return 0, err
	}
	h.First = p
	var lengths, fields int
	keepAlive := false
	for {
		var l []byte
		l, p = line(b[:n], p)
		if len(l) == 0 {
			break
		}
		if fields++; fields > maxResponseFields {
			return 0, errRespTooLarge
		}
		if l[0] == ' ' || l[0] == '\t' {
			return 0, errRespField
		}
		i := 0
		for ; i < len(l) && l[i] != ':'; i++ {
			if !isTchar(l[i]) {
				return 0, errRespField
			}
		}
		if i == 0 || i == len(l) {
			return 0, errRespField
		}
		name, value := l[:i], l[i+1:]
		for _, c := range value {
			if class[c]&cValue == 0 {
				if c == '\r' {
					return 0, errRespBareCR
				}
				return 0, errRespField
			}
		}
		value = TrimOWS(value)
		switch {
		case equalFold(name, "content-length"):
			v, ok := parseLength(value)
			if !ok || lengths > 0 && v != h.ContentLength {
				return 0, errRespCL
			}
			lengths++
			h.ContentLength = v
		case equalFold(name, "transfer-encoding"):
			if h.Chunked || !equalFold(value, "chunked") {
				return 0, errRespTE
			}
			h.Chunked = true
		case equalFold(name, "connection"):
			if hasToken(value, "close") {
				h.Close = true
			}
			if hasToken(value, "keep-alive") {
				keepAlive = true
			}
		case equalFold(name, "upgrade"):
			if h.Upgrade == nil {
				h.Upgrade = value
			}
		}
	}
	if h.Chunked {
		if lengths > 0 {
			// Both framings (RFC 9112 §6.1): chunked wins, and the
			// connection is not used again, as HAProxy does.
			h.Close = true
		}
		h.ContentLength = -1
	}
	if h.Minor == 0 && !keepAlive {
		h.Close = true
	}
	return n, nil
}

// responseHeadEnd returns the length of the response head at the start of
// b, through its empty line: 0 and nil while b ends before it does.
func responseHeadEnd(b []byte) (int, error) {
	for p := 0; ; {
		i := indexByte(b[p:], '\n')
		if i < 0 {
			if len(b) > MaxResponseHeaderBytes {
				return 0, errRespTooLarge
			}
			return 0, nil
		}
		end := p + i
		if end == p || end == p+1 && b[p] == '\r' {
			if p == 0 {
				return 0, errRespStatus // an empty first line
			}
			return end + 1, nil
		}
		p = end + 1
		if p > MaxResponseHeaderBytes {
			return 0, errRespTooLarge
		}
	}
}

// statusLine parses "HTTP/1.x SP 3DIGIT [SP reason]"; a status outside
// 100–599 is refused (RFC 9110 §15: no other class exists, and a proxy
// cannot relay one unambiguously).
func (h *ResponseHead) statusLine(l []byte) *Error {
	if len(l) < 12 || string(l[:7]) != "HTTP/1." || l[7] < '0' || l[7] > '9' || l[8] != ' ' {
		return errRespStatus
	}
	h.Minor = int(l[7] - '0')
	s := 0
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return errRespStatus
		}
		s = s*10 + int(c-'0')
	}
	if s < 100 || s > 599 || len(l) > 12 && l[12] != ' ' {
		return errRespStatus
	}
	for _, c := range l[12:] {
		if class[c]&cValue == 0 {
			return errRespStatus
		}
	}
	h.Status = s
	return nil
}

// NoBody reports whether a response to method with this status has no
// body whatever its header says (RFC 9112 §6.3): 1xx, 204, 304, and any
// answer to HEAD.
func NoBody(head bool, status int) bool {
	return head || status < 200 || status == 204 || status == 304
}
