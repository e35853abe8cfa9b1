package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are removed in both directions (RFC 9110 §7.6.1), besides the
// ones a Connection header names.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopHeaders deletes hop-by-hop fields from h, including every field
// that a Connection header names. It runs before sluice adds its own
// headers, so a client cannot name X-Forwarded-For in Connection to strip
// what sluice sets.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// upgradeType returns the protocol a request asks to upgrade to, in lower
// case, when it carries both "Connection: upgrade" and an Upgrade header.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h.Get("Upgrade")))
}

// clientIP returns the address of the client: the peer, or, when the peer is
// a trusted proxy, the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy.
func clientIP(peer netip.Addr, h fields, trusted []netip.Prefix) netip.Addr {
	if !isTrusted(peer, trusted) {
		return peer
	}
	n := 0
	for _, ok := h.Value("X-Forwarded-For", n); ok; _, ok = h.Value("X-Forwarded-For", n) {
		n++
	}
	ip := peer
	for i := n - 1; i >= 0; i-- {
		v, _ := h.Value("X-Forwarded-For", i)
		for more := true; more; {
			part := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				part, v = v[j+1:], v[:j]
			} else {
				more = false
			}
			a, err := netip.ParseAddr(strings.TrimSpace(part))
			if err != nil {
				return ip
			}
			ip = a.Unmap()
			if !isTrusted(ip, trusted) {
				return ip
			}
		}
	}
	return ip
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// setForwarded sets X-Forwarded-For/-Proto/-Host on an outbound header map
// from which hop-by-hop fields are already removed. From an untrusted peer,
// incoming forwarding headers are replaced, never trusted.
func setForwarded(out http.Header, peer netip.Addr, trusted bool, host string, tls bool) {
	peerStr := peer.String()
	if trusted {
		if prior := out["X-Forwarded-For"]; len(prior) > 0 {
			out.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+peerStr)
		} else {
			out.Set("X-Forwarded-For", peerStr)
		}
	} else {
		out.Del("Forwarded")
		out.Del("X-Real-Ip")
		out.Set("X-Forwarded-For", peerStr)
		out.Del("X-Forwarded-Proto")
		out.Del("X-Forwarded-Host")
	}
	if out.Get("X-Forwarded-Proto") == "" {
		if tls {
			out.Set("X-Forwarded-Proto", "https")
		} else {
			out.Set("X-Forwarded-Proto", "http")
		}
	}
	if out.Get("X-Forwarded-Host") == "" && host != "" {
		out.Set("X-Forwarded-Host", host)
	}
}

// RequestIDs makes X-Request-Id values: a random per-process prefix and a
// counter, so ids are unique without a random read per request.
type RequestIDs struct {
	prefix string
	n      atomic.Uint64
}

// NewRequestIDs returns a generator with a fresh random prefix.
func NewRequestIDs() *RequestIDs {
	var b [6]byte
	rand.Read(b[:])
	return &RequestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// Next returns a new id.
func (g *RequestIDs) Next() string {
	var buf [32]byte
	return string(g.AppendNext(buf[:0]))
}

// AppendNext appends a new id to b.
func (g *RequestIDs) AppendNext(b []byte) []byte {
	b = append(b, g.prefix...)
	return strconv.AppendUint(b, g.n.Add(1), 16)
}

// validRequestID reports whether a client-supplied X-Request-Id is kept:
// 1-200 visible ASCII characters.
func validRequestID(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
