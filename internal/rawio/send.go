package rawio

import (
	"syscall"
)

// Send writes a request, bufs, and reads the first bytes of the answer
// into rb (len(rb) > 0), in one RawConn.Read: a goroutine that writes,
// then reads, finds the socket empty (EAGAIN) before it waits for the
// answer; here that read is not made, or is made to some use.
//
// With check, the connection is an idle one that must have received
// nothing since its last exchange, and the read that a wait begins with
// comes first and is the check: bytes or an EOF there mean the peer sent
// something unasked or closed the connection (stray), and nothing is
// written; EAGAIN means silent, and the request is written. It saves the
// system call of a check of its own (a MSG_PEEK). Without check (a new
// connection, or one checked before), the request is written at once.
// Either way the answer is then awaited in the runtime's poller, as Read
// does, and none is missed: RawConn.Read resets the poller's readiness
// before the write, and the answer can only come after it.
//
// It returns what was written and the bytes read into rb. It stops early,
// with nothing read, when the socket does not take all of bufs at once
// (the caller writes the rest, from written on) or when the read after the
// write fails (the caller's next read meets the error again); err is an
// error of the write, or of the connection before it.
func (c *Conn) Send(bufs [][]byte, rb []byte, check bool) (written int64, n int, stray bool, err error) {
	c.rmu.Lock()
	c.wmu.Lock()
	c.xb, c.xrb, c.xw, c.xn, c.xe, c.xsent, c.xstray, c.xcheck = bufs, rb, 0, 0, 0, false, false, check
	err = c.rc.Read(c.xf)
	written, n, stray = c.xw, c.xn, c.xstray
	if err == nil && c.xe != 0 {
		err = opError("write", c.xe)
	}
	if c.xsent {
		err = nil // the write is done: a failed read is the caller's to meet
	}
	c.xb, c.xrb = nil, nil
	c.wmu.Unlock()
	c.rmu.Unlock()
	return written, n, stray, err
}

func (c *Conn) sendStep(fd uintptr) bool {
	if !c.xsent {
		// The check: the read a wait begins with.
		if c.xcheck {
			if _, errno := readNow(fd, c.xrb); errno != syscall.EAGAIN {
				c.xstray = true // bytes, an EOF or an error
				return true
			}
		}
		// The write, all of it or stop: the caller writes the rest.
		if errno := writeNow(fd, c.xb, &c.xw); errno != 0 {
			if errno != syscall.EAGAIN {
				c.xe = errno
			}
			return true
		}
		c.xsent = true
		return false // wait for the answer
	}
	n, errno := readNow(fd, c.xrb)
	if errno == syscall.EAGAIN {
		return false
	}
	if errno == 0 {
		c.xn = n // 0: an EOF, met again by the caller's next read
	}
	return true // an error is met again by the caller's next read
}
