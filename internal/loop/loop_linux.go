package loop

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Events is the readiness epoll reported for a descriptor.
type Events uint32

// The readiness bits a Handler is given.
const (
	In    Events = unix.EPOLLIN
	Out   Events = unix.EPOLLOUT
	RdHup Events = unix.EPOLLRDHUP // the peer shut down its side
	Hup   Events = unix.EPOLLHUP
	Err   Events = unix.EPOLLERR
)

// A connection is registered once, edge-triggered, for both directions:
// the loop never calls epoll_ctl for it again. Its handler remembers what
// each event said (Ready) until a read or write returns EAGAIN.
const connEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// Handler is what a descriptor registered on a loop belongs to.
type Handler interface {
	// Event is called on the loop with the readiness the kernel reported.
	Event(ev Events)
	// Fail ends the handler after its Event, Expire or Flush panicked (the
	// loop has logged the panic): it closes what the handler owns, as its
	// own close would, so that one bad connection costs only itself.
	Fail()
}

// Flusher is work deferred to the end of a wake-up (Defer).
type Flusher interface {
	Flush()
}

// Config sets up a Loop. The zero value is a loop that waits through the
// scheduler, with 256 events per wake-up, logging to slog.Default.
type Config struct {
	// ID names the loop in its log lines.
	ID int
	// RawWait makes a busy loop wait in epoll_pwait without telling the
	// Go scheduler, so that it keeps its P: sysmon then sees a running
	// goroutine instead of retaking the P from a system call every 20 µs
	// and handing it off, which cost 17 % of the prototype's CPU per
	// request (docs/benchmarks.md). So that other goroutines still run
	// promptly, a raw wait lasts at most rawSpin, a busy loop yields its P
	// (runtime.Gosched) every millisecond, and once rawQuiet raw waits in
	// a row found nothing the next one goes through the scheduler: an idle
	// loop holds no P.
	//
	// When every P has a loop, a busy loop does not yield while fewer
	// loops are busy than there are Ps: a quiet loop has parked (or is
	// about to) and left its P to other goroutines, and a yield would
	// only wake that P's idle thread to take the busy loop over, a
	// wake-up and a migration for nothing (up to one a millisecond;
	// sysmon still preempts a loop that runs 10 ms unyielding). With fewer
	// loops than Ps it still yields: without the yields, goroutines left
	// queued on its P kept sysmon handing that P off from the quiet
	// loop's blocking waits, 5–12 % more CPU per request at a light load
	// (docs/benchmarks.md).
	RawWait bool
	// Loops is how many loops the process runs (NewGroup sets it): when
	// there are as many as Ps, a quiet loop parks rather than blocks
	// (parkWait).
	Loops int
	// held counts the group's busy loops, which hold a P in raw waits.
	// NewGroup shares one between its loops; a loop made by New alone
	// counts only itself, so loops that share Ps are made by NewGroup.
	held *atomic.Int32
	// Events is how many events one wake-up takes (0: 256).
	Events int
	// Log receives panics recovered on the loop (nil: slog.Default()).
	Log *slog.Logger
}

// Loop is one event loop. Its methods other than Post, Run and Close must
// be called on the loop's own goroutine (from a Handler, an Expirer, a
// Flusher or a posted function), or before Run starts.
type Loop struct {
	cfg  Config
	log  *slog.Logger
	epfd int
	evfd int // the inbox's eventfd
	// park is a second epoll instance, in Go's poller as an *os.File
	// (parkc its raw access), that holds epfd only while the loop parks.
	park      *os.File
	parkc     syscall.RawConn
	parkfd    int
	parkUntil int64 // the deadline set on park; 0: none
	parks     int   // how many times the loop parked (for tests)
	yields    int   // how many times a busy loop yielded its P (for tests)
	// parkFn is parkCheck, bound once: a closure made per park would be
	// allocated per park. armed, pn and perr are its state.
	parkFn  func(uintptr) bool
	armed   bool
	pn      int
	perr    error
	procs   int // GOMAXPROCS, read at procsAt (it may change)
	procsAt int64
	events  []unix.EpollEvent
	fds     []entry // by descriptor
	gen     uint32
	now     int64
	wheel   wheel
	timers  []*Timer // spare timers (Arm, Disarm)
	defers  []Flusher

	mu       sync.Mutex // guards inbox and closed
	inbox    []posted
	spare    []posted
	closed   bool
	stopping atomic.Bool
}

