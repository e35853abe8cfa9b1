// Package proxyproto reads and writes the PROXY protocol, versions 1 (a text
// line) and 2 (binary), as HAProxy's proxy-protocol.txt defines it: the
// header a front load balancer sends first on a connection to say which
// client it relays, and which sluice sends to backends that want to know.
//
// Why by hand: github.com/pires/go-proxyproto, the library for the job,
// reads through a bufio.Reader in front of the socket and hands out a
// wrapper that hides the *net.TCPConn. sluice needs the socket itself after
// the header: the HTTP/1.1 engine and the layer-4 relay move bodies with
// splice(2), and the h2c preface is detected with MSG_PEEK. Read therefore
// takes exactly the header's bytes from the socket and not one more (one
// peek finds the end of a v1 line; v2 says its own length), and the
// parser is a few strict functions over a byte slice, fuzzed (FuzzParse).
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"strconv"
)

// Header is what a PROXY header says.
type Header struct {
	// Version is 1 or 2.
	Version int
	// Local is true when the header names no client: a v2 LOCAL command
	// (health checks of the front balancer), a v1 "UNKNOWN" line, or an
	// address family without IP addresses (UNSPEC, UNIX). The
	// connection's own endpoints then stand.
	Local bool
	// Src is the client, Dst the address it connected to (zero when
	// Local).
	Src, Dst netip.AddrPort
}

// Limits of what is read: a v1 line is at most 107 bytes with its CRLF
// (the specification's own bound); a v2 header is the 16-byte fixed part
// and at most MaxV2Body more (addresses and TLVs: room for every TLV front
// balancers send, far below the 64 KiB its length field allows).
const (
	MaxV1     = 107
	MaxV2Body = 4096
	v2Fixed   = 16
)

// sigV2 opens every v2 header.
const sigV2 = "\r\n\r\n\x00\r\nQUIT\n"

// Errors. ErrShort is internal to parsing: the bytes so far are the start
// of a header that needs more.
var (
	ErrShort    = errors.New("proxy protocol: header incomplete")
	errNotProxy = errors.New("not a PROXY protocol header")
)

// InvalidError says why a header was refused.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return "invalid PROXY protocol header: " + e.Msg }

func invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// Parse parses the header at the start of b and returns it with its length
// in bytes. When b is a proper prefix of a header it returns ErrShort; any
// other error means b does not start with a valid header.
func Parse(b []byte) (Header, int, error) {
	switch {
	case len(b) >= 6 && string(b[:6]) == "PROXY ":
		i := bytes.IndexByte(b[:min(len(b), MaxV1)], '\n')
		if i < 0 {
			if len(b) >= MaxV1 {
				return Header{}, 0, invalid("v1 line longer than %d bytes", MaxV1)
			}
			return Header{}, 0, ErrShort
		}
		h, err := parseV1(b[:i+1])
		return h, i + 1, err
	case len(b) >= len(sigV2) && string(b[:len(sigV2)]) == sigV2:
		if len(b) < v2Fixed {
			return Header{}, 0, ErrShort
		}
		n := v2Fixed + int(binary.BigEndian.Uint16(b[14:16]))
		if n-v2Fixed > MaxV2Body {
			return Header{}, 0, invalid("v2 length %d is over the %d bytes accepted", n-v2Fixed, MaxV2Body)
		}
		if len(b) < n {
			return Header{}, 0, ErrShort
		}
		h, err := parseV2(b[:n])
		return h, n, err
	}
	// A prefix of either signature may still become one.
	if k := min(len(b), 6); string(b[:k]) == "PROXY "[:k] {
		return Header{}, 0, ErrShort
	}
	if k := min(len(b), len(sigV2)); string(b[:k]) == sigV2[:k] {
		return Header{}, 0, ErrShort
	}
	return Header{}, 0, errNotProxy
}

// parseV1 parses one v1 line, CRLF included:
// "PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\n", TCP6 alike, or
// "PROXY UNKNOWN" followed by anything up to the CRLF. Single spaces, no
// leading zeros in ports, addresses of the named family.
func parseV1(line []byte) (Header, error) {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return Header{}, invalid("v1 line does not end in CRLF")
	}
	s := string(line[len("PROXY ") : len(line)-2])
	h := Header{Version: 1}
	if s == "UNKNOWN" || len(s) > len("UNKNOWN") && s[:len("UNKNOWN ")] == "UNKNOWN " {
		h.Local = true
		return h, nil
	}
	var fields [5]string
	n := 0
	for start, i := 0, 0; i <= len(s); i++ {
		if i < len(s) && s[i] != ' ' {
			continue
		}
		if n == len(fields) {
			return Header{}, invalid("v1 line has more than 6 fields")
		}
		fields[n] = s[start:i]
		n++
		start = i + 1
	}
	if n != len(fields) {
		return Header{}, invalid("v1 line needs a protocol, two addresses and two ports, got %d fields", n)
	}
	var want4 bool
	switch fields[0] {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return Header{}, invalid("v1 protocol %q is not TCP4, TCP6 or UNKNOWN", fields[0])
	}
	var addrs [2]netip.Addr
	for i := range addrs {
		a, err := netip.ParseAddr(fields[1+i])
		if err != nil || a.Zone() != "" || a.Is4() != want4 {
			return Header{}, invalid("v1 address %q is not an %s address", fields[1+i], fields[0])
		}
		addrs[i] = a
	}
	var ports [2]uint16
	for i := range ports {
		p, ok := parsePort(fields[3+i])
		if !ok {
			return Header{}, invalid("v1 port %q is not a number from 0 to 65535", fields[3+i])
		}
		ports[i] = p
	}
	h.Src = netip.AddrPortFrom(addrs[0].Unmap(), ports[0])
	h.Dst = netip.AddrPortFrom(addrs[1].Unmap(), ports[1])
	return h, nil
}

