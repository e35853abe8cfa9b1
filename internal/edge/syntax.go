package edge

// Character classes of RFC 9110/9112 and RFC 3986, as 256-entry tables.
const (
	cTchar  = 1 << iota // token character (method, field name)
	cValue              // field-value character: VCHAR, obs-text, SP, HTAB
	cTarget             // request-target character: VCHAR except '#'
	cHost               // reg-name character (unreserved, sub-delims, '%')
	cHex                // HEXDIG
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum || b < 0x80 && indexOf("!#$%&'*+-.^_`|~", b) {
			t[c] |= cTchar
		}
		if b == '\t' || b >= ' ' && b != 0x7f {
			t[c] |= cValue
		}
		// Strict about control bytes, '#' (a fragment is never sent) and
		// non-ASCII (clients percent-encode); lenient like nginx about the
		// other characters RFC 3986 leaves out ("<>\^`{|}), which real
		// clients put in query strings.
		if b > ' ' && b < 0x7f && b != '#' {
			t[c] |= cTarget
		}
		if alnum || indexOf("-._~!$&'()*+,;=%", b) {
			t[c] |= cHost
		}
		if '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			t[c] |= cHex
		}
	}
	return t
}()

func indexOf(s string, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return true
		}
	}
	return false
}

func isTchar(b byte) bool { return class[b]&cTchar != 0 }

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// TrimOWS is b without the optional whitespace (spaces and tabs) around
// it.
func TrimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hasToken reports whether the comma-separated list v holds the token tok
// (lower case), ignoring ASCII case and optional whitespace around elements,
// as httpguts.HeaderValuesContainsToken does for the proxy.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		elem := v
		if i := indexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if equalFold(TrimOWS(elem), tok) {
			return true
		}
	}
	return false
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// splitAuthority checks host [ ":" port ] (RFC 3986 authority without
// userinfo) and returns the host and the port, -1 when there is none. Strict
// where RFC 3986 is lax: the host is not empty, an IP literal holds only hex
// digits, ':' and '.', and a ':' must be followed by a port of 1 to 5
// digits no larger than 65535.
func splitAuthority(b []byte) (host []byte, port int, ok bool) {
	rest := b
	switch {
	case len(b) == 0:
		return nil, 0, false
	case b[0] == '[':
		end := indexByte(b, ']')
		if end < 3 { // at least "[::]"
			return nil, 0, false
		}
		for _, c := range b[1:end] {
			if class[c]&cHex == 0 && c != ':' && c != '.' {
				return nil, 0, false
			}
		}
		host, rest = b[:end+1], b[end+1:]
	default:
		i := 0
		for i < len(b) && b[i] != ':' {
			if class[b[i]]&cHost == 0 {
				return nil, 0, false
			}
			if b[i] == '%' && (i+2 >= len(b) || class[b[i+1]]&cHex == 0 || class[b[i+2]]&cHex == 0) {
				return nil, 0, false
			}
			i++
		}
		if i == 0 {
			return nil, 0, false
		}
		host, rest = b[:i], b[i:]
	}
	if len(rest) == 0 {
		return host, -1, true
	}
	if rest[0] != ':' || len(rest) < 2 || len(rest) > 6 {
		return nil, 0, false
	}
	port = 0
	for _, c := range rest[1:] {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		port = port*10 + int(c-'0')
	}
	if port > 65535 {
		return nil, 0, false
	}
	return host, port, true
}
