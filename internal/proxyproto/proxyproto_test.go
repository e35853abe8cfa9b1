package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluice-lb/sluice/internal/testenv"
)

var (
	src4 = netip.MustParseAddrPort("192.0.2.10:51234")
	dst4 = netip.MustParseAddrPort("198.51.100.2:443")
	src6 = netip.MustParseAddrPort("[2001:db8::10]:51234")
	dst6 = netip.MustParseAddrPort("[2001:db8::2]:443")
)

// v2 builds a v2 header by hand: version/command byte, family, body.
func v2(verCmd, fam byte, body []byte) []byte {
	b := append([]byte(sigV2), verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func tcp4Body(tlvs ...byte) []byte {
	b := []byte{192, 0, 2, 10, 198, 51, 100, 2, 0xc8, 0x22, 0x01, 0xbb}
	return append(b, tlvs...)
}

// withCRC adds a CRC32C TLV to a v2 header and fills it in.
func withCRC(h []byte, corrupt bool) []byte {
	h = append(h, tlvCRC32C, 0, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(h[14:16], uint16(len(h)-v2Fixed))
	c := crc32.Checksum(h, castagnoli)
	if corrupt {
		c++
	}
	binary.BigEndian.PutUint32(h[len(h)-4:], c)
	return h
}

func TestParse(t *testing.T) {
	long := "PROXY TCP6 " + strings.Repeat("0", 40)
	tests := []struct {
		name    string
		in      []byte
		want    Header
		n       int
		wantErr string // "" ok; "short"; else a substring of the error
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\r\nGET /"), Header{Version: 1, Src: src4, Dst: dst4}, 46, ""},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::10 2001:db8::2 51234 443\r\n"), Header{Version: 1, Src: src6, Dst: dst6}, 47, ""},
		{"v1 tcp6 with mapped v4", []byte("PROXY TCP6 ::ffff:192.0.2.10 ::ffff:198.51.100.2 51234 443\r\n"), Header{Version: 1, Src: src4, Dst: dst4}, 60, ""},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}, 15, ""},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f...f 1 2\r\n"), Header{Version: 1, Local: true}, 30, ""},
		{"v1 ports 0 and 65535", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 0 65535\r\n"), Header{Version: 1,
			Src: netip.AddrPortFrom(src4.Addr(), 0), Dst: netip.AddrPortFrom(dst4.Addr(), 65535)}, 44, ""},
		{"v1 prefix", []byte("PROXY TCP4 192.0.2.10"), Header{}, 0, "short"},
		{"v1 signature prefix", []byte("PRO"), Header{}, 0, "short"},
		{"v1 no CR", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\n"), Header{}, 0, "CRLF"},
		{"v1 too long", []byte(long + strings.Repeat(" ", 80) + "\r\n"), Header{}, 0, "longer than 107"},
		{"v1 too long, no LF yet", []byte(long + strings.Repeat("0", 80)), Header{}, 0, "longer than 107"},
		{"v1 double space", []byte("PROXY TCP4 192.0.2.10  198.51.100.2 51234 443\r\n"), Header{}, 0, "fields"},
		{"v1 seven fields", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 51234 443 x\r\n"), Header{}, 0, "more than 6"},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::10 198.51.100.2 51234 443\r\n"), Header{}, 0, "not an TCP4"},
		{"v1 v6 as TCP4 mapped", []byte("PROXY TCP4 ::ffff:192.0.2.10 198.51.100.2 51234 443\r\n"), Header{}, 0, "not an TCP4"},
		{"v1 leading zero port", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 051234 443\r\n"), Header{}, 0, "port"},
		{"v1 port too big", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 65536 443\r\n"), Header{}, 0, "port"},
		{"v1 signed port", []byte("PROXY TCP4 192.0.2.10 198.51.100.2 +1 443\r\n"), Header{}, 0, "port"},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n"), Header{}, 0, "not an TCP6"},
		{"v1 UDP", []byte("PROXY UDP4 192.0.2.10 198.51.100.2 1 2\r\n"), Header{}, 0, "not TCP4"},
		{"v1 lower case", []byte("PROXY tcp4 192.0.2.10 198.51.100.2 1 2\r\n"), Header{}, 0, "not TCP4"},
		{"v1 leading zero address", []byte("PROXY TCP4 192.0.2.010 198.51.100.2 1 2\r\n"), Header{}, 0, "not an TCP4"},
		{"v2 tcp4", v2(0x21, famTCP4, tcp4Body()), Header{Version: 2, Src: src4, Dst: dst4}, 28, ""},
		{"v2 tcp6", Append(nil, 2, src6, dst6), Header{Version: 2, Src: src6, Dst: dst6}, 52, ""},
		{"v2 local", v2(0x20, famUnspec, nil), Header{Version: 2, Local: true}, 16, ""},
		{"v2 local ignores its block", v2(0x20, 0x99, []byte{1, 2, 3}), Header{Version: 2, Local: true}, 19, ""},
		{"v2 unspec", v2(0x21, famUnspec, []byte{0x04, 0, 1, 0}), Header{Version: 2, Local: true}, 20, ""},
		{"v2 unix", v2(0x21, famUnix, make([]byte, 216)), Header{Version: 2, Local: true}, 232, ""},
		{"v2 tlvs skipped", v2(0x21, famTCP4, tcp4Body(0x01, 0, 2, 'h', '2', 0x20, 0, 0)), Header{Version: 2, Src: src4, Dst: dst4}, 36, ""},
		{"v2 crc ok", withCRC(v2(0x21, famTCP4, tcp4Body()), false), Header{Version: 2, Src: src4, Dst: dst4}, 35, ""},
		{"v2 crc wrong", withCRC(v2(0x21, famTCP4, tcp4Body()), true), Header{}, 0, "CRC32C"},
		{"v2 tlv overruns", v2(0x21, famTCP4, tcp4Body(0x01, 0, 9, 'x')), Header{}, 0, "TLV of type 0x1"},
		{"v2 tlv cut", v2(0x21, famTCP4, tcp4Body(0x01, 0)), Header{}, 0, "cut short"},
		{"v2 short addresses", v2(0x21, famTCP6, tcp4Body()), Header{}, 0, "too short"},
		{"v2 udp", v2(0x21, 0x12, tcp4Body()), Header{}, 0, "family 0x12"},
		{"v2 bad version", v2(0x11, famTCP4, tcp4Body()), Header{}, 0, "version 1"},
		{"v2 bad command", v2(0x22, famTCP4, tcp4Body()), Header{}, 0, "command 0x2"},
		{"v2 length over the bound", v2(0x21, famTCP4, make([]byte, MaxV2Body+1)), Header{}, 0, "over the 4096"},
		{"v2 body missing", v2(0x21, famTCP4, tcp4Body())[:20], Header{}, 0, "short"},
		{"v2 signature prefix", []byte(sigV2[:7]), Header{}, 0, "short"},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), Header{}, 0, "not a PROXY"},
		{"tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00}, Header{}, 0, "not a PROXY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := Parse(tt.in)
			switch {
			case tt.wantErr == "short":
				if !errors.Is(err, ErrShort) {
					t.Fatalf("Parse = %+v, %d, %v; want ErrShort", h, n, err)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if diff := cmp.Diff(tt.want, h, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
					t.Errorf("header (-want +got):\n%s", diff)
				}
				if n != tt.n {
					t.Errorf("length = %d, want %d", n, tt.n)
				}
			}
		})
	}
}

