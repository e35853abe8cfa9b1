// Package quicshare lets two sluice processes share one UDP socket for
// QUIC during a binary upgrade without losing a datagram to the wrong one.
//
// During an upgrade (package upgrade) the new process inherits the UDP
// socket of each HTTP/3 listener while the old one drains. The kernel has
// one receive queue for that socket and gives each datagram to whichever
// process reads first: it cannot steer by QUIC connection. So, as Envoy
// does for its hot restart, only one process reads the socket at a time
// and forwards what is not its own, over a link that package upgrade
// creates beside the socket:
//
//   - Every process chooses its QUIC connection IDs with IDs, which it
//     alone recognises (Owns), so a datagram tells whose connection it
//     belongs to without a table.
//   - The old process, once the new one is ready and has said hello on the
//     link, keeps the datagrams of its own connections and of the
//     handshakes it had begun (their client-chosen IDs, remembered), and
//     forwards every other one, new connections included, to the new
//     process, with its source address and control messages.
//   - The new process reads only the link while the old one lives, and the
//     socket itself from the moment the link reads EOF (the old process
//     closed the socket at the end of its drain, or exited). A process
//     that upgrades again while its own parent drains forwards in turn.
//
// Why by hand: quic-go offers no hook for a datagram it cannot match
// (Envoy's dispatcher has one), no way to hand it a datagram read
// elsewhere, and no way to tell its connections' IDs. What it does offer
// is the ConnectionIDGenerator, and the interfaces by which it reads a
// socket: a net.PacketConn that also has ReadBatch (recvmmsg) and
// WriteMsgUDP. Conn is such a socket: writes (and GSO, DF, ECN marks) go
// to the UDP socket untouched; reads are the UDP socket's recvmmsg
// batches, with the control messages that carry ECN and the local
// address, filtered in place. When no upgrade is under way (no new
// process), the filter keeps every datagram and only looks at the first
// byte of each, and at the ID of the long-header ones (handshakes).
//
// SO_REUSEPORT with a BPF program that steers by connection ID would let
// the kernel do this, but needs sockets bound apart, by a program that
// parses QUIC in BPF; the shared socket and a link are all that an
// upgrade has.
package quicshare

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// Socket is what Conn reads and writes: a UDP socket handed over by
// package upgrade (its links: ParentLink and OnSuccessor).
type Socket interface {
	net.PacketConn
	net.Conn
	SyscallConn() (syscall.RawConn, error)
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
	ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error)
	WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error)

	// ParentLink returns, once, the link to the process the socket came
	// from (nil: none).
	ParentLink() *os.File
	// OnSuccessor sets the taker of the link to the process the socket is
	// handed to, once that process is ready.
	OnSuccessor(func(link *os.File))
}

// Conn is the socket a quic.Transport reads through (its Conn) with IDs as
// its ConnectionIDGenerator. Only the transport's read loop calls
// ReadBatch.
type Conn struct {
	Socket
	ids   *IDs
	batch *ipv4.PacketConn

	// The read loop's own.
	router router
	wbuf   []byte // a message being sent
	rbuf   []byte // a message being read

	parent atomic.Pointer[net.UnixConn] // nil: none, or gone
	child  atomic.Pointer[childLink]    // set: forward what is not ours

	forwarded, dropped, received atomic.Uint64

	mu       sync.Mutex
	closed   bool
	children map[*net.UnixConn]struct{} // links to successors, for Close
	wg       sync.WaitGroup
}

type childLink struct {
	uc *net.UnixConn
	rc syscall.RawConn
}

// New wraps s. When s came from a process that drains, New says hello to it
// on the link: from then on that process forwards to this one, and this
// one reads only the link until the other has closed its end.
func New(s Socket) *Conn {
	c := &Conn{Socket: s, ids: NewIDs(), batch: ipv4.NewPacketConn(s), children: map[*net.UnixConn]struct{}{}}
	c.router = router{ids: c.ids, recent: recent{now: time.Now}}
	if f := s.ParentLink(); f != nil {
		if uc := unixConn(f); uc != nil {
			if _, err := uc.Write(hello); err == nil {
				c.parent.Store(uc)
			} else {
				uc.Close()
			}
		}
	}
	s.OnSuccessor(c.successor)
	return c
}

func unixConn(f *os.File) *net.UnixConn {
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil
	}
	return uc
}

// IDs is the generator of this process's connection IDs, for
// quic.Transport.ConnectionIDGenerator.
func (c *Conn) IDs() *IDs { return c.ids }

// Forwarding reports whether a new process takes what is not this one's.
func (c *Conn) Forwarding() bool { return c.child.Load() != nil }

