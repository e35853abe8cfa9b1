package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// HopFields are the hop-by-hop fields (RFC 9110 §7.6.1), removed in both
// directions besides those a Connection field names. Every codec removes
// these and no others.
var HopFields = [...]string{
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

// IsHop reports whether name, in any case, is one of HopFields.
func IsHop(name string) bool {
	for _, h := range HopFields {
		if len(h) == len(name) && strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// clientIP returns the address of the client: the peer, or, when the peer is
// a trusted proxy, the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy.
func clientIP(peer netip.Addr, h Fields, trusted []netip.Prefix) netip.Addr {
	if !IsTrusted(peer, trusted) {
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
			if !IsTrusted(ip, trusted) {
				return ip
			}
		}
	}
	return ip
}

// IsTrusted reports whether ip is in one of the trusted prefixes.
func IsTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Forwarding is the one decision, for every codec, about the forwarding
// fields of a request towards its backends. From a peer that is not a
// trusted proxy, the client's X-Forwarded-For, -Proto and -Host, Forwarded
// and X-Real-Ip are dropped; from a trusted one they stay, X-Forwarded-For
// gets the peer appended, and a non-empty X-Forwarded-Proto/-Host stays as
// sent. Otherwise sluice sets X-Forwarded-Proto to the listener's scheme and
// X-Forwarded-Host to the request's host.
type Forwarding struct {
	Trusted bool
	// KeepProto and KeepHost: the trusted peer's first X-Forwarded-Proto
	// (-Host) value is not empty and goes on as sent.
	KeepProto, KeepHost bool
	// Proto is the X-Forwarded-Proto that sluice sets: "http" or "https".
	Proto string
	// Host is the X-Forwarded-Host that sluice sets ("": none).
	Host string
	// ClientCert is the X-Forwarded-Client-Cert that sluice sets for a
	// client that presented a verified certificate ("": none). A client's
	// own field is dropped unless it comes from a trusted proxy and sluice
	// sets none.
	ClientCert string
	peer       netip.Addr
}

// NewForwarding decides the forwarding fields for a request from peer with
// host, over the request's fields h after hop-by-hop removal (a field the
// client's Connection names is not seen).
func (l *Listener) NewForwarding(peer netip.Addr, host string, h Fields) Forwarding {
	f := Forwarding{Trusted: IsTrusted(peer, l.Trusted), Proto: "http", Host: host, peer: peer}
	if l.TLS {
		f.Proto = "https"
	}
	if f.Trusted {
		v, _ := h.Value("X-Forwarded-Proto", 0)
		f.KeepProto = v != ""
		v, _ = h.Value("X-Forwarded-Host", 0)
		f.KeepHost = v != ""
	}
	return f
}

// Drops reports whether a client's field called name (any case) is left out
// of the request to backends: sluice sets it itself or does not trust it.
func (f *Forwarding) Drops(name string) bool {
	switch len(name) {
	case 9:
		return !f.Trusted && (strings.EqualFold(name, "Forwarded") || strings.EqualFold(name, "X-Real-Ip"))
	case 15:
		return strings.EqualFold(name, "X-Forwarded-For")
	case 16:
		return !f.KeepHost && strings.EqualFold(name, "X-Forwarded-Host")
	case 17:
		return !f.KeepProto && strings.EqualFold(name, "X-Forwarded-Proto")
	case 23:
		return (!f.Trusted || f.ClientCert != "") && strings.EqualFold(name, "X-Forwarded-Client-Cert")
	}
	return false
}

// AppendFor appends the X-Forwarded-For value sent to backends: a trusted
// peer's values (from h, after hop-by-hop removal), joined, then the peer.
func (f *Forwarding) AppendFor(dst []byte, h Fields) []byte {
	if f.Trusted {
		for i := 0; ; i++ {
			v, ok := h.Value("X-Forwarded-For", i)
			if !ok {
				break
			}
			dst = append(dst, v...)
			dst = append(dst, ", "...)
		}
	}
	return f.peer.AppendTo(dst)
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

// ValidRequestID reports whether a client-supplied X-Request-Id is kept:
// 1-200 visible ASCII characters.
func ValidRequestID(s string) bool {
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
