package edge

import "bytes"

// Head is one parsed request head. Its byte slices alias the parsed input and
// are valid as long as it is.
type Head struct {
	Method []byte
	Target []byte
	// Minor is the minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
	Minor int
	// Host is the Host field's value as sent (optional whitespace trimmed);
	// nil when there is none, which only HTTP/1.0 may do. net/http replaces
	// it by the target's authority for an absolute-form target.
	Host []byte
	// AbsoluteForm: the target is "http://authority/..." (its authority
	// was checked against Host).
	AbsoluteForm bool
	// ContentLength is the body length, -1 when the head has no
	// Content-Length (then the body is chunked, or empty).
	ContentLength int64
	Chunked       bool
	// Close: the connection ends after this exchange ("Connection: close",
	// or HTTP/1.0 without "Connection: keep-alive").
	Close bool
	// WebSocket: the request asks to switch to WebSocket, by the proxy's own
	// rule: "upgrade" among the Connection tokens and a first Upgrade field
	// of exactly "websocket" (any case). Other upgrades (h2c) are not refused;
	// the proxy drops them.
	WebSocket bool
	// Fields is the number of field lines.
	Fields int
	// Lead is the number of bytes of empty lines skipped before the request
	// line (RFC 9112 §2.2); they count in the returned length but not in
	// MaxHeaderBytes.
	Lead int
}

// ParseRequestHead parses the request head at the start of b into h. Once b
// holds the whole head it returns the head's length, its terminating empty
// line included. While b ends before the head does it returns 0 and a nil
// error; a caller that has more bytes calls again with all of them. A refused
// head gives an *Error. What shows before the head ends (a bad method, a
// target over MaxURIBytes: 414, a head over MaxHeaderBytes: 431) is refused as
// soon as b holds it, and the verdict never depends on how much of the input
// b holds. It does not allocate.
func ParseRequestHead(b []byte, lim Limits, h *Head) (int, error) {
	lim = lim.resolved()
	var s scanner
	n, err := s.scan(b, &lim)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if err := parseHead(b[:n], s.lead, &lim, h); err != nil {
		return 0, err
	}
	return n, nil
}

// scanner finds the end of a head in bytes that arrive piecemeal, and refuses
// what it can before the end arrives: a bad method character, a request
// target over MaxURIBytes, a head over MaxHeaderBytes, a CR that does not end
// a line where it decides where the head ends (NUL and CR elsewhere are
// refused by parseHead). It looks at each byte once, so a head delivered a
// byte at a time costs O(n), and its verdicts depend only on the bytes, never
// on how they arrive.
type scanner struct {
	state  uint8
	n      int // bytes scanned, lead included
	lead   int // bytes of leading empty lines
	target int // bytes of the request target so far
}

const (
	scLead   = iota // before the request line: empty lines are skipped
	scLeadCR        // in the lead, after a CR
	scMethod
	scTarget
	scLine // in the rest of a line
	scLF   // at the start of a field line
	scLFCR // at the start of a field line, after a CR
)

// scan continues over b[s.n:], where b holds the head from its first byte. It
// returns the head's length once it has seen its end, else 0.
func (s *scanner) scan(b []byte, lim *Limits) (int, *Error) {
	for i := s.n; i < len(b); i++ {
		c := b[i]
		if c == 0 && s.state != scLine { // scLine skips bytes unseen
			return 0, errNUL
		}
		switch s.state {
		case scLead:
			switch {
			case c == '\n':
				s.lead = i + 1
			case c == '\r':
				s.state = scLeadCR
			case isTchar(c):
				s.state = scMethod
			default:
				return 0, errMethod
			}
			if i+1 > maxLeadBytes && s.state != scMethod {
				return 0, errLead
			}
		case scLeadCR:
			if c != '\n' {
				return 0, errBareCR
			}
			s.lead = i + 1
			s.state = scLead
		case scMethod:
			if c == ' ' {
				s.state = scTarget
			} else if !isTchar(c) {
				return 0, errMethod
			}
		case scTarget:
			switch c {
			case ' ':
				if s.target == 0 {
					return 0, errRequestLine
				}
				s.state = scLine
			case '\r', '\n':
				return 0, errRequestLine
			default:
				if s.target++; s.target > lim.MaxURIBytes {
					return 0, errURITooLong
				}
			}
		case scLine:
			// Skip to the end of the line: what lies in it is for parseHead
			// to judge, once the head is whole.
			if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
				i += j
				s.state = scLF
			} else {
				i = len(b) - 1
			}
		case scLF:
			switch c {
			case '\n':
				return s.end(i, lim)
			case '\r':
				s.state = scLFCR
			default:
				s.state = scLine
			}
		case scLFCR:
			if c != '\n' {
				return 0, errBareCR
			}
			return s.end(i, lim)
		}
		if i+1-s.lead > lim.MaxHeaderBytes {
			return 0, errHeadTooLarge
		}
	}
	s.n = len(b)
	return 0, nil
}

