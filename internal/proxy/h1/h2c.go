package h1

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"time"
)

// H2CUpgrade serves an HTTP/1.1 connection that switched to HTTP/2 (RFC
// 7540 §3.2, "Upgrade: h2c"): the request that asked is its stream 1,
// settings its decoded HTTP2-Settings. It returns when the connection ends.
type H2CUpgrade func(c net.Conn, r *http.Request, settings []byte)

// upgradeH2C answers a request that asks to switch to HTTP/2 over
// cleartext, on a listener with h2c: 101 Switching Protocols, then the
// connection belongs to the HTTP/2 server. It reports whether it took the
// connection. A request with a body, or without exactly one valid
// HTTP2-Settings field named in Connection, is served as HTTP/1.1 instead
// (the Upgrade field is hop-by-hop and goes no further).
func (c *h1conn) upgradeH2C() bool {
	q := &c.req
	if c.e.o.H2C == nil || q.head.Minor != 1 || q.websocket || q.body.kind != bodyNone || !q.hasConn ||
		!q.conn.has("upgrade") || !q.conn.has("http2-settings") {
		return false
	}
	if up := q.raw.Get("Upgrade"); !strings.EqualFold(strings.TrimSpace(up), "h2c") {
		return false
	}
	v, ok := q.raw.Value("Http2-Settings", 0)
	if _, more := q.raw.Value("Http2-Settings", 1); !ok || more {
		return false
	}
	settings, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(v), "="))
	if err != nil || len(settings)%6 != 0 {
		return false
	}
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(c.buf[c.r : c.r+q.hlen])))
	if err != nil {
		return false
	}
	for _, h := range []string{"Connection", "Upgrade", "Http2-Settings"} {
		delete(r.Header, h)
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.RemoteAddr = c.nc.RemoteAddr().String()
	c.consumeHead()
	if _, err := c.nc.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")); err != nil {
		return true // the connection is gone either way
	}
	c.nc.SetDeadline(time.Time{})
	conn := net.Conn(c.nc)
	if c.r < c.w {
		// The client's preface may already be here, read with the head.
		conn = &prefixConn{Conn: c.nc, pre: bytes.Clone(c.buf[c.r:c.w])}
		c.r = c.w
	}
	c.release()
	c.e.o.H2C(conn, r, settings)
	return true
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
