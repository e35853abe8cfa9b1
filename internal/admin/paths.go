package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
)

const poolsPrefix = "/api/v1/pools/"

// backendActions are the literal segments that may follow {address}.
var backendActions = map[string]bool{"drain": true, "enable": true, "disable": true, "weight": true}

// unescapedAddress returns, for a request whose backend address was put in
// the path without escaping its slashes (/api/v1/pools/web/backends/
// http://10.0.0.1:8080/drain), a message that says how to escape it; ""
// for any other request. Left alone, ServeMux would redirect such a path
// to a cleaned one (// merged) that names no backend, and curl, which does
// not follow the redirect of a POST, would report nothing.
func unescapedAddress(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), poolsPrefix)
	if !ok {
		return ""
	}
	poolSeg, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	rest, ok = strings.CutPrefix(rest, "backends/")
	if !ok {
		return ""
	}
	first, _, ok := strings.Cut(rest, "/")
	if !ok || !isScheme(first) {
		return ""
	}
	addr, action := rest, ""
	if i := strings.LastIndexByte(rest, '/'); backendActions[rest[i+1:]] {
		addr, action = rest[:i], rest[i:]
	}
	address, err := url.PathUnescape(addr)
	if err != nil {
		address = addr
	}
	// A client may have merged the two slashes already.
	if scheme, hostport, _ := strings.Cut(address, ":"); !strings.HasPrefix(hostport, "//") {
		address = scheme + "://" + strings.TrimLeft(hostport, "/")
	}
	escaped := poolsPrefix + poolSeg + "/backends/" + url.QueryEscape(address) + action
	if r.URL.RawQuery != "" {
		escaped += "?" + r.URL.RawQuery
	}
	return fmt.Sprintf("the backend address %q must be escaped in the path: it is one segment, and its slashes would end it. "+
		"Call %s %s instead (JavaScript: encodeURIComponent(address); shell: jq -rn --arg a ADDRESS '$a|@uri')",
		address, r.Method, escaped)
}

// isScheme reports whether seg is a URL scheme and its colon ("http:").
func isScheme(seg string) bool {
	name, ok := strings.CutSuffix(seg, ":")
	if !ok || name == "" {
		return false
	}
	for i, c := range name {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// cleanPath is p as ServeMux would redirect it: dot segments resolved,
// slashes merged, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}
