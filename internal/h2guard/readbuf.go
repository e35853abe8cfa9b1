package h2guard

import "sync"

// x/net's server reads a frame as two reads, its 9-byte header and then its
// payload, straight from the connection: over cleartext (h2c) that is two
// system calls per frame, and a client's burst of small frames (HEADERS of
// ten streams, WINDOW_UPDATEs) costs two each. A Conn over a connection
// without a buffer of its own (not TLS: crypto/tls keeps the decrypted
// record) reads through readBuf instead: a small read takes what the socket
// has, up to readBufSize, and the reads after it are served from that.
// Reads of readBufSize or more (large payloads) go straight to the
// connection. The buffer comes from a pool and goes back whenever it is
// drained, so an idle connection holds one only while it waits in a read.
type readBuf struct {
	on   bool
	b    *[]byte
	r, w int
	err  error // the read error that came with bytes still buffered
}

const readBufSize = 4 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// read reads into p from the buffer, or from the connection.
func (c *Conn) read(p []byte) (int, error) {
	rb := &c.rb
	if rb.r < rb.w {
		n := copy(p, (*rb.b)[rb.r:rb.w])
		rb.r += n
		if rb.r < rb.w {
			return n, nil
		}
		rb.drained()
		err := rb.err
		rb.err = nil
		return n, err
	}
	if !rb.on || len(p) >= readBufSize {
		return c.Conn.Read(p)
	}
	if rb.b == nil {
		rb.b = readBufs.Get().(*[]byte)
	}
	m, err := c.Conn.Read(*rb.b)
	n := copy(p, (*rb.b)[:m])
	if n < m {
		rb.r, rb.w, rb.err = n, m, err
		return n, nil
	}
	rb.drained()
	return n, err
}

// drained returns the buffer to the pool.
func (rb *readBuf) drained() {
	rb.r, rb.w = 0, 0
	readBufs.Put(rb.b)
	rb.b = nil
}