// entry is a registered descriptor: its handler and the generation its
// registration carries in the epoll event, so that an event read in the
// same batch as the close of its descriptor never reaches a handler that
// registered the reused number since.
type entry struct {
	h   Handler
	gen uint32
}

// New creates a loop: its epoll instance and its inbox's eventfd.
func New(cfg Config) (*Loop, error) {
	if cfg.Events <= 0 {
		cfg.Events = 256
	}
	if cfg.held == nil {
		cfg.held = new(atomic.Int32)
	}
	l := &Loop{cfg: cfg, log: cfg.Log, events: make([]unix.EpollEvent, cfg.Events), evfd: -1}
	if l.log == nil {
		l.log = slog.Default()
	}
	l.log = l.log.With("loop", cfg.ID)
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("loop %d: epoll_create1: %w", cfg.ID, err)
	}
	// An epoll descriptor is pollable: readable while it has events.
	// Non-blocking (which epoll_wait ignores), os.NewFile puts parkfd in
	// Go's poller.
	if l.parkfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err == nil {
		if err = unix.SetNonblock(l.parkfd, true); err == nil {
			l.park = os.NewFile(uintptr(l.parkfd), "epoll")
			l.parkc, err = l.park.SyscallConn()
		} else {
			unix.Close(l.parkfd)
		}
	}
	if err != nil {
		l.closeEpoll()
		return nil, fmt.Errorf("loop %d: epoll descriptor: %w", cfg.ID, err)
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		l.closeEpoll()
		return nil, fmt.Errorf("loop %d: eventfd: %w", cfg.ID, err)
	}
	if err := l.add(l.evfd, inboxHandler{l}, unix.EPOLLIN); err != nil {
		unix.Close(l.evfd)
		l.closeEpoll()
		return nil, fmt.Errorf("loop %d: %w", cfg.ID, err)
	}
	l.parkFn = l.parkCheck
	l.now = time.Now().UnixNano()
	l.wheel.cur = l.now / Tick
	return l, nil
}

// Add registers connection fd (non-blocking) with h, edge-triggered for
// both directions, once.
func (l *Loop) Add(fd int, h Handler) error {
	return l.add(fd, h, connEvents)
}

// AddListener registers listening socket fd with h, level-triggered: h
// accepts until EAGAIN, and a full descriptor table leaves the event
// pending for the next wake-up. With exclusive, only one of the loops that
// share the socket is woken per connection (EPOLLEXCLUSIVE).
func (l *Loop) AddListener(fd int, h Handler, exclusive bool) error {
	ev := uint32(unix.EPOLLIN)
	if exclusive {
		ev |= unix.EPOLLEXCLUSIVE
	}
	return l.add(fd, h, ev)
}

func (l *Loop) add(fd int, h Handler, ev uint32) error {
	if fd >= len(l.fds) {
		fds := make([]entry, max(2*len(l.fds), fd+1, 1024))
		copy(fds, l.fds)
		l.fds = fds
	}
	l.gen = (l.gen + 1) & 0x7fffffff
	e := unix.EpollEvent{Events: ev, Fd: int32(fd), Pad: int32(l.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		return fmt.Errorf("epoll_ctl add %d: %w", fd, err)
	}
	l.fds[fd] = entry{h, l.gen}
	return nil
}

// CloseFD forgets fd and closes it (which takes it out of the epoll set).
func (l *Loop) CloseFD(fd int) {
	l.fds[fd] = entry{}
	closeFD(fd)
}

// Detach takes fd out of the loop without closing it, for a connection
// handed to a goroutine.
func (l *Loop) Detach(fd int) error {
	l.fds[fd] = entry{}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("epoll_ctl del %d: %w", fd, err)
	}
	return nil
}

