package quicshare

import (
	"bytes"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// Datagrams as QUIC puts them on the wire (RFC 8999, RFC 9000 §17).
func shortHeader(dcid []byte) []byte {
	return append(append([]byte{0x40}, dcid...), bytes.Repeat([]byte{0xaa}, 40)...)
}

// longHeader is a v1 long-header packet of type typ (0 Initial, 2
// Handshake).
func longHeader(typ byte, dcid []byte) []byte {
	b := []byte{0xc0 | typ<<4, 0, 0, 0, 1, byte(len(dcid))}
	b = append(b, dcid...)
	b = append(b, 8, 1, 2, 3, 4, 5, 6, 7, 8) // the client's source ID
	return append(b, bytes.Repeat([]byte{0}, 1200-len(b))...)
}

func clientID(seed byte, n int) []byte { return bytes.Repeat([]byte{seed}, n) }

func TestKeep(t *testing.T) {
	ours, theirs := NewIDs(), NewIDs()
	own, _ := ours.GenerateConnectionID()
	other, _ := theirs.GenerateConnectionID()
	if len(own.Bytes()) != cidLen || !ours.Owns(own.Bytes()) || ours.Owns(other.Bytes()) || theirs.Owns(own.Bytes()) {
		t.Fatalf("IDs: an ID is recognised by its own generator only")
	}
	r := &router{ids: ours, recent: recent{now: time.Now}}
	begun := clientID(1, 8) // a handshake this process took before the hand-over
	if !r.keep(longHeader(0, begun), false) {
		t.Fatal("without a new process every datagram stays")
	}
	for _, tc := range []struct {
		name       string
		b          []byte
		forwarding bool
		want       bool
	}{
		{"short header, ours", shortHeader(own.Bytes()), true, true},
		{"short header, the new process's", shortHeader(other.Bytes()), true, false},
		{"short header, not ours, no new process", shortHeader(other.Bytes()), false, true},
		{"Handshake, ours", longHeader(2, own.Bytes()), true, true},
		{"Handshake, the new process's", longHeader(2, other.Bytes()), true, false},
		{"Initial to our ID (after our first Initial)", longHeader(0, own.Bytes()), true, true},
		{"Initial of a handshake begun here", longHeader(0, begun), true, true},
		{"Initial of a new connection", longHeader(0, clientID(2, 8)), true, false},
		{"Initial of a new connection, 16-byte client ID", longHeader(0, clientID(3, 16)), true, false},
		{"Initial of a new connection, 20-byte client ID", longHeader(0, clientID(4, 20)), true, false},
		{"empty", nil, true, true},
		{"short header cut short", shortHeader(own.Bytes())[:10], true, true},
		{"long header cut short", []byte{0xc0, 0, 0, 0}, true, true},
		{"long header, ID longer than 20", append([]byte{0xc0, 0, 0, 0, 1, 21}, clientID(5, 40)...), true, true},
		{"long header, ID past the end", []byte{0xc0, 0, 0, 0, 1, 16, 1, 2}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.keep(tc.b, tc.forwarding); got != tc.want {
				t.Errorf("keep = %v, want %v", got, tc.want)
			}
		})
	}
	// A new connection taken with no new process is remembered: its next
	// Initial stays after the hand-over too.
	late := clientID(6, 12)
	r.keep(longHeader(0, late), false)
	if !r.keep(longHeader(0, late), true) {
		t.Error("the second Initial of a handshake begun here went to the new process")
	}
}

func TestRecentForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	r := &recent{now: func() time.Time { return now }}
	first := clientID(9, 8)
	r.add(first)
	if !r.has(first) {
		t.Fatal("an ID just added is not there")
	}
	now = now.Add(recentTTL)
	if r.has(first) {
		t.Error("an ID older than recentTTL is still there")
	}
	id := func(i int) []byte { return []byte{byte(i), byte(i >> 8), 1, 2, 3, 4, 5, 6} }
	for i := range recentSize + 10 {
		r.add(id(i))
	}
	if len(r.at) > recentSize+1 {
		t.Errorf("the table holds %d IDs, want at most %d", len(r.at), recentSize+1)
	}
	if r.has(id(0)) || !r.has(id(recentSize+9)) {
		t.Error("the oldest ID should be forgotten first, the newest kept")
	}
}

// message is a batch entry as quic-go prepares one.
func message() ipv4.Message {
	return ipv4.Message{Buffers: [][]byte{make([]byte, 1452)}, OOB: make([]byte, 128)}
}

