package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Tunnels tracks upgraded (WebSocket) connections, which net/http no longer
// sees after they are hijacked, so that shutdown can close them with a close
// frame. The zero value is ready.
type Tunnels struct {
	mu      sync.Mutex // guards conns, closing and wg.Add
	conns   map[*tunnel]struct{}
	closing bool // CloseAll began: tunnels that open now close at once
	wg      sync.WaitGroup
}

// tunnel is one upgraded connection pair.
type tunnel struct {
	client  net.Conn
	back    io.Closer
	pool    string
	backend *pool.Backend

	// mu serialises writes to the client: the backend→client copy and the
	// shutdown close frame. frames and closing are guarded by it.
	mu      sync.Mutex
	frames  wsFrames
	closing bool
}

// add registers tn; it reports false when shutdown has begun, after
// sending tn's client the close frame and closing it.
func (t *Tunnels) add(tn *tunnel) bool {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		tn.goAway(time.Now())
		return false
	}
	if t.conns == nil {
		t.conns = map[*tunnel]struct{}{}
	}
	t.conns[tn] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	return true
}

func (t *Tunnels) remove(tn *tunnel) {
	t.mu.Lock()
	delete(t.conns, tn)
	t.mu.Unlock()
	t.wg.Done()
}

// closeFrame is a WebSocket close frame from the server side (unmasked):
// status 1001 "going away".
var closeFrame = append([]byte{0x88, 2 + 10, 0x03, 0xe9}, "going away"...)

// CloseAll sends every WebSocket client a close frame (1001, going away)
// at the next frame boundary, waiting up to wait for one, then closes both
// sides and waits until the copies have ended.
func (t *Tunnels) CloseAll(wait time.Duration) {
	deadline := time.Now().Add(wait)
	t.mu.Lock()
	t.closing = true
	list := make([]*tunnel, 0, len(t.conns))
	for tn := range t.conns {
		list = append(list, tn)
	}
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
	// Every tunnel is closed on both sides now, so its copies end at once;
	// the wait is bounded all the same.
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) + time.Second):
	}
}

// Retire closes, after grace, the tunnels whose backend keep rejects (after
// a reload removed their pool or backend), each with a close frame. It
// returns how many it will close, at once: start runs the waiting in a
// goroutine its caller owns, which ends early when done is closed (shutdown
// then closes them).
func (t *Tunnels) Retire(keep func(poolName string, b *pool.Backend) bool, grace time.Duration, done <-chan struct{}, start func(func())) int {
	t.mu.Lock()
	var list []*tunnel
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
// (or gives up at deadline), then closes both connections.
func (tn *tunnel) goAway(deadline time.Time) {
	for {
		tn.mu.Lock()
		if tn.frames.atBoundary() || time.Now().After(deadline) {
			if tn.frames.atBoundary() {
				tn.client.SetWriteDeadline(time.Now().Add(time.Second))
				tn.client.Write(closeFrame)
			}
			tn.closing = true
			tn.mu.Unlock()
			break
		}
		tn.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	tn.back.Close()
	tn.client.Close()
}

// Write copies backend bytes to the client, tracking frame boundaries; it
// fails once shutdown has sent the close frame.
func (tn *tunnel) Write(p []byte) (int, error) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.closing {
		return 0, net.ErrClosed
	}
	n, err := tn.client.Write(p)
	tn.frames.feed(p[:n])
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

// tunnel completes a protocol switch the backend accepted: it hijacks the
// client connection, relays the 101 response and then copies bytes both
// ways until either side closes.
func (a *httpAttempt) tunnel(resp *http.Response, b *pool.Backend) Outcome {
	backConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return Outcome{Class: Reset, Err: fmt.Errorf("backend switched protocols but its body is not writable")}
	}
	if got := strings.ToLower(resp.Header.Get("Upgrade")); a.upType == "" || got != a.upType {
		backConn.Close()
		return Outcome{Class: Reset, Err: fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, a.upType)}
	}
	conn, brw, err := http.NewResponseController(a.w).Hijack()
	if err != nil {
		backConn.Close()
		return Outcome{Class: ClientGone, Err: fmt.Errorf("hijack client connection: %w", err)}
	}
	defer conn.Close()
	defer backConn.Close()

	removeHopHeaders(resp.Header)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", a.upType)
	resp.Header.Set("X-Request-Id", a.id)
	resp.Body = nil
	if err := resp.Write(brw); err != nil {
		return Outcome{Class: Done, Status: resp.StatusCode, Err: err}
	}
	if err := brw.Flush(); err != nil {
		return Outcome{Class: Done, Status: resp.StatusCode, Err: err}
	}

	tn := &tunnel{client: conn, back: backConn, pool: a.t.Pool.Name, backend: b}
	if !a.h.tunnels.add(tn) {
		return Outcome{Class: Done, Status: resp.StatusCode} // shutting down
	}
	defer a.h.tunnels.remove(tn)
	// brw.Reader holds any bytes the client sent after its request.
	a.bytes += tn.relay(brw.Reader, backConn, backConn)
	return Outcome{Class: Done, Status: resp.StatusCode}
}

// relay copies fromClient to toBack and fromBack to the client until
// either direction ends, then closes both connections; it returns the
// bytes sent to the client. Both codecs' tunnels end here.
func (tn *tunnel) relay(fromClient, fromBack io.Reader, toBack io.Writer) int64 {
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(toBack, fromClient)
		errc <- err
	}()
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(tn, fromBack)
		done <- n
	}()
	var n int64
	select {
	case <-errc:
		tn.client.Close()
		tn.back.Close()
		n = <-done
	case n = <-done:
		tn.client.Close()
		tn.back.Close()
		<-errc
	}
	return n
}
