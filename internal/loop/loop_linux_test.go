package loop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// echoServer is a listener and its connections on one loop: each
// connection writes back what it reads, keeping what the socket would not
// take until it is writable again.
type echoServer struct {
	l        *Loop
	lfd      int
	bufs     Bufs
	accepted int
	open     map[*echoConn]bool
	panicOn  string // a connection that reads this panics
}

func (s *echoServer) Event(Events) {
	for {
		fd, _, err := Accept(s.lfd)
		if err != nil {
			return
		}
		c := &echoConn{s: s, fd: fd}
		if err := s.l.Add(fd, c); err != nil {
			closeFD(fd)
			continue
		}
		s.accepted++
		s.open[c] = true
	}
}

func (s *echoServer) Fail() {}

type echoConn struct {
	s      *echoServer
	fd     int
	ready  Ready
	out    []byte
	closed bool
}

func (c *echoConn) Event(ev Events) {
	c.ready.Note(ev)
	for !c.closed {
		if len(c.out) > 0 {
			if !c.ready.Wr {
				return
			}
			n, e := Write(c.fd, c.out)
			if e == unix.EAGAIN {
				c.ready.Wr = false
				return
			}
			if e != 0 {
				c.close()
				return
			}
			c.out = c.out[n:]
			continue
		}
		if !c.ready.Rd {
			return
		}
		buf := c.s.bufs.Get()
		n, e := Read(c.fd, buf)
		if e == unix.EAGAIN {
			c.ready.Rd = false
			c.s.bufs.Put(buf)
			return
		}
		if e != 0 || n == 0 {
			c.s.bufs.Put(buf)
			c.close()
			return
		}
		if c.s.panicOn != "" && bytes.Contains(buf[:n], []byte(c.s.panicOn)) {
			panic("echo: told to panic")
		}
		c.out = append(c.out[:0:0], buf[:n]...)
		c.s.bufs.Put(buf)
	}
}

func (c *echoConn) Fail() { c.close() }

func (c *echoConn) close() {
	if !c.closed {
		c.closed = true
		delete(c.s.open, c)
		c.s.l.CloseFD(c.fd)
	}
}

// waits are the ways a loop waits for events: blocked in epoll_wait
// through the scheduler, raw while busy, and parked on Go's poller (as
// many loops as Ps).
var waits = []waitCase{
	{"blocking", Config{}},
	{"raw", Config{RawWait: true}},
	{"parked", Config{RawWait: true, Loops: 1 << 20}},
}

type waitCase struct {
	name string
	cfg  Config
}

// checkParked fails the test if loop l, configured as w, never parked,
// or parked when it should not have.
func checkParked(t *testing.T, l *Loop, w waitCase) {
	t.Helper()
	var parks int
	onLoop(t, l, func() { parks = l.parks })
	// A loop parks once it was quiet for rawQuiet raw waits: give it the
	// time, the test's load having kept it busy.
	for end := time.Now().Add(2 * time.Second); w.cfg.Loops > 0 && parks == 0 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		onLoop(t, l, func() { parks = l.parks })
	}
	if parked := w.cfg.Loops > 0; parked != (parks > 0) {
		t.Errorf("the loop parked %d times, want parks %v", parks, parked)
	}
}

// startEcho runs an echo server on a new loop until the test ends.
func startEcho(t *testing.T, cfg Config) (*echoServer, string) {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lfd, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), false)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{l: l, lfd: lfd, bufs: Bufs{Size: 4096}, open: map[*echoConn]bool{}}
	if err := l.AddListener(lfd, s, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of its context ending")
		}
		l.Close()
	})
	return s, addrPort(sa).String()
}

// onLoop runs fn on s's loop and waits for it.
func onLoop(t *testing.T, l *Loop, fn func()) {
	t.Helper()
	done := make(chan struct{})
	if !l.Post(func() { fn(); close(done) }) {
		t.Fatal("Post refused")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a posted function did not run within 5 s")
	}
}

