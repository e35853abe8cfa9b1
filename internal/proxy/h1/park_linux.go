package h1

import (
	"container/heap"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/rawio"
	"golang.org/x/sys/unix"
)

// A parker holds the engine's idle client connections without a goroutine
// each: a connection that waited parkAfter for its next request in its own
// goroutine gives its buffers back and parks; its goroutine leaves. One
// goroutine per engine waits on an epoll instance of its own (one-shot
// readability of the parked sockets) and on the earliest of their
// deadlines (c.until, kept in a heap; no timer per connection), and hands
// a connection whose bytes arrived or whose deadline passed to a new
// goroutine running serve, which reads the request or closes it. An idle
// keep-alive connection so costs its h1conn and its socket, not a
// goroutine stack. The sockets stay in the runtime's poller as well: the
// parker only says when to read them.
type parker struct {
	epfd int
	evfd int // wakes the loop to stop
	done chan struct{}
	mu   sync.Mutex // guards everything below and the parkState of parked connections
	fds  map[int32]*h1conn
	dl   deadlines
	stop bool
	// waitFor is the deadline the loop waits for (zero: none).
	waitFor time.Time
}

// parkState is a connection's state in the parker.
type parkState struct {
	fd      int32 // the socket's descriptor, once known
	known   bool  // fd is known
	parked  bool
	inEpoll bool // registered in the epoll instance (maybe disarmed)
	idx     int  // position in parker.dl; -1 when not in it
}

// parkerOf returns the engine's parker, started on first use; nil when it
// cannot be (no descriptors left: the connection then waits in its
// goroutine).
func (e *Engine) parkerOf() *parker {
	e.pkMu.Lock()
	defer e.pkMu.Unlock()
	if e.pk != nil || e.pkStopped {
		return e.pk
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev) != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil
	}
	p := &parker{epfd: epfd, evfd: evfd, done: make(chan struct{}), fds: map[int32]*h1conn{}}
	go p.loop()
	e.pk = p
	return p
}

// stopParker ends the parker's goroutine; Serve calls it once no
// connection is left.
func (e *Engine) stopParker() {
	e.pkMu.Lock()
	p := e.pk
	e.pk, e.pkStopped = nil, true
	e.pkMu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
	p.kick()
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.evfd)
}

// park hands c, idle with no buffers held, to the parker; false when it
// cannot take it (then c is the caller's still).
func (c *h1conn) park() bool {
	if !c.pk.known {
		rc, err := c.tcp.SyscallConn()
		if err != nil || rc.Control(func(fd uintptr) { c.pk.fd = int32(fd) }) != nil {
			return false
		}
		c.pk.known = true
	}
	p := c.e.parkerOf()
	if p == nil {
		return false
	}
	c.release()
	// The raw reader and writer is not kept while parked (serve takes
	// another): this goroutine drops it, and another may serve c as soon
	// as it is in the epoll instance.
	rw := c.rw
	c.rw = nil
	parked := false
	defer func() {
		if parked {
			rawio.Put(rw) // nothing reads or writes an idle connection
		} else {
			c.rw = rw // still this goroutine's
		}
	}()
	// No timer stays armed while parked: the read deadline passed, and
	// the last response's write deadline goes.
	c.nc.SetDeadline(time.Time{})
	p.mu.Lock()
	defer p.mu.Unlock()
	// Shutdown and Close change the state or cancel ctx before they look
	// for parked connections (unpark): either they find c, or c sees them.
	if p.stop || c.state.Load() != connIdle || c.ctx.Err() != nil {
		return false
	}
	op := unix.EPOLL_CTL_ADD
	if c.pk.inEpoll {
		op = unix.EPOLL_CTL_MOD // re-arm the one-shot registration
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: c.pk.fd}
	if unix.EpollCtl(p.epfd, op, int(c.pk.fd), &ev) != nil {
		return false
	}
	c.pk.inEpoll, c.pk.parked, c.pk.idx = true, true, -1
	p.fds[c.pk.fd] = c
	parked = true
	if !c.until.IsZero() {
		heap.Push(&p.dl, c)
		if c.pk.idx == 0 && (p.waitFor.IsZero() || c.until.Before(p.waitFor)) {
			p.waitFor = c.until
			p.kick() // an earlier deadline than the loop waits for
		}
	}
	return true
}

// unpark takes c back from the parker, reporting whether it was parked:
// then the caller owns it and must start serve on a goroutine (or finish
// it) itself.
func (e *Engine) unpark(c *h1conn) bool {
	e.pkMu.Lock()
	p := e.pk
	e.pkMu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unparkLocked(c)
}

func (p *parker) unparkLocked(c *h1conn) bool {
	if !c.pk.parked {
		return false
	}
	c.pk.parked = false
	delete(p.fds, c.pk.fd)
	if c.pk.idx >= 0 {
		heap.Remove(&p.dl, c.pk.idx)
	}
	return true
}

// kick wakes the loop.
func (p *parker) kick() {
	one := [8]byte{1}
	unix.Write(p.evfd, one[:])
}

func (p *parker) loop() {
	defer close(p.done)
	var evs [256]unix.EpollEvent
	var wake []*h1conn
	wait := -1
	for {
		n, err := unix.EpollWait(p.epfd, evs[:], wait)
		if err != nil && err != unix.EINTR {
			// Not expected (the descriptors are ours): wait a moment
			// and go on rather than spin.
			time.Sleep(10 * time.Millisecond)
		}
		p.mu.Lock()
		if p.stop {
			p.mu.Unlock()
			return
		}
		for _, ev := range evs[:max(n, 0)] {
			if ev.Fd == int32(p.evfd) {
				var b [8]byte
				unix.Read(p.evfd, b[:])
				continue
			}
			if c := p.fds[ev.Fd]; c != nil && p.unparkLocked(c) {
				wake = append(wake, c)
			}
		}
		now := time.Now()
		for len(p.dl) > 0 && !p.dl[0].until.After(now) {
			c := p.dl[0]
			p.unparkLocked(c)
			wake = append(wake, c)
		}
		wait, p.waitFor = -1, time.Time{}
		if len(p.dl) > 0 {
			p.waitFor = p.dl[0].until
			// Milliseconds, rounded up: the deadline has passed when
			// the loop wakes.
			wait = int((p.dl[0].until.Sub(now) + time.Millisecond - 1) / time.Millisecond)
		}
		p.mu.Unlock()
		for i, c := range wake {
			go c.serve()
			wake[i] = nil
		}
		wake = wake[:0]
	}
}

// deadlines is a heap of parked connections by c.until.
type deadlines []*h1conn

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].until.Before(d[j].until) }
func (d deadlines) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].pk.idx, d[j].pk.idx = i, j
}
func (d *deadlines) Push(x any) {
	c := x.(*h1conn)
	c.pk.idx = len(*d)
	*d = append(*d, c)
}
func (d *deadlines) Pop() any {
	old := *d
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	c.pk.idx = -1
	return c
}
