package route

import "strings"

// NormalizePath normalises an escaped URL path the way routing sees it and
// the backend receives it (RFC 3986 §6.2.2): percent-encoded unreserved
// characters are decoded, other percent-encodings get upper-case hex,
// duplicate slashes are merged and dot-segments are removed (after decoding,
// so "/%2e%2e/" is a dot-segment too), and a stray '%' becomes "%25". "%2F" stays encoded: it is data, not a
// separator. It returns p itself, without allocating, when p is already
// normal. The result always starts with "/".
func NormalizePath(p string) string {
	if isNormal(p) {
		return p
	}
	// Decode unreserved escapes and canonicalise hex case.
	var b strings.Builder
	b.Grow(len(p) + 1)
	if !strings.HasPrefix(p, "/") {
		b.WriteByte('/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) && ishex(p[i+1]) && ishex(p[i+2]) {
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			if unreserved(d) {
				b.WriteByte(d)
			} else {
				b.WriteByte('%')
				b.WriteByte(upper(p[i+1]))
				b.WriteByte(upper(p[i+2]))
			}
			i += 2
			continue
		}
		if c == '%' {
			b.WriteString("%25") // a stray '%' is data; keep decoding idempotent
			continue
		}
		b.WriteByte(c)
	}
	return removeDots(b.String())
}

// isNormal reports whether p needs no change: it starts with "/", has no
// "//", no dot-segment and no percent sign.
func isNormal(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			return false
		case '/':
			if i+1 < len(p) && p[i+1] == '/' {
				return false
			}
		case '.':
			if p[i-1] == '/' && (i+1 == len(p) || p[i+1] == '/' ||
				(p[i+1] == '.' && (i+2 == len(p) || p[i+2] == '/'))) {
				return false
			}
		}
	}
	return true
}

// removeDots merges slashes and resolves "." and ".." segments; ".." never
// climbs above the root.
func removeDots(p string) string {
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "", ".":
			if last {
				out = append(out, "") // keep a trailing slash
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}
