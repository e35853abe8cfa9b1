package h2guard

import (
	"encoding/binary"
	"time"
)

// How a Conn ends a connection whose client exceeded a limit: GOAWAY at a
// frame boundary, then a delayed close.

// fail closes the connection for r, after a GOAWAY if one fits: the server
// may be writing (its reader is blocked here, so it soon stops) or may have
// flushed part of a frame (it flushes the rest when its queue empties), so
// fail waits up to goAwayTimeout for a frame boundary with no write in
// progress. After a GOAWAY it shuts the write side and reads what the client
// still sends for up to lingerTimeout (Envoy's delayed close): closing a
// socket with unread data sends a TCP RST, which can destroy the GOAWAY
// before the client reads it.
func (c *Conn) fail(r Reason) {
	c.err = errs[r]
	c.reason.Store(uint32(r))
	if c.stats != nil {
		c.stats.counter(r).Add(1)
	}
	deadline := time.Now().Add(goAwayTimeout)
	for {
		if c.wmu.TryLock() {
			sent := c.goaway.Load()
			if !sent && (c.whdrN != 0 || c.wskip != 0) {
				c.wmu.Unlock() // mid-frame
			} else {
				linger := false
				if !sent && c.writeGoAway(r, deadline) {
					if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
						c.lingering.Store(true)
						linger = cw.CloseWrite() == nil
						c.lingering.Store(linger)
					}
				}
				if !linger {
					c.Conn.Close()
				}
				c.wmu.Unlock()
				if linger {
					c.linger(time.Now().Add(lingerTimeout))
					c.Conn.Close()
				}
				break
			}
		}
		if time.Now().After(deadline) {
			c.Conn.Close()
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	if c.onClose != nil {
		c.onClose(c, r)
	}
}

// Close closes the connection, unless fail is lingering on it: then fail
// closes it when the linger ends. The server's own close comes early there
// (its next write fails once the write side is shut), and a close with the
// client's flood unread sends a TCP RST, which destroys the GOAWAY in the
// client's receive buffer.
func (c *Conn) Close() error {
	if c.lingering.Load() {
		return nil
	}
	return c.Conn.Close()
}

// linger discards what the client sends until it closes or deadline.
func (c *Conn) linger(deadline time.Time) {
	if c.Conn.SetReadDeadline(deadline) != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		if _, err := c.Conn.Read(buf); err != nil {
			return
		}
	}
}

func (c *Conn) writeGoAway(r Reason, deadline time.Time) bool {
	var buf [frameHeaderLen + 8 + 48]byte
	n := copy(buf[frameHeaderLen+8:], GoAwayDebug(r))
	length := 8 + n
	buf[0], buf[1], buf[2] = 0, byte(length>>8), byte(length)
	buf[3] = fGoAway
	binary.BigEndian.PutUint32(buf[frameHeaderLen:], c.maxSID)
	binary.BigEndian.PutUint32(buf[frameHeaderLen+4:], errCodeEnhanceYourCalm)
	c.goaway.Store(true)
	_ = c.Conn.SetWriteDeadline(deadline)
	_, err := c.Conn.Write(buf[:frameHeaderLen+length])
	return err == nil
}