func TestAppend(t *testing.T) {
	tests := []struct {
		name     string
		version  int
		src, dst netip.AddrPort
		want     string // v1 text, or "" to check the v2 round trip only
		back     Header
	}{
		{"v1 tcp4", 1, src4, dst4, "PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\r\n", Header{Version: 1, Src: src4, Dst: dst4}},
		{"v1 tcp6", 1, src6, dst6, "PROXY TCP6 2001:db8::10 2001:db8::2 51234 443\r\n", Header{Version: 1, Src: src6, Dst: dst6}},
		{"v1 mapped source", 1, netip.AddrPortFrom(netip.AddrFrom16(src4.Addr().As16()), 51234), dst4,
			"PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\r\n", Header{Version: 1, Src: src4, Dst: dst4}},
		{"v1 mixed families", 1, src4, dst6, "PROXY TCP6 ::ffff:192.0.2.10 2001:db8::2 51234 443\r\n",
			Header{Version: 1, Src: src4, Dst: dst6}},
		{"v1 no source", 1, netip.AddrPort{}, dst4, "PROXY UNKNOWN\r\n", Header{Version: 1, Local: true}},
		{"v2 tcp4", 2, src4, dst4, "", Header{Version: 2, Src: src4, Dst: dst4}},
		{"v2 tcp6", 2, src6, dst6, "", Header{Version: 2, Src: src6, Dst: dst6}},
		{"v2 mixed families", 2, src6, dst4, "", Header{Version: 2, Src: src6, Dst: dst4}},
		{"v2 no source", 2, netip.AddrPort{}, dst4, "", Header{Version: 2, Local: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Append([]byte("x"), tt.version, tt.src, tt.dst)[1:]
			if tt.want != "" && string(b) != tt.want {
				t.Errorf("Append = %q, want %q", b, tt.want)
			}
			h, n, err := Parse(b)
			if err != nil || n != len(b) {
				t.Fatalf("Parse(Append) = %d bytes of %d, %v", n, len(b), err)
			}
			if h != tt.back {
				t.Errorf("Parse(Append) = %+v, want %+v", h, tt.back)
			}
		})
	}
	if got := AppendLocal(nil, 2); !bytes.Equal(got, v2(0x20, famUnspec, nil)) {
		t.Errorf("AppendLocal v2 = %q", got)
	}
}

