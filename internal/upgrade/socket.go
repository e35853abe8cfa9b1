package upgrade

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// The sockets Listen and ListenPacket return: each is handed over by the
// next Upgrade while it is open.

// Link: the kernel gives each datagram of a UDP socket that two processes
// share to whichever reads first, whatever it is for. Beside each UDP socket
// it hands over, Upgrade passes one end of a unix SOCK_SEQPACKET socket
// pair: the new process gets it from ParentLink, the old one, once the new
// one is ready, through the function given to OnSuccessor. What travels on
// it is the socket's user's business (package quicshare forwards QUIC
// datagrams on it). A link reads EOF once the other process has closed its
// end (it exited, or closed the socket).

// link is one socket pair of an Upgrade (see Link).
type link struct {
	conn          *udpConn
	socket        int // its index in handoff.Sockets
	parent, child *os.File
}

type listener struct {
	net.Listener
	u    *Upgrader
	k    key
	sc   syscall.Conn
	once sync.Once
}

// SyscallConn gives the socket's descriptor, as *net.TCPListener does.
func (l *listener) SyscallConn() (syscall.RawConn, error) { return l.sc.SyscallConn() }

func (l *listener) Close() error {
	l.once.Do(func() { l.u.forget(l.k, l.sc) })
	return l.Listener.Close()
}

type packetConn struct {
	net.PacketConn
	u    *Upgrader
	k    key
	sc   syscall.Conn
	once sync.Once
}

func (p *packetConn) SyscallConn() (syscall.RawConn, error) { return p.sc.SyscallConn() }

func (p *packetConn) Close() error {
	p.once.Do(func() { p.u.forget(p.k, p.sc) })
	return p.PacketConn.Close()
}

// udpConn is a UDP socket Upgrade hands over while it is open, with a
// link to each process it shares the socket with (see Link).
type udpConn struct {
	*net.UDPConn
	u    *Upgrader
	k    key
	once sync.Once

	mu        sync.Mutex
	parent    *os.File       // until ParentLink takes it
	successor func(*os.File) // set by OnSuccessor
	closed    bool
}

// ParentLink returns, once, the link to the process this socket was
// inherited from (nil: none, or taken already): the caller owns it.
func (c *udpConn) ParentLink() *os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.parent
	c.parent = nil
	return l
}

// OnSuccessor makes f the taker of the link to the process this socket is
// handed to, once that process is ready; f owns it. Without f (or once the
// socket is closed) the link is closed at once, and the new process reads
// EOF on its end.
func (c *udpConn) OnSuccessor(f func(link *os.File)) {
	c.mu.Lock()
	c.successor = f
	c.mu.Unlock()
}

// handOver gives link to the successor function, or closes it.
func (c *udpConn) handOver(link *os.File) {
	c.mu.Lock()
	f, closed := c.successor, c.closed
	c.mu.Unlock()
	if f == nil || closed {
		link.Close()
		return
	}
	f(link)
}

func (c *udpConn) Close() error {
	c.once.Do(func() {
		c.u.forget(c.k, c)
		c.mu.Lock()
		c.closed = true
		if c.parent != nil {
			c.parent.Close()
			c.parent = nil
		}
		c.mu.Unlock()
	})
	return c.UDPConn.Close()
}
