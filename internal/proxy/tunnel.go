package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Tunnels tracks upgraded (WebSocket) connections, which net/http no longer
// sees after they are hijacked, so that shutdown can close them with a close
// frame. The zero value is ready.
type Tunnels struct {
	mu      sync.Mutex // guards conns, closing, keep and drained
	conns   map[*Tunnel]struct{}
	closing bool // CloseAll began: tunnels that open now close at once
	// keep is the last Retire's rule: a tunnel that opens later to a
	// backend it rejects (a reload removed it while the upgrade was on its
	// way) is refused.
	keep func(poolName string, b *pool.Backend) bool
	// drained, when not nil, is closed when the last tunnel leaves (see
	// emptyLocked).
	drained chan struct{}
}

// Tunnel is one upgraded connection pair.
type Tunnel struct {
	client  net.Conn
	back    io.Closer
	pool    string
	backend *pool.Backend

	// mu serialises writes to the client: the backend→client copy and the
	// shutdown close frame. frames, closing and boundary are guarded by it.
	mu      sync.Mutex
	frames  wsFrames
	closing bool
	opened  bool // the 101 went out (Open)
	// boundary, when set, is closed by Write once the client stream is
	// between frames (goAway waits on it).
	boundary chan struct{}
}

// NewTunnel returns the tunnel between client and back, to backend b of
// the pool called poolName.
func NewTunnel(client net.Conn, back io.Closer, poolName string, b *pool.Backend) *Tunnel {
	return &Tunnel{client: client, back: back, pool: poolName, backend: b}
}

// Add registers tn. A codec calls it before the 101 response reaches the
// client, so that a reload or shutdown from then on sees the tunnel. It
// reports false when shutdown has begun, or when a reload removed the
// tunnel's backend meanwhile: the codec then closes the backend connection
// and answers 503 instead of the 101.
func (t *Tunnels) Add(tn *Tunnel) bool {
	t.mu.Lock()
	if t.closing || t.keep != nil && !t.keep(tn.pool, tn.backend) {
		t.mu.Unlock()
		return false
	}
	if t.conns == nil {
		t.conns = map[*Tunnel]struct{}{}
	}
	t.conns[tn] = struct{}{}
	t.mu.Unlock()
	return true
}

// Admits reports whether Add would take a tunnel to b of the pool called
// poolName now (a codec that must commit to the switch before it can
// register asks first).
func (t *Tunnels) Admits(poolName string, b *pool.Backend) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closing && (t.keep == nil || t.keep(poolName, b))
}

// Remove unregisters tn once its relay has ended (or the switch failed).
func (t *Tunnels) Remove(tn *Tunnel) {
	t.mu.Lock()
	delete(t.conns, tn)
	if t.drained != nil && len(t.conns) == 0 {
		close(t.drained)
		t.drained = nil
	}
	t.mu.Unlock()
}

// closeFrame is a WebSocket close frame from the server side (unmasked):
// status 1001 "going away".
var closeFrame = append([]byte{0x88, 2 + 10, 0x03, 0xe9}, "going away"...)

// emptyLocked returns a channel that is closed once no tunnel is left.
func (t *Tunnels) emptyLocked() <-chan struct{} {
	if len(t.conns) == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if t.drained == nil {
		t.drained = make(chan struct{})
	}
	return t.drained
}

// Drain lets the tunnels run until each ends by itself, but no later than
// wait before ctx's deadline; it then closes those left as CloseAll(wait)
// does, so that all have ended by the deadline. Tunnels that open
// meanwhile are admitted and drained alike. It is the shutdown of a
// process that handed over to another (an upgrade): nothing presses its
// WebSockets to end sooner than requests in flight.
func (t *Tunnels) Drain(ctx context.Context, wait time.Duration) {
	t.mu.Lock()
	empty := t.emptyLocked()
	t.mu.Unlock()
	var closeAt <-chan time.Time // no deadline: when ctx ends
	if d, ok := ctx.Deadline(); ok {
		timer := time.NewTimer(time.Until(d.Add(-wait)))
		defer timer.Stop()
		closeAt = timer.C
	}
	select {
	case <-empty:
		return
	case <-closeAt:
	case <-ctx.Done():
	}
	t.CloseAll(wait)
}

// CloseAll sends every WebSocket client a close frame (1001, going away)
// at the next frame boundary, waiting up to wait for one, then closes both
// sides and waits until the copies have ended.
func (t *Tunnels) CloseAll(wait time.Duration) {
	deadline := time.Now().Add(wait)
	t.mu.Lock()
	t.closing = true
	list := make([]*Tunnel, 0, len(t.conns))
	for tn := range t.conns {
		list = append(list, tn)
	}
	drained := t.emptyLocked()
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, tn := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn.goAway(deadline)
		}()
	}
	wg.Wait()
	// Every tunnel is closed on both sides now, so its relays end and
	// remove it at once; the wait is bounded all the same.
	timer := time.NewTimer(time.Until(deadline) + time.Second)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
	}
}

