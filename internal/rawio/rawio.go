// Package rawio reads and writes TCP sockets with system calls that the Go
// scheduler does not see.
//
// Why by hand: a read or write on a *net.TCPConn enters the system call
// through the runtime (entersyscall), so while it runs its P counts as in
// a system call. Over loopback a write runs the receiver's TCP stack too,
// and under load a non-blocking read or write often outlasts sysmon's
// 20 µs tick; sysmon then takes the P from it (retake, handoffp, startm: a
// futex wake of another thread) and, because it retook something, keeps
// polling every 20 µs. The engine makes four such calls per proxied
// request; issue 15's profile put sysmon and its hand-offs at 15–18 % of
// the engine's CPU. The sockets are non-blocking (the runtime's poller
// owns them), so a raw read or write never waits: it returns EAGAIN, and
// the connection then waits in the poller exactly as net.Conn would
// (syscall.RawConn's Read and Write: its locks, its deadlines). No library
// offers this; the standard library's own raw path is what it builds on.
package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a TCP connection (accepted or dialled, maybe beneath a wrapper
// that leaves the socket's bytes alone) whose Read, Write and WriteBuffers
// are raw system calls on the socket; everything else (Close, addresses,
// deadlines) is the wrapped connection's.
type Conn struct {
	net.Conn
	tcp *net.TCPConn
	rc  syscall.RawConn
	// pooled: it came from Get.
	pooled bool

	rmu sync.Mutex // one reader at a time: the fields below are its
	rb  []byte
	rn  int
	re  syscall.Errno
	rf  func(uintptr) bool

	wmu sync.Mutex // one writer at a time: the fields below are its
	w1  [1][]byte  // Write's buffer
	wv  [][]byte
	wn  int64
	we  syscall.Errno
	wf  func(uintptr) bool

	// Send's, under both locks.
	xb     [][]byte
	xrb    []byte
	xw     int64
	xn     int
	xe     syscall.Errno
	xsent  bool // the check found nothing and bufs are written
	xstray bool
	xcheck bool
	xf     func(uintptr) bool
}

// New returns nc with raw reads and writes on tcp, the socket beneath it
// (nc itself, or a wrapper whose bytes are the socket's: see
// proxyproto.TCP); nc when it cannot (then nc is used as it is).
func New(nc net.Conn, tcp *net.TCPConn) net.Conn {
	if c, ok := nc.(*Conn); ok {
		return c // already
	}
	if tcp == nil || !supported {
		return nc
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{Conn: nc, tcp: tcp, rc: rc}
	c.bind()
	return c
}

// bind makes the functions RawConn calls, once per Conn.
func (c *Conn) bind() {
	c.rf, c.wf, c.xf = c.read, c.write, c.sendStep
}

// pool keeps the Conns of Get: a connection that waits long between
// requests gives its Conn back (Put) and takes another for the next.
var pool = sync.Pool{New: func() any { return new(Conn) }}

// Get is New with a Conn from a pool. Give it back with Put once nothing
// uses it any more.
func Get(nc net.Conn, tcp *net.TCPConn) net.Conn {
	if tcp == nil || !supported {
		return nc
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nc
	}
	c := pool.Get().(*Conn)
	c.Conn, c.tcp, c.rc, c.pooled = nc, tcp, rc, true
	if c.rf == nil {
		c.bind()
	}
	return c
}

// Put gives back a Conn that Get returned; it leaves anything else alone.
// The caller must not use nc afterwards.
func Put(nc net.Conn) {
	if c, ok := nc.(*Conn); ok && c.pooled {
		c.Conn, c.tcp, c.rc = nil, nil, nil
		pool.Put(c)
	}
}

// NetConn returns the wrapped connection, as tls.Conn's NetConn does.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// TCP returns the socket (see proxyproto.TCP).
func (c *Conn) TCP() *net.TCPConn { return c.tcp }

// Read reads from the socket, waiting in the runtime's poller (and within
// the read deadline) while it has nothing.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rb, c.rn, c.re = b, 0, 0
	err := c.rc.Read(c.rf)
	n, errno := c.rn, c.re
	c.rb = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, err // the deadline passed, or the connection closed
	case errno != 0:
		return 0, opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) read(fd uintptr) bool {
	n, errno := readNow(fd, c.rb)
	if errno == syscall.EAGAIN {
		return false // wait in the poller, then again
	}
	c.rn, c.re = n, errno
	return true
}

// readNow reads once into b (again after an interruption); EAGAIN says
// there is nothing yet.
func readNow(fd uintptr, b []byte) (int, syscall.Errno) {
	for {
		n, errno := rawRead(fd, b)
		if errno != syscall.EINTR {
			return n, errno
		}
	}
}

// Write writes all of b unless an error or the write deadline stops it.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	c.w1[0] = b
	n, err := c.writeLocked(c.w1[:])
	c.w1[0] = nil
	c.wmu.Unlock()
	return int(n), err
}

