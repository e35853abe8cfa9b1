package proxy

import (
	"net/textproto"
	"strings"
)

// HashKey says what part of a request the hash policies hash (hash_key).
// The zero value hashes nothing (the policies use the client IP themselves
// for client_ip).
type HashKey struct {
	kind keyKind
	name string // header name (canonical), cookie name or query parameter
}

type keyKind uint8

const (
	keyNone keyKind = iota
	keyHeader
	keyCookie
	keyPath
	keyQuery
)

// ParseHashKey turns a validated hash_key into a HashKey.
func ParseHashKey(s string) HashKey {
	kind, name, _ := strings.Cut(s, ":")
	switch kind {
	case "header":
		return HashKey{keyHeader, textproto.CanonicalMIMEHeaderKey(name)}
	case "cookie":
		return HashKey{keyCookie, name}
	case "path":
		return HashKey{kind: keyPath}
	case "query":
		return HashKey{keyQuery, name}
	}
	return HashKey{}
}

// extract returns the key of a request with header h, normalised path and
// raw query. It does not allocate: it returns substrings of what the request
// already holds.
func (k HashKey) extract(h Fields, path, rawQuery string) string {
	switch k.kind {
	case keyHeader:
		v, _ := h.Value(k.name, 0)
		return v
	case keyCookie:
		return cookie(h, k.name)
	case keyPath:
		return path
	case keyQuery:
		v, _ := findPair(rawQuery, k.name, '&')
		return v
	}
	return ""
}

// cookie returns the value of the first cookie called name.
func cookie(h Fields, name string) string {
	for i := 0; ; i++ {
		line, ok := h.Value("Cookie", i)
		if !ok {
			return ""
		}
		if v, ok := findPair(line, name, ';'); ok {
			return v
		}
	}
}

// findPair finds name=value in a sep-separated list and returns the raw
// value.
func findPair(s, name string, sep byte) (string, bool) {
	for s != "" {
		var part string
		if i := strings.IndexByte(s, sep); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			part, s = s, ""
		}
		part = strings.TrimSpace(part)
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}