// Retire closes, after grace, the tunnels whose backend keep rejects (after
// a reload removed their pool or backend), each with a close frame. It
// returns how many it will close, at once: start runs the waiting in a
// goroutine its caller owns, which ends early when done is closed (shutdown
// then closes them).
func (t *Tunnels) Retire(keep func(poolName string, b *pool.Backend) bool, grace time.Duration, done <-chan struct{}, start func(func())) int {
	t.mu.Lock()
	t.keep = keep
	var list []*Tunnel
	for tn := range t.conns {
		if !keep(tn.pool, tn.backend) {
			list = append(list, tn)
		}
	}
	t.mu.Unlock()
	if len(list) == 0 {
		return 0
	}
	start(func() {
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-done:
			return // shutdown closes them
		}
		deadline := time.Now().Add(time.Second)
		for _, tn := range list {
			tn.goAway(deadline)
		}
	})
	return len(list)
}

// goAway writes the close frame once the client stream is between frames
// (or gives up at deadline), then closes both connections. Write tells it
// when a frame ends; nothing polls.
func (tn *Tunnel) goAway(deadline time.Time) {
	tn.mu.Lock()
	if !tn.frames.atBoundary() && !tn.closing {
		ch := make(chan struct{})
		tn.boundary = ch
		tn.mu.Unlock()
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
		tn.mu.Lock()
		tn.boundary = nil
	}
	if tn.opened && tn.frames.atBoundary() && !tn.closing {
		tn.client.SetWriteDeadline(time.Now().Add(time.Second))
		tn.client.Write(closeFrame)
	}
	tn.closing = true
	tn.mu.Unlock()
	tn.back.Close()
	tn.client.Close()
}

// Open writes the switch response (the 101) to the client, under the lock
// that orders it before any close frame; it fails once the tunnel is
// closing (a reload or shutdown retired it first).
func (tn *Tunnel) Open(head []byte) error {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.closing {
		return net.ErrClosed
	}
	tn.client.SetWriteDeadline(time.Time{})
	_, err := tn.client.Write(head)
	tn.opened = err == nil
	return err
}

// Write copies backend bytes to the client, tracking frame boundaries; it
// fails once shutdown has sent the close frame.
func (tn *Tunnel) Write(p []byte) (int, error) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.closing {
		return 0, net.ErrClosed
	}
	n, err := tn.client.Write(p)
	tn.frames.feed(p[:n])
	if tn.boundary != nil && tn.frames.atBoundary() {
		close(tn.boundary)
		tn.boundary = nil
	}
	return n, err
}

// wsFrames follows the frame structure of a WebSocket byte stream (RFC 6455
// §5.2) just far enough to know whether it is between two frames.
type wsFrames struct {
	hdr  [14]byte
	nhdr int    // header bytes seen of the current frame
	left uint64 // payload bytes still to come
}

func (f *wsFrames) atBoundary() bool { return f.nhdr == 0 && f.left == 0 }

func (f *wsFrames) feed(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			n := min(uint64(len(p)), f.left)
			f.left -= n
			p = p[n:]
			continue
		}
		f.hdr[f.nhdr] = p[0]
		f.nhdr++
		p = p[1:]
		if f.nhdr < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4 // masking key
		}
		if f.nhdr < need {
			continue
		}
		switch l := uint64(f.hdr[1] & 0x7f); l {
		case 126:
			f.left = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			for i := 2; i < 10; i++ {
				f.left = f.left<<8 | uint64(f.hdr[i])
			}
		default:
			f.left = l
		}
		f.nhdr = 0
	}
}

// Relay copies fromClient to toBack and fromBack to the client until
// either direction ends, then closes both connections; it returns the
// bytes sent to the client and to the backend. Every codec's tunnels end
// here.
func (tn *Tunnel) Relay(fromClient, fromBack io.Reader, toBack io.Writer) (toClient, sent int64) {
	upc := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(toBack, fromClient)
		upc <- n
	}()
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(tn, fromBack)
		done <- n
	}()
	select {
	case sent = <-upc:
		tn.client.Close()
		tn.back.Close()
		toClient = <-done
	case toClient = <-done:
		tn.client.Close()
		tn.back.Close()
		sent = <-upc
	}
	return toClient, sent
}