// WriteBuffers writes the buffers in order, in one writev where the socket
// takes them (net.Buffers' WriteTo does this for a *net.TCPConn only).
// It does not keep bufs.
func (c *Conn) WriteBuffers(bufs [][]byte) (int64, error) {
	c.wmu.Lock()
	n, err := c.writeLocked(bufs)
	c.wmu.Unlock()
	return n, err
}

func (c *Conn) writeLocked(bufs [][]byte) (int64, error) {
	c.wv, c.wn, c.we = bufs, 0, 0
	err := c.rc.Write(c.wf)
	n, errno := c.wn, c.we
	c.wv = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, opError("write", errno)
	}
	return n, nil
}

func (c *Conn) write(fd uintptr) bool {
	errno := writeNow(fd, c.wv, &c.wn)
	if errno == syscall.EAGAIN {
		return false // wait until writable, then the rest
	}
	c.we = errno
	return true
}

// writeNow writes what is left of bufs past *done, counting in *done,
// until all is written (0), the socket is full (EAGAIN) or an error.
func writeNow(fd uintptr, bufs [][]byte, done *int64) syscall.Errno {
	for {
		var iov [8]syscall.Iovec
		k := gather(&iov, bufs, *done)
		if k == 0 {
			return 0
		}
		n, errno := rawWritev(fd, iov[:k])
		switch errno {
		case 0:
			*done += int64(n)
		case syscall.EINTR:
		default:
			return errno
		}
	}
}

// gather fills iov with what is left of bufs once skip bytes are written,
// as far as iov goes, and returns how many it filled (0: nothing left).
func gather(iov *[8]syscall.Iovec, bufs [][]byte, skip int64) int {
	k := 0
	for _, b := range bufs {
		if skip >= int64(len(b)) {
			skip -= int64(len(b))
			continue
		}
		if k == len(iov) {
			break
		}
		b = b[skip:]
		skip = 0
		iov[k].Base = &b[0]
		iov[k].SetLen(len(b))
		k++
	}
	return k
}

func opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
}

// WriteBuffers writes bufs to w: in one writev on a *Conn or a
// *net.TCPConn; to any other writer (a *tls.Conn above all, which makes a
// record and a system call of every Write) in one Write of their bytes
// gathered into a pooled buffer when they come to at most gatherMax
// bytes, else one Write per buffer as net.Buffers does.
func WriteBuffers(w io.Writer, bufs [][]byte) (int64, error) {
	switch c := w.(type) {
	case *Conn:
		return c.WriteBuffers(bufs)
	case *net.TCPConn:
		nb := net.Buffers(bufs)
		return nb.WriteTo(c)
	}
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	if len(bufs) < 2 || total > gatherMax {
		nb := net.Buffers(bufs)
		return nb.WriteTo(w)
	}
	bp := gatherBufs.Get().(*[]byte)
	g := (*bp)[:0]
	for _, b := range bufs {
		g = append(g, b...)
	}
	n, err := w.Write(g)
	*bp = g[:0]
	gatherBufs.Put(bp)
	return int64(n), err
}

// gatherMax is the most WriteBuffers gathers into one Write: the largest
// plaintext of a TLS record, so that a head and a body that fit one record
// go out as one record in one system call instead of a record and a system
// call each.
const gatherMax = 16 << 10

// gatherBufs holds WriteBuffers' gathering buffers.
var gatherBufs = sync.Pool{New: func() any { b := make([]byte, 0, gatherMax); return &b }}
