package nethttp

import (
	"io"
	"sync/atomic"

	"github.com/sluice-lb/sluice/internal/proxy"
)

// trackedBody wraps the client's request body on its way to a backend. It
// remembers the first read error (which tells a client error from a backend
// error), enforces max_body_bytes on bodies of unknown length, and, when
// keep is set, keeps what it read (up to proxy.ReplayMax) so that rewind can serve
// it again to the next backend. Close is a no-op: the server owns the
// client's body, and a failed attempt must not close it.
type trackedBody struct {
	r   io.ReadCloser
	n   int64 // bytes read from the client so far
	max int64
	err error
	// sent is n for the handler, which may read it while the Transport
	// still reads the body on a goroutine of its own.
	sent atomic.Int64

	keep     bool
	kept     []byte // the first n bytes, while n ≤ proxy.ReplayMax
	overflow bool   // more than proxy.ReplayMax was read: no replay
	pos      int    // replay position in kept
}

func (b *trackedBody) Read(p []byte) (int, error) {
	if b.pos < len(b.kept) {
		n := copy(p, b.kept[b.pos:])
		b.pos += n
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	b.sent.Add(int64(n))
	if b.max > 0 && b.n > b.max {
		b.err = proxy.ErrBodyTooLarge
		return 0, b.err
	}
	if b.keep && !b.overflow {
		if b.n <= proxy.ReplayMax {
			b.kept = append(b.kept, p[:n]...)
			b.pos = len(b.kept)
		} else {
			b.overflow, b.kept = true, nil
		}
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *trackedBody) Close() error { return nil }

// replayable reports whether everything read so far can be served again.
func (b *trackedBody) replayable() bool { return b.keep && !b.overflow && b.err == nil }

// rewind makes the next Read start again from the first byte.
func (b *trackedBody) rewind() { b.pos = 0 }
