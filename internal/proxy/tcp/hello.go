package tcp

import (
	"encoding/binary"
	"errors"
	"net"
	"time"
)

// A tcp listener with sni routes reads the client's TLS ClientHello to
// learn the server name it asks for, without terminating TLS: the bytes
// read are kept and sent to the chosen backend first, so it sees the
// connection exactly as the client sent it. crypto/tls offers no parser for
// a ClientHello it does not answer, hence this one: strict, bounded, and
// fuzzed (FuzzServerName).

// maxHello bounds what is read before the server name is known: a
// ClientHello fits one 16 KiB TLS record, post-quantum key shares included.
const maxHello = 16 << 10

var (
	errShort  = errors.New("tls: ClientHello incomplete")
	errNotTLS = errors.New("not a TLS handshake")
)

// helloError says why a ClientHello was not understood.
type helloError string

func (e helloError) Error() string { return "malformed TLS ClientHello: " + string(e) }

// serverName returns the server name (SNI, RFC 6066) of the ClientHello at
// the start of data, the TLS records as the client sent them: "" when the
// ClientHello names none. It returns errShort when data ends inside the
// ClientHello, errNotTLS when data does not start a TLS handshake, and a
// helloError for a malformed one. The ClientHello may span several
// records, up to maxHello bytes in all.
func serverName(data []byte) (string, error) {
	var msg []byte // the handshake message, when spread over records
	for off := 0; ; {
		if len(data)-off < 5 {
			if off == 0 && len(data) > 0 && data[0] != 0x16 {
				return "", errNotTLS
			}
			return "", errShort
		}
		hdr := data[off : off+5]
		if hdr[0] != 0x16 || hdr[1] != 3 {
			if off == 0 {
				return "", errNotTLS
			}
			return "", helloError("a record that is not a handshake inside the ClientHello")
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		if n == 0 || n > 1<<14 {
			return "", helloError("record length out of range")
		}
		if len(data)-off-5 < n {
			return "", errShort
		}
		frag := data[off+5 : off+5+n]
		off += 5 + n
		if msg == nil && len(frag) >= 4 && 4+u24(frag[1:4]) <= len(frag) {
			return parseHello(frag) // the whole message in its first record
		}
		msg = append(msg, frag...)
		if len(msg) >= 4 {
			if msg[0] != 1 {
				return "", helloError("the first handshake message is not a ClientHello")
			}
			total := 4 + u24(msg[1:4])
			if total > maxHello {
				return "", helloError("ClientHello larger than 16 KiB")
			}
			if len(msg) >= total {
				return parseHello(msg)
			}
		}
	}
}

// parseHello parses a handshake message that starts with a whole
// ClientHello (RFC 8446 §4.1.2) and returns its server name.
func parseHello(msg []byte) (string, error) {
	if msg[0] != 1 {
		return "", helloError("the first handshake message is not a ClientHello")
	}
	r := reader(msg[4 : 4+u24(msg[1:4])])
	if !r.skip(2+32) || !r.skipVec(1, 0, 32) || !r.skipVec(2, 2, 1<<16-2) || !r.skipVec(1, 1, 255) {
		return "", helloError("version, random, session id, cipher suites or compression methods cut short")
	}
	if len(r) == 0 {
		return "", nil // no extensions
	}
	exts, ok := r.vec(2)
	if !ok || len(r) != 0 {
		return "", helloError("extensions do not fill the ClientHello")
	}
	name, seen := "", false
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		body, ok2 := exts.vec(2)
		if !ok1 || !ok2 {
			return "", helloError("an extension is cut short")
		}
		if typ != 0 { // server_name
			continue
		}
		if seen {
			return "", helloError("server_name twice")
		}
		seen = true
		list, ok := body.vec(2)
		if !ok || len(body) != 0 || len(list) == 0 {
			return "", helloError("server_name list malformed")
		}
		for len(list) > 0 {
			kind, ok1 := list.u8()
			host, ok2 := list.vec(2)
			if !ok1 || !ok2 {
				return "", helloError("server_name entry cut short")
			}
			if kind != 0 || name != "" { // host_name, once (RFC 6066 §3)
				continue
			}
			if !validName(host) {
				return "", helloError("server name is not a host name")
			}
			name = string(host)
		}
	}
	return name, nil
}

// u24 reads a 24-bit big-endian length.
func u24(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

// validName reports whether b is a DNS host name as RFC 6066 wants it: ASCII
// letters, digits, '-', '_' and dots between labels, no trailing dot.
func validName(b []byte) bool {
	if len(b) == 0 || len(b) > 253 || b[0] == '.' || b[len(b)-1] == '.' {
		return false
	}
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' && b[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

// reader reads big-endian fields off the front of a byte slice.
type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

// vec reads a vector with a lenBytes-byte length prefix.
func (r *reader) vec(lenBytes int) (reader, bool) {
	if len(*r) < lenBytes {
		return nil, false
	}
	n := 0
	for _, c := range (*r)[:lenBytes] {
		n = n<<8 | int(c)
	}
	*r = (*r)[lenBytes:]
	if len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

// skipVec skips a vector whose length must be from lo to hi.
func (r *reader) skipVec(lenBytes, lo, hi int) bool {
	v, ok := r.vec(lenBytes)
	return ok && len(v) >= lo && len(v) <= hi
}

// readHello reads from c, until deadline, what it takes to learn the
// server name of its ClientHello, and returns the name ("" when none, or
// when c does not open with a TLS ClientHello, or sent too little in
// time) and every byte read, which belong to the backend. buf is where the
// bytes go (maxHello long).
func readHello(c net.Conn, deadline time.Time, buf []byte) (name string, read []byte, err error) {
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	n := 0
	for n < len(buf) {
		m, rerr := c.Read(buf[n:])
		n += m
		name, err = serverName(buf[:n])
		if err != errShort {
			return name, buf[:n], err
		}
		if rerr != nil {
			return "", buf[:n], rerr
		}
	}
	return "", buf[:n], helloError("ClientHello larger than 16 KiB")
}
