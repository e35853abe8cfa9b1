package rawio

import (
	"syscall"
)

// SendChecked sends a request on an idle connection that must have
// received nothing since its last exchange, and reads the first bytes of
// the answer into rb (len(rb) > 0). It makes one system call fewer than a
// check (a MSG_PEEK), a write and a read apart: a goroutine that waits
// for the answer reads the socket once, finds it empty (EAGAIN), and only
// then waits; here that read comes first and is the check. Bytes or an
// EOF there mean the peer sent something unasked or closed the
// connection: stray, and nothing is written. Otherwise bufs are written
// and the answer is awaited in the runtime's poller, as Read does: the
// socket was read empty before the write, so no readiness is missed.
//
// It returns what was written and the bytes read into rb. It stops early,
// with nothing read, when the socket does not take all of bufs at once
// (the caller writes the rest, from written on) or when the read after the
// write fails (the caller's next read meets the error again); err is an
// error of the write, or of the connection before it.
func (c *Conn) SendChecked(bufs [][]byte, rb []byte) (written int64, n int, stray bool, err error) {
	c.rmu.Lock()
	c.wmu.Lock()
	c.xb, c.xrb, c.xw, c.xn, c.xe, c.xsent, c.xstray = bufs, rb, 0, 0, 0, false, false
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
		if _, errno := readNow(fd, c.xrb); errno != syscall.EAGAIN {
			c.xstray = true // bytes, an EOF or an error
			return true
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
