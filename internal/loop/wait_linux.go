package loop

import (
	"errors"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// How a loop waits for events when it is busy (raw waits, which keep its
// P) and when it is quiet (parked on Go's poller), and when a busy loop
// yields its P: see Config.RawWait and Loop.Run.

// parkWait waits up to msec milliseconds (-1: without end) for events,
// its goroutine parked on Go's poller rather than blocked in epoll_wait,
// for a quiet loop when the loops are as many as the Ps. A goroutine
// blocked in a system call holds its P; sysmon leaves it so while another
// P is idle, but when every P is so held it retakes one after 20 µs and
// then polls every 20 µs for a while, which cost two loops on two Ps 7 %
// of their CPU at a light, bursty load. Parked, the goroutine holds no P
// and sysmon sleeps. With fewer loops than Ps the plain blocking wait is
// cheaper: the loop's thread wakes straight from epoll_wait, where a
// parked goroutine is woken through another thread (docs/benchmarks.md,
// "The quiet wait").
//
// epfd is not in Go's poller itself: every first event of a busy loop's
// wake-up would then wake the poller's thread too. It is in parkfd only
// for the park.
func (l *Loop) parkWait(msec int) (n int, err error) {
	if n, err = rawEpollWait(l.epfd, l.events, 0); n > 0 || err != nil {
		return n, err
	}
	until := int64(0)
	if msec > 0 {
		until = l.now + int64(msec)*int64(time.Millisecond)
	}
	if until != l.parkUntil {
		var d time.Time
		if until != 0 {
			d = time.Unix(0, until)
		}
		if err := l.park.SetReadDeadline(d); err != nil {
			return 0, err
		}
		l.parkUntil = until
	}
	l.parks++
	l.armed, l.pn, l.perr = false, 0, nil
	rerr := l.parkc.Read(l.parkFn)
	n, err = l.pn, l.perr
	l.perr = nil
	if l.armed {
		// Out again, off parkfd's ready list too: while the loop runs,
		// its events must not wake the poller's thread.
		if derr := unix.EpollCtl(l.parkfd, unix.EPOLL_CTL_DEL, l.epfd, nil); derr != nil && err == nil && rerr == nil {
			err = derr
		}
	}
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		l.parkUntil = -1 // set it again, even to the same time
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, err
}

// parkCheck is parkWait's test of readiness, called by the poller: the
// first call adds epfd to parkfd, the others (after a wake-up) take its
// events.
func (l *Loop) parkCheck(uintptr) bool {
	if l.armed {
		l.pn, l.perr = rawEpollWait(l.epfd, l.events, 0)
		return l.pn > 0 || l.perr != nil
	}
	// Adding looks at epfd's readiness: events that came since the wait
	// before the park make parkfd readable at once.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.epfd)}
	if l.perr = unix.EpollCtl(l.parkfd, unix.EPOLL_CTL_ADD, l.epfd, &ev); l.perr != nil {
		return true
	}
	l.armed = true
	return false
}

// mustYield reports whether a busy loop yields its P (Config.RawWait):
// unless every P has a loop and fewer loops are busy than there are Ps.
func (l *Loop) mustYield() bool {
	procs := l.gomaxprocs()
	return l.cfg.Loops < procs || int(l.cfg.held.Load()) >= procs
}

// gomaxprocs is GOMAXPROCS, read at most once a second (it takes the
// scheduler's lock).
func (l *Loop) gomaxprocs() int {
	if l.procs == 0 || l.now-l.procsAt >= int64(time.Second) {
		l.procs, l.procsAt = runtime.GOMAXPROCS(0), l.now
	}
	return l.procs
}

// rawSpin bounds a raw wait (Config.RawWait), in milliseconds; a busy loop
// yields its P at most every yieldEvery nanoseconds, and stops being busy
// (its next wait goes through the scheduler, and parks) once rawQuiet raw
// waits in a row found nothing.
//
// rawQuiet is 5, not 1: waking a parked loop goes through Go's poller and
// another thread, and at a moderate load (HTTPS keep-alive, 1,500 requests
// a second per loop, gaps of a millisecond common) a loop that parked at
// its first empty millisecond took 1.3 ms at the median and 3.7 at p90 to
// answer, against 0.69 and 1.65 for HAProxy's one thread. Staying busy for
// five empty milliseconds gave 0.69 and 1.65 at the same CPU per request
// (docs/benchmarks.md, "Latency at a fixed rate"). While busy the loop
// still yields its P every millisecond when another goroutine may need it
// (mustYield), so it holds no P longer than before.
const (
	rawSpin    = 1
	rawQuiet   = 5
	yieldEvery = 1_000_000
)
