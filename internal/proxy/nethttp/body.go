package nethttp

import (
	"errors"
	"io"
	"sync"

	"github.com/sluice-lb/sluice/internal/proxy"
)

// trackedBody is the client's request body as the attempts of one request
// share it. It remembers the first read error (which tells a client error
// from a backend error), enforces max_body_bytes on bodies of unknown
// length, and, when keep is set, keeps what it read (up to
// proxy.ReplayMax) so that a retry can send it again.
//
// Each attempt reads it through an attemptBody of its own (see attempt):
// http.Transport may go on reading an attempt's body on a goroutine of its
// own after RoundTrip has returned (a backend that answered before reading
// all of it), so nothing an attempt reads with is shared unguarded. One
// attempt at a time reads from the client (rd), what the attempts share is
// guarded by mu, and an attempt that a newer one replaced reads nothing
// more: the client's bytes go to one backend, in order.
type trackedBody struct {
	r      io.ReadCloser
	max    int64
	keep   bool
	expect bool // Expect: 100-continue over HTTP/1.1: the backend decides
	held   bool // r reads from memory only (an HTTP/2 or HTTP/3 body read whole)

	rd sync.Mutex // held by the attempt reading from the client

	mu       sync.Mutex // guards what follows
	n        int64      // bytes read from the client so far
	err      error
	kept     []byte // the first n bytes, while n ≤ proxy.ReplayMax
	overflow bool   // more than proxy.ReplayMax was read: no replay
	// invited: the client's body was read from, so net/http's server has
	// told the client "100 Continue"; the attempts after do not wait for
	// the backend's.
	invited bool
	cur     *attemptBody // the attempt that may read
	ended   bool         // the client's body was read to its end
}

// attemptBody is the body of one attempt. Only the goroutine that the
// Transport reads it on touches pos.
type attemptBody struct {
	b    *trackedBody
	pos  int64
	gate *continueGate // nil: the body is not held back
}

var (
	errSuperseded    = errors.New("a newer attempt took over the request body")
	errReplayOverrun = errors.New("the request body went past the replay buffer while a retry began")
)

// attempt returns the body of the next attempt, which sends the client's
// body from its first byte; the previous attempt's reads nothing more. The
// body of an Expect: 100-continue request that the client has not been
// told to send waits for this attempt's backend (see continueGate).
func (b *trackedBody) attempt() *attemptBody {
	v := &attemptBody{b: b}
	b.mu.Lock()
	b.cur = v
	if b.expect && !b.invited {
		v.gate = newContinueGate()
	}
	b.mu.Unlock()
	return v
}

// Held implements h2client.Held: the attempt's reads never wait on the
// client.
func (v *attemptBody) Held() bool { return v.b.held && v.gate == nil }

// continueGate is the gate the attempt's body waits behind (nil: none).
func (v *attemptBody) continueGate() *continueGate {
	if v == nil {
		return nil
	}
	return v.gate
}

func (v *attemptBody) Read(p []byte) (int, error) {
	if v.gate != nil && !v.gate.wait() {
		// This attempt's backend answered without asking for the body: it
		// stays with the client, and another attempt may still send it.
		return 0, errContinueRefused
	}
	b := v.b
	// What was read already is sent again without waiting for the
	// client: a read of an attempt that a newer one replaced may still
	// wait on it (see h2client's counted), holding rd.
	if n, done, err := v.fromKept(p); done {
		return n, err
	}
	b.rd.Lock()
	defer b.rd.Unlock()
	if n, done, err := v.fromKept(p); done { // what that read added, if it did
		return n, err
	}
	b.mu.Lock()
	b.invited = true
	b.mu.Unlock()

	n, err := b.r.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += int64(n)
	v.pos = b.n
	if b.max > 0 && b.n > b.max {
		b.err = proxy.ErrBodyTooLarge
		return 0, b.err
	}
	if b.keep && !b.overflow {
		if b.n <= proxy.ReplayMax {
			b.kept = append(b.kept, p[:n]...)
		} else {
			b.overflow, b.kept = true, nil
		}
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	b.ended = b.ended || err == io.EOF
	return n, err
}

// fromKept answers a Read from what was read from the client already, or
// with the error that ends the attempt's body (done), else leaves it to the
// client.
func (v *attemptBody) fromKept(p []byte) (n int, done bool, err error) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.cur != v:
		return 0, true, errSuperseded
	case v.pos < b.n && (b.overflow || !b.keep):
		return 0, true, errReplayOverrun
	case v.pos < b.n:
		n = copy(p, b.kept[v.pos:])
		v.pos += int64(n)
		return n, true, nil
	case b.err != nil:
		return 0, true, b.err
	}
	return 0, false, nil
}

// fail records err, found in the body on its way to a backend (a gRPC-Web
// text body that is not base64), as the client's body error.
func (b *trackedBody) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
}

// readAll reports whether the client's body was read to its end.
func (b *trackedBody) readAll() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ended
}

// Close leaves the client's body open (the server owns it, and a failed
// attempt must not close it) and shuts the attempt's 100-continue gate: a
// transport that closes the body before the backend asked for it (an
// HTTP/2 stream the backend refused) has its read end at once, without
// inviting the client to send what this attempt will not.
func (v *attemptBody) Close() error {
	if v.gate != nil {
		v.gate.shut()
	}
	return nil
}

// replayable reports whether everything read so far can be sent again.
func (b *trackedBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.keep && !b.overflow && b.err == nil
}

// readErr is the first error reading the client's body (nil: none yet).
func (b *trackedBody) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// sent is the bytes read from the client so far.
func (b *trackedBody) sent() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