// Now is the loop's clock, in nanoseconds since the Unix epoch, read once
// per wake-up.
func (l *Loop) Now() int64 { return l.now }

// SetTimer arms t to tell e at when (nanoseconds on the loop's clock).
// For a timer kept in what it times, which the wheel then keeps reachable
// up to 5.12 s after it stops; what ends before its deadlines (a
// connection, a stream) arms the loop's own instead (Arm).
func (l *Loop) SetTimer(t *Timer, e Expirer, when int64) { l.wheel.set(t, e, when) }

// Arm arms the timer at *t to tell e at when, taking one of the loop's
// spare timers into *t first when it holds none; Disarm gives it back.
// Timers are the loop's, not kept in the struct they time, because a
// stopped timer stays in the wheel's slot until that slot comes round, up
// to the wheel's span (5.12 s): one kept in a connection's struct would
// keep the connection, and all it points to, from the garbage collector
// that long after its close (at tens of thousands of HTTP/2 streams a
// second, tens of megabytes).
func (l *Loop) Arm(t **Timer, e Expirer, when int64) {
	if *t == nil {
		if n := len(l.timers); n > 0 {
			*t = l.timers[n-1]
			l.timers[n-1] = nil
			l.timers = l.timers[:n-1]
		} else {
			*t = &Timer{}
		}
	}
	l.wheel.set(*t, e, when)
}

// Disarm stops the timer at *t, if any, gives it back to the loop and
// clears *t: the wheel may still hold the timer, but no longer what it
// told. Armed again while still in a slot, it moves as any timer whose
// deadline moved.
func (l *Loop) Disarm(t **Timer) {
	tm := *t
	if tm == nil {
		return
	}
	*t = nil
	tm.when, tm.e = 0, nil
	if len(l.timers) < maxSpareTimers {
		l.timers = append(l.timers, tm)
	}
}

// maxSpareTimers bounds a loop's spare timers (32 bytes each).
const maxSpareTimers = 1 << 14

// Defer runs f.Flush at the end of this wake-up, after every event of the
// batch: a connection that several events give output to writes it once.
// The caller keeps f from being deferred twice in one wake-up.
func (l *Loop) Defer(f Flusher) { l.defers = append(l.defers, f) }

// posted is work for the loop from another goroutine, and the handler it
// is for (nil: none), which a panic in it ends.
type posted struct {
	h  Handler
	fn func()
}

// Post runs fn on the loop, soon; it may be called from any goroutine.
// False when the loop is closed (fn will not run).
func (l *Loop) Post(fn func()) bool { return l.PostTo(nil, fn) }

// PostTo is Post for work on h's behalf: a panic in fn ends h (Fail), as
// one in its Event does.
func (l *Loop) PostTo(h Handler, fn func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, posted{h, fn})
	first := len(l.inbox) == 1
	l.mu.Unlock()
	if first {
		l.wake()
	}
	return true
}

func (l *Loop) wake() {
	one := [8]byte{1}
	unix.Write(l.evfd, one[:])
}

// inboxHandler runs what goroutines posted.
type inboxHandler struct{ l *Loop }

func (h inboxHandler) Event(Events) {
	l := h.l
	var b [8]byte
	Read(l.evfd, b[:])
	l.mu.Lock()
	fns := l.inbox
	l.inbox = l.spare[:0]
	l.mu.Unlock()
	for i, p := range fns {
		fns[i] = posted{}
		l.safely(p.h, p.fn)
	}
	l.spare = fns[:0]
}

func (inboxHandler) Fail() {}