func (s *scanner) end(i int, lim *Limits) (int, *Error) {
	if i+1-s.lead > lim.MaxHeaderBytes {
		return 0, errHeadTooLarge
	}
	s.n = i + 1
	return i + 1, nil
}

// line returns the line of b that starts at p, without its line ending, and
// the position after it. The scanner has ensured b ends with a line end and
// that a CR only appears before an LF.
func line(b []byte, p int) ([]byte, int) {
	i := bytes.IndexByte(b[p:], '\n')
	l := b[p : p+i]
	if len(l) > 0 && l[len(l)-1] == '\r' {
		l = l[:len(l)-1]
	}
	return l, p + i + 1
}

// parseHead parses a whole head b (as found by the scanner, lead bytes first).
func parseHead(b []byte, lead int, lim *Limits, h *Head) *Error {
	*h = Head{Lead: lead, ContentLength: -1}
	reqLine, p := line(b, lead)
	if err := h.requestLine(reqLine, lim); err != nil {
		return err
	}
	var f fieldState
	for {
		var l []byte
		l, p = line(b, p)
		if len(l) == 0 {
			break
		}
		if h.Fields++; h.Fields > lim.MaxHeaders {
			return errTooManyFields
		}
		if err := h.field(l, &f); err != nil {
			return err
		}
	}
	return h.finish(&f)
}

// requestLine parses "method SP request-target SP HTTP-version".
func (h *Head) requestLine(l []byte, lim *Limits) *Error {
	sp := indexByte(l, ' ')
	h.Method = l[:sp] // the scanner saw a method and a space
	rest := l[sp+1:]
	sp = indexByte(rest, ' ')
	h.Target, rest = rest[:sp], rest[sp+1:]

	v := rest
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return errVersion
	}
	major, minor := int(v[5]-'0'), int(v[7]-'0')
	if string(h.Method) == "PRI" {
		// The HTTP/2 preface: h2c with prior knowledge is told apart
		// before the guard (server's h2c detection), so here it is refused.
		return errPRI
	}
	switch {
	case major == 1 && minor <= 1:
		h.Minor = minor
	case major == 0:
		return errVersion
	case major == 2 && minor == 0:
		return errH2
	default:
		return errVersionRefused
	}
	// Refuse tunnels and TRACE (it reflects credentials) in any case: some
	// backends compare methods case-insensitively.
	if equalFold(h.Method, "connect") || equalFold(h.Method, "trace") {
		return errMethodRefused
	}
	return h.target()
}

// CheckOriginForm checks the origin-form request target of a request with
// method ("/path?query", or "*" for OPTIONS only) with the rules of the
// HTTP/1.1 parser: its characters, and that every '%' in the path starts an
// escape. Codecs whose wire format is not HTTP/1 (HTTP/2's :path) check
// their targets with it.
func CheckOriginForm(method, t string) error {
	if t == "" || t[0] != '/' && t != "*" {
		return errTarget
	}
	h := Head{Target: []byte(t), Method: []byte(method)}
	if err := h.target(); err != nil {
		return err
	}
	return nil
}