// TestAcceptLeavesThePayload: over a real socket, Accept takes exactly the
// header (also when a v1 line arrives in pieces) and the payload after it
// is read from the connection unchanged, from the socket itself.
func TestAcceptLeavesThePayload(t *testing.T) {
	tests := []struct {
		name   string
		parts  []string
		remote string
		local  string
	}{
		{"v1 in one write", []string{"PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\r\nhello"}, "192.0.2.10:51234", "198.51.100.2:443"},
		{"v1 in pieces", []string{"PROXY TCP6 2001:db8", "::10 2001:db8::2 51234", " 443\r", "\nhello"}, "[2001:db8::10]:51234", "[2001:db8::2]:443"},
		{"v2", []string{string(Append(nil, 2, src4, dst4)) + "hello"}, "192.0.2.10:51234", "198.51.100.2:443"},
		{"v2 in pieces", []string{sigV2[:5], string(Append(nil, 2, src6, dst6))[5:20], string(Append(nil, 2, src6, dst6))[20:], "hello"},
			"[2001:db8::10]:51234", "[2001:db8::2]:443"},
		{"v2 local keeps the peer", []string{string(AppendLocal(nil, 2)) + "hello"}, "", ""},
		{"v1 unknown keeps the peer", []string{"PROXY UNKNOWN\r\nhello"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := testenv.TCPPair(t)
			go func() {
				for _, p := range tt.parts {
					client.Write([]byte(p))
					time.Sleep(5 * time.Millisecond)
				}
			}()
			c, err := Accept(server, nil, time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatalf("Accept: %v", err)
			}
			wantRemote, wantLocal := tt.remote, tt.local
			if wantRemote == "" {
				wantRemote, wantLocal = server.RemoteAddr().String(), server.LocalAddr().String()
				if c != server {
					t.Errorf("a header naming no client gave %T, want the connection itself", c)
				}
			} else if TCP(c) != server {
				t.Errorf("TCP(%T) is not the socket beneath", c)
			}
			if got := c.RemoteAddr().String(); got != wantRemote {
				t.Errorf("RemoteAddr = %s, want %s", got, wantRemote)
			}
			if got := c.LocalAddr().String(); got != wantLocal {
				t.Errorf("LocalAddr = %s, want %s", got, wantLocal)
			}
			buf := make([]byte, 5)
			server.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(TCP(c), buf); err != nil || string(buf) != "hello" {
				t.Errorf("payload from the socket = %q, %v; want hello", buf, err)
			}
		})
	}
}