// TestEchoManyClients: 32 clients at once, each sending 100 messages of up
// to 64 KiB and reading each back whole, over edge-triggered sockets that
// fill (the echo keeps what the socket will not take and waits for Out).
func TestEchoManyClients(t *testing.T) {
	for _, w := range waits {
		t.Run(w.name, func(t *testing.T) {
			s, addr := startEcho(t, w.cfg)
			defer checkParked(t, s.l, w)
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for i := 0; i < 32; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", addr)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(20 * time.Second))
					for j := 0; j < 100; j++ {
						msg := bytes.Repeat([]byte{byte('a' + (i+j)%26)}, 1+(i*j*997)%(64<<10))
						go c.Write(msg)
						got := make([]byte, len(msg))
						if _, err := io.ReadFull(c, got); err != nil {
							errs <- fmt.Errorf("client %d message %d: %w", i, j, err)
							return
						}
						if !bytes.Equal(got, msg) {
							errs <- fmt.Errorf("client %d message %d: echo differs", i, j)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				var open, accepted int
				onLoop(t, s.l, func() { open, accepted = len(s.open), s.accepted })
				if accepted != 32 {
					t.Fatalf("accepted %d connections, want 32", accepted)
				}
				if open == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d connections still open 5 s after their clients closed", open)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestPanicEndsOnlyItsConnection: a connection whose handler panics is
// failed (its Fail closes it: the client sees EOF), the panic is logged, and
// the loop goes on serving the others.
func TestPanicEndsOnlyItsConnection(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	s, addr := startEcho(t, Config{Log: log})
	onLoop(t, s.l, func() { s.panicOn = "PANIC" })
	good, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	bad, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.SetDeadline(time.Now().Add(5 * time.Second))
	bad.Write([]byte("PANIC"))
	if n, err := bad.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("the panicking connection read %d, %v; want EOF", n, err)
	}
	good.SetDeadline(time.Now().Add(5 * time.Second))
	good.Write([]byte("still here"))
	got := make([]byte, 10)
	if _, err := io.ReadFull(good, got); err != nil || string(got) != "still here" {
		t.Fatalf("the other connection read %q, %v", got, err)
	}
	var open int
	onLoop(t, s.l, func() { open = len(s.open) })
	if open != 1 {
		t.Fatalf("%d connections open, want 1 (the failed one closed, the other serving)", open)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, "echo: told to panic") || !strings.Contains(out, "recovered a panic") {
		t.Fatalf("the panic was not logged: %q", out)
	}
	// A panic in a posted function is logged and the loop goes on.
	done := make(chan struct{})
	s.l.Post(func() { panic("posted panic") })
	s.l.Post(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop stopped after a posted function panicked")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TestPostFromManyGoroutines: every posted function runs, on the loop
// (the counter has no lock: the race detector sees any other goroutine).
func TestPostFromManyGoroutines(t *testing.T) {
	for _, w := range waits {
		t.Run(w.name, func(t *testing.T) { testPostFromManyGoroutines(t, w.cfg) })
	}
}

func testPostFromManyGoroutines(t *testing.T, cfg Config) {
	s, _ := startEcho(t, cfg)
	n := 0
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				s.l.Post(func() { n++ })
				if i%100 == 0 {
					time.Sleep(time.Millisecond) // let the loop go quiet
				}
			}
		}()
	}
	wg.Wait()
	var got int
	onLoop(t, s.l, func() { got = n })
	if got != 16000 {
		t.Fatalf("%d posted functions ran, want 16000", got)
	}
}

// countingTimer counts its expiries and re-arms while told to.
type countingTimer struct {
	l     *Loop
	t     Timer
	at    []int64
	when  []int64
	every int64
	left  int
	done  chan struct{}
}

func (c *countingTimer) Expire(now int64) {
	c.at = append(c.at, now)
	if c.left--; c.left > 0 {
		w := now + c.every
		c.when = append(c.when, w)
		c.l.SetTimer(&c.t, c, w)
		return
	}
	close(c.done)
}

// TestTimersOnALoop: a timer re-armed from its own expiry fires ten
// times, each at or after its deadline, while the loop otherwise sleeps.
func TestTimersOnALoop(t *testing.T) {
	for _, w := range waits {
		t.Run(w.name, func(t *testing.T) {
			s, _ := startEcho(t, w.cfg)
			testTimers(t, s.l)
			checkParked(t, s.l, w)
		})
	}
}

func testTimers(t *testing.T, l *Loop) {
	s := struct{ l *Loop }{l}
	c := &countingTimer{l: s.l, every: int64(30 * time.Millisecond), left: 10, done: make(chan struct{})}
	s.l.Post(func() {
		w := s.l.Now() + c.every
		c.when = append(c.when, w)
		s.l.SetTimer(&c.t, c, w)
	})
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("ten 30 ms timers did not fire within 10 s")
	}
	onLoop(t, s.l, func() {
		for i, at := range c.at {
			if at < c.when[i] {
				t.Errorf("expiry %d at %d, before its deadline %d", i, at, c.when[i])
			}
		}
	})
}

// stale answers any event by recording it.
type stale struct{ got int }

func (s *stale) Event(Events) { s.got++ }
func (s *stale) Fail()        {}

// TestStaleEventNotDelivered: an event read in the same batch as the close
// of its descriptor never reaches the handler that registered the reused
// number since (the generation in the event no longer matches).
func TestStaleEventNotDelivered(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	old := &stale{}
	if err := l.Add(fds[0], old); err != nil {
		t.Fatal(err)
	}
	unix.Write(fds[1], []byte("x"))
	n, err := unix.EpollWait(l.epfd, l.events, 1000)
	if err != nil || n != 1 {
		t.Fatalf("epoll_wait: %d, %v", n, err)
	}
	batch := append([]unix.EpollEvent(nil), l.events[:n]...)
	// In the same batch: the descriptor is closed and its number reused.
	l.CloseFD(fds[0])
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	if pair[0] != fds[0] {
		t.Skipf("the descriptor number was not reused (%d, then %d)", fds[0], pair[0])
	}
	fresh := &stale{}
	if err := l.Add(pair[0], fresh); err != nil {
		t.Fatal(err)
	}
	l.dispatch(batch)
	if old.got != 0 || fresh.got != 0 {
		t.Fatalf("the stale event reached a handler (old %d, new %d)", old.got, fresh.got)
	}
	// The new registration's own events do arrive.
	unix.Write(pair[1], []byte("y"))
	if n, err = unix.EpollWait(l.epfd, l.events, 1000); err != nil || n != 1 {
		t.Fatalf("epoll_wait: %d, %v", n, err)
	}
	l.dispatch(l.events[:n])
	if fresh.got != 1 {
		t.Fatalf("the new registration got %d events, want 1", fresh.got)
	}
}

// TestGroupRunAndClose: a group's Run returns once its context ends, Close
// closes what was still registered (the client sees EOF), and Post fails
// afterwards.
func TestGroupRunAndClose(t *testing.T) {
	g, err := NewGroup(3, Config{RawWait: true})
	if err != nil {
		t.Fatal(err)
	}
	var peers []int
	for _, l := range g.Loops {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Add(fds[0], &stale{}); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, fds[1])
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	for _, l := range g.Loops {
		onLoop(t, l, func() {})
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Group.Run did not return within 5 s of its context ending")
	}
	g.Close()
	for i, p := range peers {
		unix.SetNonblock(p, false)
		if n, err := unix.Read(p, make([]byte, 1)); n != 0 || err != nil {
			t.Errorf("loop %d: its connection's peer read %d, %v after Close; want EOF", i, n, err)
		}
		unix.Close(p)
	}
	if g.Loops[0].Post(func() {}) {
		t.Fatal("Post succeeded on a closed loop")
	}
}

func TestDialAndSockError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	fd, _, err := Dial(ap, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	unix.Poll(pfd, 5000)
	if err := SockError(fd); err != nil {
		t.Fatalf("connect to a listener: %v", err)
	}
	ka, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	idle, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	intvl, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
	cnt, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
	if ka != 1 || idle != 30 || intvl != 15 || cnt != 9 {
		t.Errorf("keep-alive %d, idle %d s, interval %d s, count %d; want on, 30 s, 15 s, 9 (Go's dialer)", ka, idle, intvl, cnt)
	}
	closeFD(fd)
	ln.Close()
	fd, connected, err := Dial(ap, 0) // nobody listens now
	if err == nil {
		pfd[0].Fd = int32(fd)
		unix.Poll(pfd, 5000)
		err = SockError(fd)
		closeFD(fd)
	}
	if err == nil || connected {
		t.Fatal("connect to a closed port succeeded")
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
}

// parkProbe, woken by its socket, reports whether its loop's epfd was
// still in parkfd then: a loop that runs must leave it out, or each of its
// events would wake Go's poller as well.
type parkProbe struct {
	l   *Loop
	fd  int
	got chan error
}

func (p *parkProbe) Event(Events) {
	var b [16]byte
	if n, _ := unix.Read(p.fd, b[:]); n <= 0 {
		return
	}
	var ev unix.EpollEvent
	err := unix.EpollCtl(p.l.parkfd, unix.EPOLL_CTL_MOD, p.l.epfd, &ev)
	p.got <- err
}

func (p *parkProbe) Fail() {}

// TestParkLeavesNothingArmed: a parked loop woken by a socket has taken
// its epoll descriptor out of parkfd before it serves the event.
func TestParkLeavesNothingArmed(t *testing.T) {
	l, err := New(Config{RawWait: true, Loops: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[1])
	p := &parkProbe{l: l, fd: sp[0], got: make(chan error, 8)}
	if err := l.Add(sp[0], p); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		l.Close()
	}()
	for i := 0; i < 3; i++ {
		// Wait for the loop to park again (a raw wait first finds nothing).
		before := -1
		onLoop(t, l, func() { before = l.parks })
		deadline := time.Now().Add(5 * time.Second)
		for {
			var now int
			time.Sleep(5 * time.Millisecond)
			onLoop(t, l, func() { now = l.parks })
			if now > before+1 || time.Now().After(deadline) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		if _, err := unix.Write(sp[1], []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.got:
			if err != unix.ENOENT {
				t.Fatalf("wake-up %d: epfd in parkfd while the loop serves its events (EPOLL_CTL_MOD: %v, want ENOENT)", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("wake-up %d: the parked loop did not serve its socket within 5 s", i)
		}
	}
	var parks int
	onLoop(t, l, func() { parks = l.parks })
	if parks == 0 {
		t.Error("the loop never parked")
	}
}

// TestParkAllocatesNothing: a park allocates nothing: a loop parks up to
// once per quiet spell, which under light load is about once per request.
func TestParkAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	l, err := New(Config{Loops: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	allocs := testing.AllocsPerRun(20, func() {
		l.now = time.Now().UnixNano()
		if n, err := l.parkWait(1); n != 0 || err != nil {
			t.Fatalf("a park with nothing to wait for: %d events, %v", n, err)
		}
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per park, want none", allocs)
	}
	if l.parks == 0 {
		t.Error("parkWait never parked")
	}
}

// ticker keeps a loop busy: a timerfd that fires every 100 µs, well
// inside a raw wait's millisecond, drained at each event.
type ticker struct {
	fd    int
	ticks int
}

func (k *ticker) Event(Events) {
	var b [8]byte
	for {
		if _, err := unix.Read(k.fd, b[:]); err != nil {
			return
		}
		k.ticks++
	}
}

func (k *ticker) Fail() {}

// TestBusyLoopYieldsUnlessALoopsPIsFree: a busy loop yields its P every
// millisecond, except when every P has a loop and fewer loops are busy
// than there are Ps (another loop parked): that P is free for other
// goroutines, and a yield would only wake its thread to take the busy
// loop over. The group's count of busy loops falls back to 0 when they go
// quiet and when Run returns.
func TestBusyLoopYieldsUnlessALoopsPIsFree(t *testing.T) {
	cases := []struct {
		name         string
		procs, loops int
		busy         int // how many of the loops tick
		yield        bool
	}{
		{"one loop, one P", 1, 1, 1, true},
		{"one loop, two Ps", 2, 1, 1, true},
		{"two busy loops, two Ps", 2, 2, 2, true},
		{"one busy loop, the other parked, two Ps", 2, 2, 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.procs))
			g, err := NewGroup(c.loops, Config{RawWait: true})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close() // closes the timers' descriptors too
			ks := make([]*ticker, c.busy)
			for i := range ks {
				fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
				if err != nil {
					t.Fatal(err)
				}
				ks[i] = &ticker{fd: fd}
				if err := g.Loops[i].Add(fd, ks[i]); err != nil {
					unix.Close(fd)
					t.Fatal(err)
				}
				every := unix.NsecToTimespec(int64(100 * time.Microsecond))
				if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: every, Value: every}, nil); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- g.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				if n := g.Loops[0].cfg.held.Load(); n != 0 {
					t.Errorf("%d loops counted busy after Run returned, want 0", n)
				}
			}()
			time.Sleep(100 * time.Millisecond)
			yields := make([]int, c.busy)
			ticks := 0
			for i := range ks {
				onLoop(t, g.Loops[i], func() { yields[i], ticks = g.Loops[i].yields, ticks+ks[i].ticks })
			}
			if ticks == 0 {
				t.Fatal("no loop saw its timer fire")
			}
			// Quiet again: each loop's next raw wait finds nothing, and
			// the count goes back to none.
			for _, k := range ks {
				if err := unix.TimerfdSettime(k.fd, 0, &unix.ItimerSpec{}, nil); err != nil {
					t.Fatal(err)
				}
			}
			for deadline := time.Now().Add(5 * time.Second); g.Loops[0].cfg.held.Load() != 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d loops still counted busy 5 s after their timers stopped, want 0", g.Loops[0].cfg.held.Load())
				}
			}
			for i, y := range yields {
				if (y > 0) != c.yield {
					t.Errorf("busy loop %d yielded %d times in 100 ms (ticks %d), want yields %v", i, y, ks[i].ticks, c.yield)
				}
			}
		})
	}
}