// Stats counts datagrams forwarded to the new process, those dropped on
// the way (its link was full), and those received from the old one.
func (c *Conn) Stats() (forwarded, dropped, received uint64) {
	return c.forwarded.Load(), c.dropped.Load(), c.received.Load()
}

// helloWait bounds the wait for the hello of a process that is ready: it
// said hello before it said it was ready, if it ever will.
const helloWait = 2 * time.Second

// successor takes the link to the process this socket was handed to: once
// it has said hello, what is not this process's goes to it, until its end
// closes.
func (c *Conn) successor(f *os.File) {
	uc := unixConn(f)
	if uc == nil {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		uc.Close()
		return
	}
	c.children[uc] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	buf := make([]byte, 16)
	uc.SetReadDeadline(time.Now().Add(helloWait))
	n, err := uc.Read(buf)
	uc.SetReadDeadline(time.Time{})
	rc, rerr := uc.SyscallConn()
	ok := err == nil && rerr == nil && isHello(buf[:n])
	var l *childLink
	if ok {
		l = &childLink{uc: uc, rc: rc}
		c.child.Store(l)
	}
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.children, uc)
			c.mu.Unlock()
			uc.Close()
		}()
		if !ok {
			return
		}
		// Nothing more comes this way: a read ends when the new process
		// closes its end (it exited) or Close closes this one.
		for {
			if _, err := uc.Read(buf); err != nil {
				break
			}
		}
		c.child.CompareAndSwap(l, nil)
	}()
}

// ReadBatch reads datagrams as ipv4.PacketConn.ReadBatch does (quic-go's
// batched read), and returns only those this process keeps: at least one,
// or an error.
func (c *Conn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	for {
		if p := c.parent.Load(); p != nil {
			ok, err := c.readParent(p, &ms[0])
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || c.isClosed() {
					return 0, err
				}
				// The old process closed its end (its drain ended) or
				// exited: from now on this process reads the socket.
				if c.parent.CompareAndSwap(p, nil) {
					p.Close()
				}
				continue
			}
			if ok && c.route(ms[:1]) == 1 {
				return 1, nil
			}
			continue
		}
		n, err := c.batch.ReadBatch(ms, flags)
		if err != nil {
			return 0, err
		}
		if n = c.route(ms[:n]); n > 0 {
			return n, nil
		}
	}
}

// readParent reads one message from the old process into m; ok is false
// for one that is not a datagram.
func (c *Conn) readParent(p *net.UnixConn, m *ipv4.Message) (ok bool, err error) {
	if c.rbuf == nil {
		c.rbuf = make([]byte, maxMessage)
	}
	n, err := p.Read(c.rbuf)
	if err != nil {
		return false, err
	}
	if !decode(c.rbuf[:n], m) {
		return false, nil
	}
	c.received.Add(1)
	return true, nil
}

// route forwards the datagrams of ms that are not this process's and moves
// the others to the front, returning how many.
func (c *Conn) route(ms []ipv4.Message) int {
	child := c.child.Load()
	k := 0
	for i := range ms {
		m := &ms[i]
		if !c.router.keep(m.Buffers[0][:m.N], child != nil) && c.forward(child, m) {
			continue
		}
		if k != i {
			move(&ms[k], m)
		}
		k++
	}
	return k
}

// forward sends m to the new process, never waiting: a full link drops it,
// as a full socket buffer would. It reports false when the new process is
// gone (this one keeps the datagram and takes all from now on).
func (c *Conn) forward(l *childLink, m *ipv4.Message) bool {
	c.wbuf = encode(c.wbuf[:0], m)
	var serr error
	if err := l.rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), c.wbuf, syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, nil)
		return true
	}); err != nil {
		serr = err
	}
	switch {
	case serr == nil:
		c.forwarded.Add(1)
		return true
	case errors.Is(serr, syscall.EAGAIN), errors.Is(serr, syscall.ENOBUFS):
		c.dropped.Add(1)
		return true
	}
	c.child.CompareAndSwap(l, nil)
	return false
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// SetReadDeadline applies to the socket and to the link being read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if p := c.parent.Load(); p != nil {
		p.SetReadDeadline(t)
	}
	return c.Socket.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline for reads.
func (c *Conn) SetDeadline(t time.Time) error {
	if p := c.parent.Load(); p != nil {
		p.SetReadDeadline(t)
	}
	return c.Socket.SetDeadline(t)
}

// Close closes the links (the new process then reads the socket itself),
// waits for their goroutines, and closes the socket.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	for uc := range c.children {
		uc.Close()
	}
	c.mu.Unlock()
	if p := c.parent.Swap(nil); p != nil {
		p.Close()
	}
	c.wg.Wait()
	return c.Socket.Close()
}
