package main

import (
	"net/netip"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
)

// The heads the prototype sends are those sluice's engine sends with its
// default config (internal/proxy/h1 buildOutbound, appendResponseHead), so
// that the prototype does the same per-request work on them: the request
// line with the normalised path, the client's fields less hop-by-hop ones,
// those its Connection names and the forwarding fields sluice sets itself,
// then X-Forwarded-For/-Proto/-Host and X-Request-Id (the client's, when
// valid, else a new one); the response's fields less hop-by-hop ones, with
// sluice's X-Request-Id and the framing and Connection fields.

// bstr views b as a string without copying; the string must not outlive b.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// connNames holds the values of a head's Connection fields.
type connNames struct {
	v [4][]byte
	n int
}

func (cn *connNames) collect(head []byte, first int) {
	for f := range edge.Fields(head, first) {
		if len(f.Name) == 10 && edge.EqualFold(f.Name, "connection") && cn.n < len(cn.v) {
			cn.v[cn.n] = f.Value
			cn.n++
		}
	}
}

// names reports whether a Connection field lists the field name.
func (cn *connNames) names(name []byte) bool {
	if cn.n == 0 || len(name) > 64 {
		return false
	}
	var lb [64]byte
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lb[i] = c
	}
	low := bstr(lb[:len(name)])
	for _, v := range cn.v[:cn.n] {
		if edge.HasToken(v, low) {
			return true
		}
	}
	return false
}

// dropsForwarding reports the client's forwarding fields that sluice, with
// no trusted proxies configured, replaces or drops (proxy.Forwarding.Drops).
func dropsForwarding(name []byte) bool {
	switch len(name) {
	case 9:
		return edge.EqualFold(name, "forwarded") || edge.EqualFold(name, "x-real-ip")
	case 15:
		return edge.EqualFold(name, "x-forwarded-for")
	case 16:
		return edge.EqualFold(name, "x-forwarded-host")
	case 17:
		return edge.EqualFold(name, "x-forwarded-proto")
	case 23:
		return edge.EqualFold(name, "x-forwarded-client-cert")
	}
	return false
}

// appendOutbound appends the head sent to the backend for the request
// head h (bytes hb) and sets x.id.
func appendOutbound(o []byte, h *edge.Head, hb []byte, peer netip.Addr, x *exchange, cfg *config) []byte {
	first := edge.FirstField(hb, h.Lead)
	var cn connNames
	cn.collect(hb, first)
	x.id = nil
	for f := range edge.Fields(hb, first) {
		if len(f.Name) == 12 && edge.EqualFold(f.Name, "x-request-id") {
			if proxy.ValidRequestID(bstr(f.Value)) {
				x.id = append(x.idb[:0], f.Value...)
			}
			break
		}
	}
	if x.id == nil {
		x.id = cfg.ids.AppendNext(x.idb[:0])
	}
	host := bstr(h.Host)
	authority, escaped, query := proxy.SplitTarget(bstr(h.Target))
	if h.AbsoluteForm {
		host = authority
	}
	x.host, x.path, x.query = host, route.NormalizePath(escaped), query // for -core
	o = append(o, h.Method...)
	o = append(o, ' ')
	o = append(o, x.path...)
	if query != "" {
		o = append(o, '?')
		o = append(o, query...)
	}
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, host...)
	o = append(o, "\r\n"...)
	for f := range edge.Fields(hb, first) {
		n := bstr(f.Name)
		if proxy.IsHop(n) || cn.names(f.Name) || dropsForwarding(f.Name) ||
			len(n) == 4 && edge.EqualFold(f.Name, "host") || len(n) == 12 && edge.EqualFold(f.Name, "x-request-id") {
			continue
		}
		o = append(o, f.Name...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Forwarded-For: "...)
	o = peer.AppendTo(o)
	o = append(o, "\r\nX-Forwarded-Proto: http\r\n"...)
	if host != "" {
		o = append(o, "X-Forwarded-Host: "...)
		o = append(o, host...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Request-Id: "...)
	o = append(o, x.id...)
	o = append(o, "\r\n"...)
	if h.Chunked {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(o, "\r\n"...)
}

// appendResponseHead appends the head the client gets for the backend's
// response head: its status line as HTTP/1.1, its fields less hop-by-hop
// ones, those its Connection names and X-Request-Id, then sluice's
// X-Request-Id, the framing for mode and Connection: close.
func appendResponseHead(o, head []byte, rh *edge.ResponseHead, id []byte, mode int, closeConn bool) []byte {
	sl := head[8 : rh.First-1] // " 200 OK" and maybe a CR
	if n := len(sl); n > 0 && sl[n-1] == '\r' {
		sl = sl[:n-1]
	}
	o = append(o, "HTTP/1.1"...)
	o = append(o, sl...)
	o = append(o, "\r\n"...)
	var cn connNames
	cn.collect(head, rh.First)
	for f := range edge.Fields(head, rh.First) {
		n := bstr(f.Name)
		if proxy.IsHop(n) && !(mode == bodyChunked && len(n) == 7 && edge.EqualFold(f.Name, "trailer")) ||
			cn.names(f.Name) || len(n) == 12 && edge.EqualFold(f.Name, "x-request-id") ||
			mode != bodyFixed && mode != bodyNone && len(n) == 14 && edge.EqualFold(f.Name, "content-length") {
			continue
		}
		o = append(o, f.Name...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Request-Id: "...)
	o = append(o, id...)
	o = append(o, "\r\n"...)
	if mode == bodyChunked {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	if closeConn {
		o = append(o, "Connection: close\r\n"...)
	}
	return append(o, "\r\n"...)
}