// target checks the request-target's form and characters.
func (h *Head) target() *Error {
	t := h.Target
	if string(t) == "*" {
		if string(h.Method) != "OPTIONS" {
			return errAsterisk
		}
		return nil
	}
	inQuery := false
	for i, c := range t {
		if class[c]&cTarget == 0 {
			return errTarget
		}
		// A '%' in the path must start an escape (RFC 3986 §2.1): the
		// proxy normalises the path and net/http cannot parse it otherwise.
		// The query is passed on as it is.
		switch {
		case c == '?':
			inQuery = true
		case c == '%' && !inQuery && (i+2 >= len(t) || class[t[i+1]]&cHex == 0 || class[t[i+2]]&cHex == 0):
			return errEscape
		}
	}
	if t[0] == '/' {
		return nil
	}
	// absolute-form; anything else (authority-form belongs to CONNECT) is
	// refused.
	rest := t
	switch {
	case len(t) > 7 && equalFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && equalFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return errTarget
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	if indexByte(rest[:end], '@') >= 0 {
		return errUserinfo
	}
	if _, _, ok := splitAuthority(rest[:end]); !ok {
		return errTarget
	}
	h.AbsoluteForm = true
	return nil
}

// fieldState is what parsing the fields learns beyond the Head.
type fieldState struct {
	hosts, lengths, encodings int
	upgrade                   []byte // the first Upgrade field
	sawUpgrade                bool
	connUpgrade, keepAlive    bool
}

// field parses one field line "name: value".
func (h *Head) field(l []byte, f *fieldState) *Error {
	if l[0] == ' ' || l[0] == '\t' {
		return errObsFold
	}
	i := 0
	for ; i < len(l) && l[i] != ':'; i++ {
		if !isTchar(l[i]) {
			if l[i] == ' ' || l[i] == '\t' {
				return errSpaceColon
			}
			return errFieldName
		}
	}
	if i == 0 || i == len(l) {
		return errFieldName
	}
	name, value := l[:i], l[i+1:]
	for _, c := range value {
		if class[c]&cValue == 0 {
			return errFieldValue
		}
	}
	value = TrimOWS(value)

	switch len(name) {
	case 4:
		if equalFold(name, "host") {
			if f.hosts++; f.hosts > 1 {
				return errTwoHosts
			}
			if _, _, ok := splitAuthority(value); !ok {
				return errHost
			}
			h.Host = value
		}
	case 7:
		if equalFold(name, "upgrade") && !f.sawUpgrade {
			f.sawUpgrade = true
			f.upgrade = value
		}
		// Trailer announces the field names of a trailer section: a list
		// of tokens, which net/http's Transport insists on.
		if equalFold(name, "trailer") && !tokenList(value) {
			return errTrailerDecl
		}
	case 10:
		if equalFold(name, "connection") {
			if hasToken(value, "close") {
				h.Close = true
			}
			if hasToken(value, "keep-alive") {
				f.keepAlive = true
			}
			if hasToken(value, "upgrade") {
				f.connUpgrade = true
			}
		}
	case 14:
		if equalFold(name, "content-length") {
			if f.lengths++; f.lengths > 1 {
				return errTwoCL
			}
			n, ok := parseLength(value)
			if !ok {
				return errCL
			}
			h.ContentLength = n
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			// Only a single "chunked": a list ("gzip, chunked", "chunked,
			// chunked") or another coding is where front and back ends
			// disagree about framing (request smuggling), and no client
			// needs it. RFC 9112 would answer 501 to an unknown coding; we
			// answer 400 to all of them alike.
			if f.encodings++; f.encodings > 1 {
				return errTwoTE
			}
			if !equalFold(value, "chunked") {
				return errTE
			}
			h.Chunked = true
		}
	}
	return nil
}

// tokenList reports whether v is a comma-separated list of tokens (empty
// elements and optional whitespace allowed).
func tokenList(v []byte) bool {
	for len(v) > 0 {
		elem := v
		if i := indexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		for _, c := range TrimOWS(elem) {
			if !isTchar(c) {
				return false
			}
		}
	}
	return true
}

// finish applies the rules that involve more than one field.
func (h *Head) finish(f *fieldState) *Error {
	if h.Chunked && h.ContentLength >= 0 {
		return errCLandTE
	}
	if h.Chunked && h.Minor == 0 {
		return errTE10
	}
	if h.Host == nil && h.Minor == 1 {
		return errNoHost
	}
	if h.AbsoluteForm && h.Host != nil && !sameAuthority(h.Target, h.Host) {
		return errAuthority
	}
	if h.Minor == 0 && !f.keepAlive {
		h.Close = true
	}
	// The proxy trims the Upgrade value with strings.TrimSpace; so do we, so
	// that the guard never stops parsing where the proxy sees no upgrade.
	h.WebSocket = f.connUpgrade && f.sawUpgrade && equalFold(bytes.TrimSpace(f.upgrade), "websocket")
	return nil
}

// sameAuthority compares an absolute-form target's authority with Host,
// ignoring ASCII case and the scheme's default port.
func sameAuthority(target, host []byte) bool {
	def, rest := 80, target[7:]
	if lower(target[4]) == 's' {
		def, rest = 443, target[8:]
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	th, tp, _ := splitAuthority(rest[:end])
	hh, hp, _ := splitAuthority(host)
	if tp < 0 {
		tp = def
	}
	if hp < 0 {
		hp = def
	}
	return tp == hp && equalFoldBytes(th, hh)
}

// parseLength parses 1*DIGIT into an int64, refusing overflow.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