func TestLinkMessage(t *testing.T) {
	for _, addr := range []*net.UDPAddr{
		{IP: net.IPv4(127, 0, 0, 1), Port: 4433},
		{IP: net.ParseIP("::1"), Port: 65535},
	} {
		src := message()
		src.N = copy(src.Buffers[0], longHeader(0, clientID(7, 8)))
		src.NN = copy(src.OOB, []byte{1, 2, 3, 4, 5})
		src.Addr = addr
		b := encode(nil, &src)
		dst := message()
		if !decode(b, &dst) {
			t.Fatalf("%v: a message it encoded does not decode", addr)
		}
		if !bytes.Equal(dst.Buffers[0][:dst.N], src.Buffers[0][:src.N]) || !bytes.Equal(dst.OOB[:dst.NN], src.OOB[:src.NN]) ||
			dst.Addr.String() != addr.String() {
			t.Errorf("decoded %v (%d bytes, control %x), want %v (%d bytes, control %x)",
				dst.Addr, dst.N, dst.OOB[:dst.NN], addr, src.N, src.OOB[:src.NN])
		}
	}
	dst := message()
	for _, b := range [][]byte{nil, hello, {kindDatagram, 5}, append([]byte{kindDatagram, 4}, make([]byte, 18)...)[:21],
		append(append([]byte{kindDatagram, 4}, make([]byte, 18)...), 0xff, 0xff)} {
		if decode(b, &dst) {
			t.Errorf("decode(%x) accepted a malformed message", b)
		}
	}
}

// FuzzRoute: any datagram, any link message: never a panic, and a
// datagram too short for a header always stays.
func FuzzRoute(f *testing.F) {
	ids := NewIDs()
	own, _ := ids.GenerateConnectionID()
	f.Add(shortHeader(own.Bytes()))
	f.Add(longHeader(0, clientID(1, 8)))
	f.Add(longHeader(2, own.Bytes()))
	f.Add([]byte{0xc0, 0, 0, 0, 1, 20})
	src := message()
	src.N = copy(src.Buffers[0], longHeader(0, clientID(1, 8)))
	src.Addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	f.Add(encode(nil, &src))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &router{ids: ids, recent: recent{now: time.Now}}
		kept := r.keep(b, true)
		if _, _, ok := dcid(b); !ok && !kept {
			t.Errorf("a datagram without a readable ID was forwarded: %x", b)
		}
		r.keep(b, false)
		m := message()
		decode(b, &m)
	})
}

// TestConnForwards runs two Conns over one UDP socket as an upgrade leaves
// them: the old one, once the new one has said hello, keeps its own
// connection's datagrams and forwards the others with their source
// address; the new one reads the link, then the socket once the old one
// has closed.
func TestConnForwards(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	oldSock := &fakeShared{UDPConn: pc}
	old := New(oldSock)
	dup, err := pc.File() // the new process's copy of the socket
	if err != nil {
		t.Fatal(err)
	}
	npc, err := net.FilePacketConn(dup)
	dup.Close()
	if err != nil {
		t.Fatal(err)
	}
	newSock := &fakeShared{UDPConn: npc.(*net.UDPConn), parent: os.NewFile(uintptr(fds[1]), "child")}
	nw := New(newSock)
	oldSock.successor(os.NewFile(uintptr(fds[0]), "parent")) // the upgrade succeeded
	if !old.Forwarding() {
		t.Fatal("the old process does not forward after the new one said hello")
	}

	client, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	own, _ := old.IDs().GenerateConnectionID()
	theirs, _ := nw.IDs().GenerateConnectionID()
	mine := shortHeader(own.Bytes())
	forNew := [][]byte{shortHeader(theirs.Bytes()), longHeader(0, clientID(8, 8))}
	for _, b := range append([][]byte{mine}, forNew...) {
		if _, err := client.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	read := func(c *Conn) [][]byte {
		ms := []ipv4.Message{message(), message(), message()}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("ReadBatch: %v", err)
		}
		var out [][]byte
		for _, m := range ms[:n] {
			if m.Addr.String() != client.LocalAddr().String() {
				t.Errorf("a datagram from %v, want %v", m.Addr, client.LocalAddr())
			}
			out = append(out, append([]byte(nil), m.Buffers[0][:m.N]...))
		}
		return out
	}
	got := read(old)
	if len(got) != 1 || !bytes.Equal(got[0], mine) {
		t.Fatalf("the old process kept %d datagrams, want only its own connection's", len(got))
	}
	var gotNew [][]byte
	for len(gotNew) < len(forNew) {
		gotNew = append(gotNew, read(nw)...)
	}
	for i := range forNew {
		if !bytes.Equal(gotNew[i], forNew[i]) {
			t.Errorf("the new process got datagram %d as %x…, want %x…", i, gotNew[i][:8], forNew[i][:8])
		}
	}
	if fwd, dropped, _ := old.Stats(); fwd != 2 || dropped != 0 {
		t.Errorf("forwarded %d, dropped %d; want 2, 0", fwd, dropped)
	}

	// The old process's drain ends: the new one reads the socket itself.
	old.Close()
	if _, err := client.Write(mine); err != nil {
		t.Fatal(err)
	}
	if got := read(nw); len(got) != 1 || !bytes.Equal(got[0], mine) {
		t.Errorf("after the old process closed, the new one read %d datagrams, want the one sent", len(got))
	}
	if err := nw.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// fakeShared is a UDP socket with links, as package upgrade makes one.
type fakeShared struct {
	*net.UDPConn
	parent    *os.File
	successor func(*os.File)
}

func (f *fakeShared) ParentLink() *os.File {
	p := f.parent
	f.parent = nil
	return p
}

func (f *fakeShared) OnSuccessor(fn func(*os.File)) { f.successor = fn }
