package proxy

import (
	"net/http"
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

// extract returns the key of r (path is the normalised path). It does not
// allocate: it returns substrings of what the request already holds.
func (k HashKey) extract(r *http.Request, path string) string {
	switch k.kind {
	case keyHeader:
		if v := r.Header[k.name]; len(v) > 0 {
			return v[0]
		}
	case keyCookie:
		for _, line := range r.Header["Cookie"] {
			if v, ok := findPair(line, k.name, ';'); ok {
				return v
			}
		}
	case keyPath:
		return path
	case keyQuery:
		v, _ := findPair(r.URL.RawQuery, k.name, '&')
		return v
	}
	return ""
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
