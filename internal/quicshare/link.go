package quicshare

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// A link is a unix SOCK_SEQPACKET socket between the process that handed
// a UDP socket over and the one that took it (package upgrade makes it).
// The new process sends hello once, when it starts reading its end: only
// then does the old one forward to it (a new binary started by an old one,
// or an old binary started by a new one, knows nothing of links, and the
// two then both read the socket as before). Each later message is one
// datagram, old to new:
//
//	0      kind ('D')
//	1      length of the source IP (4 or 16)
//	2:18   source IP
//	18:20  source port, big-endian
//	20:22  length of the control messages, big-endian
//	22:    the control messages as the kernel gave them (ECN, and the
//	       local address for a socket bound to an unspecified address,
//	       which the reply must come from), then the datagram
const (
	kindHello    = 'H'
	kindDatagram = 'D'
	headerLen    = 22
	// maxMessage bounds a message: a datagram quic-go reads whole (1452
	// bytes) or larger, and its control messages.
	maxMessage = headerLen + 512 + 1<<16
)

var hello = []byte{kindHello, 1} // protocol version 1

func isHello(b []byte) bool { return len(b) >= 2 && b[0] == kindHello && b[1] == 1 }

// encode appends the message for datagram m to buf[:0].
func encode(buf []byte, m *ipv4.Message) []byte {
	var ip netip.Addr
	port := 0
	if a, ok := m.Addr.(*net.UDPAddr); ok {
		ip, _ = netip.AddrFromSlice(a.IP)
		port = a.Port
	}
	if cap(buf) < headerLen {
		buf = make([]byte, 0, 2048)
	}
	buf = buf[:headerLen]
	clear(buf)
	buf[0] = kindDatagram
	if ip.Is4() {
		buf[1] = 4
		a := ip.As4()
		copy(buf[2:], a[:])
	} else if ip.IsValid() {
		buf[1] = 16
		a := ip.As16()
		copy(buf[2:], a[:])
	}
	binary.BigEndian.PutUint16(buf[18:], uint16(port))
	oob := m.OOB[:m.NN]
	binary.BigEndian.PutUint16(buf[20:], uint16(len(oob)))
	buf = append(buf, oob...)
	return append(buf, m.Buffers[0][:m.N]...)
}

// decode fills m (its buffer and control-message space as quic-go made
// them) from message b, and reports whether b was a well-formed datagram.
func decode(b []byte, m *ipv4.Message) bool {
	if len(b) < headerLen || b[0] != kindDatagram {
		return false
	}
	var ip net.IP
	switch b[1] {
	case 4:
		ip = net.IP(append([]byte(nil), b[2:6]...))
	case 16:
		ip = net.IP(append([]byte(nil), b[2:18]...))
	default:
		return false
	}
	nn := int(binary.BigEndian.Uint16(b[20:]))
	rest := b[headerLen:]
	if nn > len(rest) || nn > len(m.OOB) || len(m.Buffers) == 0 {
		return false
	}
	m.Addr = &net.UDPAddr{IP: ip, Port: int(binary.BigEndian.Uint16(b[18:]))}
	m.NN = copy(m.OOB, rest[:nn])
	m.N = copy(m.Buffers[0], rest[nn:])
	m.Flags = 0
	return true
}

// move makes dst a copy of src, in dst's own buffers: quic-go reads the
// i-th message of a batch from the i-th of its packet buffers.
func move(dst, src *ipv4.Message) {
	dst.N = copy(dst.Buffers[0], src.Buffers[0][:src.N])
	dst.NN = copy(dst.OOB, src.OOB[:src.NN])
	dst.Addr, dst.Flags = src.Addr, src.Flags
}
