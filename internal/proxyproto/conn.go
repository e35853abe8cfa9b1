package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// Conn is a client connection whose PROXY header named a client: it reports
// the header's addresses as its remote and local ones, so that everything
// above it (forwarding fields, the access log, hash keys, rate limits,
// trusted-proxy checks, the PROXY header sluice sends on) sees the real
// client. Reads and writes go to the connection beneath, positioned just
// past the header.
type Conn struct {
	net.Conn
	remote, local net.Addr
}

// RemoteAddr returns the client the header named.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the address the client connected to, as the header
// named it.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// NetConn returns the connection beneath, as tls.Conn's NetConn does.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// TCP returns the *net.TCPConn of c when c is one, a Conn over one, or a
// wrapper that leaves the socket's bytes alone and names it with a method
// TCP() *net.TCPConn (netlimit.Conn), so that a codec may splice(2) or peek
// at the socket; nil otherwise (TLS, wrappers that read ahead).
func TCP(c net.Conn) *net.TCPConn {
	switch v := c.(type) {
	case *net.TCPConn:
		return v
	case *Conn:
		return TCP(v.Conn)
	case interface{ TCP() *net.TCPConn }:
		return v.TCP()
	}
	return nil
}

// Reasons a connection is refused by Accept, for metrics and logs.
const (
	ReasonInvalid   = "invalid"   // no header, or a malformed one
	ReasonUntrusted = "untrusted" // from a peer outside trusted_proxies
	ReasonTimeout   = "timeout"   // the header did not arrive in time
)

// AcceptError is why Accept refused a connection.
type AcceptError struct {
	Reason string // ReasonInvalid, ReasonUntrusted or ReasonTimeout
	Peer   netip.Addr
	Err    error
}

func (e *AcceptError) Error() string {
	return "PROXY protocol from " + e.Peer.String() + ": " + e.Reason + ": " + e.Err.Error()
}

func (e *AcceptError) Unwrap() error { return e.Err }

var errUntrusted = errors.New("peer is not in trusted_proxies")

// Accept reads the PROXY header that must open c and returns the
// connection to serve in its place: a *Conn reporting the client the header
// named, or c itself when the header names none (LOCAL, UNKNOWN). When
// trusted is not nil, a peer for which it reports false is refused before
// anything is read. A deadline that is not zero bounds the read (and is
// cleared after it); with zero, c's deadlines are the caller's to set. On
// error the caller closes c.
func Accept(c net.Conn, trusted func(netip.Addr) bool, deadline time.Time) (net.Conn, error) {
	peer := addrOf(c.RemoteAddr()).Addr()
	if trusted != nil && !trusted(peer) {
		return nil, &AcceptError{Reason: ReasonUntrusted, Peer: peer, Err: errUntrusted}
	}
	if !deadline.IsZero() {
		c.SetReadDeadline(deadline)
	}
	h, err := Read(c)
	if err != nil {
		reason := ReasonInvalid
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason = ReasonTimeout
		}
		return nil, &AcceptError{Reason: reason, Peer: peer, Err: err}
	}
	if !deadline.IsZero() {
		c.SetReadDeadline(time.Time{})
	}
	if h.Local {
		return c, nil
	}
	return &Conn{Conn: c, remote: net.TCPAddrFromAddrPort(h.Src), local: net.TCPAddrFromAddrPort(h.Dst)}, nil
}

// addrOf returns the address of a net.Addr (zero when it has none).
func addrOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// AddrPort returns the address and port of a connection endpoint (zero
// when it has none): what a PROXY header sluice sends names.
func AddrPort(a net.Addr) netip.AddrPort { return addrOf(a) }

// Read reads one PROXY header from c and not a byte more: the bytes after
// it are the client's and stay in the socket. A v2 header says its length;
// a v1 line is found with one peek at the socket (MSG_PEEK) and then read
// up to its CRLF. On a connection that is not a *net.TCPConn (tests), a v1
// line is read byte by byte.
func Read(c net.Conn) (Header, error) {
	var buf [v2Fixed + MaxV2Body]byte
	if _, err := io.ReadFull(c, buf[:6]); err != nil {
		return Header{}, eofIsShort(err)
	}
	have := 6
	switch {
	case string(buf[:6]) == "PROXY ":
		for {
			if have >= MaxV1 {
				return Header{}, invalid("v1 line longer than %d bytes", MaxV1)
			}
			n, err := readV1(c, buf[have:MaxV1])
			if err != nil {
				return Header{}, eofIsShort(err)
			}
			have += n
			if buf[have-1] == '\n' {
				break
			}
		}
	case string(buf[:6]) == sigV2[:6]:
		if _, err := io.ReadFull(c, buf[6:v2Fixed]); err != nil {
			return Header{}, eofIsShort(err)
		}
		have = v2Fixed
		n := v2Fixed + int(binary.BigEndian.Uint16(buf[14:16]))
		if n > len(buf) {
			return Header{}, invalid("v2 length %d is over the %d bytes accepted", n-v2Fixed, MaxV2Body)
		}
		if _, err := io.ReadFull(c, buf[have:n]); err != nil {
			return Header{}, eofIsShort(err)
		}
		have = n
	default:
		return Header{}, errNotProxy
	}
	h, n, err := Parse(buf[:have])
	if err == nil && n != have {
		err = invalid("header of %d bytes followed by %d more", n, have-n) // cannot happen: reads stop at its end
	}
	return h, err
}

// eofIsShort turns a connection that ended inside a header into an error
// that says so.
func eofIsShort(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return invalid("connection closed inside the header")
	}
	return err
}

// readV1 reads the next bytes of a v1 line into p, stopping after its LF:
// it peeks at what the socket holds, and takes up to the LF when there is
// one, else all of it (all of it is header). It reads at least one byte.
func readV1(c net.Conn, p []byte) (int, error) {
	tc := TCP(c)
	if tc == nil {
		return io.ReadFull(c, p[:1])
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), p, syscall.MSG_PEEK)
		return !errors.Is(perr, syscall.EAGAIN)
	})
	switch {
	case err != nil:
		return 0, err
	case perr != nil:
		return 0, os.NewSyscallError("recvfrom", perr)
	case n == 0:
		return 0, io.EOF
	}
	if i := bytes.IndexByte(p[:n], '\n'); i >= 0 {
		n = i + 1
	}
	return io.ReadFull(c, p[:n])
}