// Run serves the loop's events on the calling goroutine until ctx ends.
// It returns nil then, or the error that stopped epoll_wait.
func (l *Loop) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		l.stopping.Store(true)
		l.wake()
	})
	defer stop()
	busy := false
	defer func() {
		if busy {
			l.cfg.held.Add(-1)
		}
	}()
	var yielded int64
	quiet := 0 // raw waits in a row that found nothing
	for !l.stopping.Load() {
		msec := l.wheel.timeout(l.now)
		var n int
		var err error
		if busy {
			if msec < 0 || msec > rawSpin {
				msec = rawSpin
			}
			n, err = rawEpollWait(l.epfd, l.events, msec)
		} else if msec != 0 && l.cfg.Loops >= l.gomaxprocs() {
			n, err = l.parkWait(msec)
		} else {
			n, err = unix.EpollWait(l.epfd, l.events, msec)
		}
		switch {
		case n > 0:
			quiet = 0
		case busy:
			quiet++
		}
		if b := l.cfg.RawWait && (n > 0 || busy && quiet < rawQuiet); b != busy {
			busy = b
			if b {
				l.cfg.held.Add(1)
			} else {
				l.cfg.held.Add(-1)
			}
		}
		if err != nil {
			if err != unix.EINTR {
				return fmt.Errorf("loop %d: epoll_wait: %w", l.cfg.ID, err)
			}
			n = 0
		}
		l.now = time.Now().UnixNano()
		l.dispatch(l.events[:n])
		if l.wheel.n > 0 && l.now/Tick > l.wheel.cur {
			l.wheel.advance(l.now, l.fire)
		}
		l.flush()
		if busy && l.now-yielded >= yieldEvery && l.mustYield() {
			yielded = l.now
			l.yields++
			runtime.Gosched()
		}
	}
	return nil
}

// closeEpoll closes the epoll descriptors.
func (l *Loop) closeEpoll() {
	if l.park != nil {
		l.park.Close()
	}
	unix.Close(l.epfd)
}

// dispatch hands each event to the handler registered for it.
func (l *Loop) dispatch(evs []unix.EpollEvent) {
	for i := range evs {
		ev := &evs[i]
		fd := int(ev.Fd)
		if fd >= len(l.fds) {
			continue
		}
		e := l.fds[fd]
		if e.h == nil || e.gen != uint32(ev.Pad) {
			continue // closed in this batch (and maybe reused since)
		}
		l.event(e.h, Events(ev.Events))
	}
}

func (l *Loop) event(h Handler, ev Events) {
	defer l.recovered(h)
	h.Event(ev)
}

func (l *Loop) fire(t *Timer) {
	var h Handler
	if hh, ok := t.e.(Handler); ok {
		h = hh
	}
	defer l.recovered(h)
	t.e.Expire(l.now)
}

func (l *Loop) flush() {
	for i := 0; i < len(l.defers); i++ { // a Flush may defer more
		f := l.defers[i]
		l.defers[i] = nil
		var h Handler
		if hh, ok := f.(Handler); ok {
			h = hh
		}
		l.safely(h, f.Flush)
	}
	l.defers = l.defers[:0]
}

func (l *Loop) safely(h Handler, fn func()) {
	defer l.recovered(h)
	fn()
}

// recovered logs a panic on the loop and ends the handler it came from.
func (l *Loop) recovered(h Handler) {
	v := recover()
	if v == nil {
		return
	}
	l.log.Error("loop: recovered a panic; the connection it came from is closed", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	if h == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			l.log.Error("loop: a handler's Fail panicked too", "panic", fmt.Sprint(v))
		}
	}()
	h.Fail()
}

// Close closes the loop after Run has returned: every descriptor still
// registered, the eventfd and the epoll instance. Posts after it fail.
func (l *Loop) Close() {
	l.mu.Lock()
	l.closed = true
	l.inbox = nil
	l.mu.Unlock()
	for fd, e := range l.fds {
		if e.h != nil {
			l.fds[fd] = entry{}
			if fd != l.evfd {
				closeFD(fd)
			}
		}
	}
	unix.Close(l.evfd)
	l.closeEpoll()
}
