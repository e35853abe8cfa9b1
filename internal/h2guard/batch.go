package h2guard

import (
	"errors"
	"net"
	"sync"
	"time"
)

// batchConn is the connection beneath a Conn: it batches the server's
// writes. x/net's server flushes whenever its write queue runs empty, one
// flush at a time, and waits for each before it writes the next frames: with
// one handler goroutine per stream handing over a response's HEADERS and
// DATA one at a time, that is about two system calls per response, where an
// event-driven proxy writes the responses of several streams at once.
// batchConn's Write copies the bytes and returns; one writer goroutine sends
// them, and what the server writes while a send is in progress goes out
// together in the next. Nothing waits for a timer: the first bytes go out at
// once, later ones as soon as the connection takes them.
//
// Back-pressure is kept: Write blocks while maxPending bytes wait besides
// the batch being sent. Errors
// come back from the Write after the one whose bytes failed (as from a
// socket's buffer). CloseWrite and Close send what waits first (Close for at
// most closeDrain, or until an earlier write deadline).
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	cond     sync.Cond // pending, writing, err or closing changed
	pending  []byte
	spare    []byte
	writing  bool
	started  bool
	closing  bool
	err      error
	deadline time.Time // the last write deadline set
	done     chan struct{}
	close    sync.Once
	closeErr error
}

const (
	// maxPending bounds the bytes a connection buffers before Write blocks.
	maxPending = 64 << 10
	// closeDrain bounds how long Close sends what is still buffered.
	closeDrain = time.Second
	// keepSpare is the largest buffer kept while the connection is idle.
	keepSpare = 16 << 10
)

func newBatchConn(nc net.Conn) *batchConn {
	b := &batchConn{Conn: nc, done: make(chan struct{})}
	b.cond.L = &b.mu
	return b
}

// Write queues p for the writer goroutine (starting it on first use).
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closing && len(b.pending) >= maxPending {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closing {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.pending == nil {
		b.pending, b.spare = b.spare[:0], nil
	}
	b.pending = append(b.pending, p...)
	if !b.started {
		b.started = true
		go b.run()
	}
	b.cond.Broadcast()
	return len(p), nil
}

// run sends what is pending, all of it in one write, until Close.
func (b *batchConn) run() {
	defer close(b.done)
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for len(b.pending) == 0 && !b.closing && b.err == nil {
			b.cond.Wait()
		}
		if len(b.pending) == 0 || b.err != nil {
			return
		}
		buf := b.pending
		b.pending = nil
		b.writing = true
		b.cond.Broadcast() // a Write waiting for room may queue the next batch
		b.mu.Unlock()
		_, err := b.Conn.Write(buf)
		b.mu.Lock()
		b.writing = false
		if err != nil {
			b.err = err
		}
		if cap(buf) <= keepSpare {
			b.spare = buf[:0] // Write takes it when nothing is pending
		}
		b.cond.Broadcast()
	}
}

// drain waits until nothing is pending or being written, or a write failed.
func (b *batchConn) drain() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && (len(b.pending) > 0 || b.writing) {
		b.cond.Wait()
	}
	return b.err
}

// SetWriteDeadline bounds the writer's sends (and so drain).
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	b.deadline = t
	b.mu.Unlock()
	return b.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines.
func (b *batchConn) SetDeadline(t time.Time) error {
	b.mu.Lock()
	b.deadline = t
	b.mu.Unlock()
	return b.Conn.SetDeadline(t)
}

// CloseWrite sends what is pending, then shuts the write side; a
// connection that cannot shut only its write side says so
// (errors.ErrUnsupported).
func (b *batchConn) CloseWrite() error {
	cw, ok := b.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.ErrUnsupported
	}
	if err := b.drain(); err != nil {
		return err
	}
	return cw.CloseWrite()
}

// Close sends what is pending (for at most closeDrain), closes the
// connection and waits for the writer goroutine.
func (b *batchConn) Close() error {
	b.close.Do(func() {
		b.mu.Lock()
		started := b.started
		if started && (len(b.pending) > 0 || b.writing) && b.err == nil {
			dl := time.Now().Add(closeDrain)
			if b.deadline.IsZero() || b.deadline.After(dl) {
				b.Conn.SetWriteDeadline(dl)
			}
			b.mu.Unlock()
			b.drain()
			b.mu.Lock()
		}
		b.closing = true
		b.cond.Broadcast()
		b.mu.Unlock()
		b.closeErr = b.Conn.Close()
		if started {
			<-b.done
		}
	})
	return b.closeErr
}