func TestAcceptRefuses(t *testing.T) {
	notLoopback := func(a netip.Addr) bool { return !a.IsLoopback() }
	tests := []struct {
		name    string
		send    string
		trusted func(netip.Addr) bool
		reason  string
	}{
		{"no header", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", nil, ReasonInvalid},
		{"bad header", "PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n", nil, ReasonInvalid},
		{"closed inside", "PROXY TCP4 192.0.2.10", nil, ReasonInvalid},
		{"silent", "", nil, ReasonTimeout},
		{"half a line", "PROXY TCP4 ", nil, ReasonTimeout},
		{"untrusted peer", "PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\r\n", notLoopback, ReasonUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := testenv.TCPPair(t)
			client.Write([]byte(tt.send))
			if tt.name == "closed inside" {
				client.(*net.TCPConn).CloseWrite()
			}
			_, err := Accept(server, tt.trusted, time.Now().Add(200*time.Millisecond))
			var ae *AcceptError
			if !errors.As(err, &ae) || ae.Reason != tt.reason {
				t.Fatalf("Accept error = %v, want reason %q", err, tt.reason)
			}
			if !ae.Peer.IsLoopback() {
				t.Errorf("peer = %v, want the loopback peer", ae.Peer)
			}
		})
	}
}

// bytesConn is a net.Conn over a byte slice (Read's non-socket path).
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *bytesConn) SetReadDeadline(time.Time) error    { return nil }
func (c *bytesConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *bytesConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *bytesConn) Close() error                       { return nil }
func (c *bytesConn) SetDeadline(time.Time) error        { return nil }
func (c *bytesConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzParse: Parse never panics, never claims more than it was given or
// the bounds allow, agrees with Read (which reads from a connection and
// leaves what follows the header unread), and what it accepts, written
// again by Append, parses to the same addresses.
func FuzzParse(f *testing.F) {
	for _, s := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.10 198.51.100.2 51234 443\r\nGET / HTTP/1.1\r\n"),
		[]byte("PROXY TCP6 2001:db8::10 2001:db8::2 51234 443\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		Append(nil, 2, src4, dst4),
		Append(nil, 2, src6, dst6),
		AppendLocal(nil, 2),
		withCRC(v2(0x21, famTCP4, tcp4Body(0x01, 0, 2, 'h', '2')), false),
		v2(0x21, famUnix, make([]byte, 216)),
		[]byte("\x16\x03\x01\x00\x05hello"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		r := bytes.NewReader(b)
		rh, rerr := Read(&bytesConn{r: r})
		if err != nil {
			if rerr == nil {
				t.Fatalf("Parse refused %q (%v) but Read accepted %+v", b, err, rh)
			}
			return
		}
		if n <= 0 || n > len(b) || n > v2Fixed+MaxV2Body {
			t.Fatalf("Parse length %d of %d bytes", n, len(b))
		}
		if h.Version == 1 && n > MaxV1 {
			t.Fatalf("v1 header of %d bytes", n)
		}
		if rerr != nil || rh != h {
			t.Fatalf("Read = %+v, %v; Parse = %+v", rh, rerr, h)
		}
		if left := r.Len(); left != len(b)-n {
			t.Fatalf("Read left %d bytes, want %d", left, len(b)-n)
		}
		if h.Local {
			return
		}
		again, m, err := Parse(Append(nil, h.Version, h.Src, h.Dst))
		if err != nil || again != h || m == 0 {
			t.Fatalf("Parse(Append(%+v)) = %+v, %v", h, again, err)
		}
	})
}