// parsePort parses a decimal port without sign or leading zeros.
func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 5 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// v2 commands, address families and TLV types used here.
const (
	cmdLocal = 0x0
	cmdProxy = 0x1

	famUnspec = 0x00
	famTCP4   = 0x11
	famTCP6   = 0x21
	famUnix   = 0x31

	tlvCRC32C = 0x03
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// parseV2 parses a whole v2 header (b is exactly its length). TLVs are
// walked to check that each fits; a CRC32C TLV is verified; the others are
// skipped, since sluice uses none.
func parseV2(b []byte) (Header, error) {
	if b[12]>>4 != 2 {
		return Header{}, invalid("v2 version %d, want 2", b[12]>>4)
	}
	h := Header{Version: 2}
	switch cmd := b[12] & 0xf; cmd {
	case cmdLocal:
		// The specification: use the real endpoints and discard the
		// protocol block, family included.
		h.Local = true
		return h, nil
	case cmdProxy:
	default:
		return Header{}, invalid("v2 command %#x is not LOCAL or PROXY", cmd)
	}
	body := b[v2Fixed:]
	var addrLen int
	switch fam := b[13]; fam {
	case famUnspec:
		h.Local = true
	case famTCP4:
		addrLen = 12
	case famTCP6:
		addrLen = 36
	case famUnix:
		h.Local, addrLen = true, 216
	default:
		return Header{}, invalid("v2 address family %#x is not UNSPEC, TCP over IPv4 or IPv6, or a UNIX stream", fam)
	}
	if len(body) < addrLen {
		return Header{}, invalid("v2 length %d is too short for its addresses (%d bytes)", len(body), addrLen)
	}
	switch addrLen {
	case 12:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case 36:
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])).Unmap(), binary.BigEndian.Uint16(body[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])).Unmap(), binary.BigEndian.Uint16(body[34:36]))
	}
	for t := body[addrLen:]; len(t) > 0; {
		if len(t) < 3 {
			return Header{}, invalid("v2 TLV cut short: %d bytes left", len(t))
		}
		n := int(binary.BigEndian.Uint16(t[1:3]))
		if len(t) < 3+n {
			return Header{}, invalid("v2 TLV of type %#x says %d bytes, %d are left", t[0], n, len(t)-3)
		}
		if t[0] == tlvCRC32C {
			if n != 4 {
				return Header{}, invalid("v2 CRC32C TLV of %d bytes, want 4", n)
			}
			off := len(b) - len(t) + 3
			want := binary.BigEndian.Uint32(b[off : off+4])
			c := crc32.Update(0, castagnoli, b[:off])
			c = crc32.Update(c, castagnoli, []byte{0, 0, 0, 0})
			c = crc32.Update(c, castagnoli, b[off+4:])
			if c != want {
				return Header{}, invalid("v2 CRC32C %#08x does not match the header (%#08x)", want, c)
			}
		}
		t = t[3+n:]
	}
	return h, nil
}

// Append appends a header of the given version (1 or 2) naming src as the
// client and dst as the address it connected to. When either is not valid
// it appends a header that names nothing (v1 UNKNOWN, v2 LOCAL). An IPv4
// address beside an IPv6 one is written IPv4-mapped, as both must be of one
// family.
func Append(b []byte, version int, src, dst netip.AddrPort) []byte {
	if !src.IsValid() || !dst.IsValid() {
		return AppendLocal(b, version)
	}
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if sa.Is4() != da.Is4() {
		sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
	}
	v4 := sa.Is4()
	if version == 1 {
		b = append(b, "PROXY TCP"...)
		if v4 {
			b = append(b, '4', ' ')
		} else {
			b = append(b, '6', ' ')
		}
		b = sa.WithZone("").AppendTo(b)
		b = append(b, ' ')
		b = da.WithZone("").AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, '\r', '\n')
	}
	b = append(b, sigV2...)
	b = append(b, 0x20|cmdProxy)
	if v4 {
		b = append(b, famTCP4, 0, 12)
		s4, d4 := sa.As4(), da.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, famTCP6, 0, 36)
		s16, d16 := sa.As16(), da.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// AppendLocal appends a header that names no client: "PROXY UNKNOWN" (v1)
// or the LOCAL command (v2), for connections sluice makes on its own
// behalf, such as health checks.
func AppendLocal(b []byte, version int) []byte {
	if version == 1 {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	b = append(b, sigV2...)
	return append(b, 0x20|cmdLocal, famUnspec, 0, 0)
}

// Version parses a send_proxy_protocol value: 1 for "v1", 2 for "v2", 0 for
// anything else (none).
func Version(s string) int {
	switch s {
	case "v1":
		return 1
	case "v2":
		return 2
	}
	return 0
}
