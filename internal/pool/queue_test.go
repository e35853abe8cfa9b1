package pool

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestLimitQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
		b := NewBackend(u.String(), u, 1)
		l := &Limit{PerBackend: 2, MaxQueue: 2, Timeout: 10 * time.Second}
		if !l.TryAcquire(b) || !l.TryAcquire(b) {
			t.Fatal("first two slots refused")
		}
		if l.TryAcquire(b) {
			t.Fatal("third slot granted over PerBackend 2")
		}
		// Two wait; a third finds the queue full.
		order := make(chan int, 2)
		for i := range 2 {
			go func() {
				if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false, nil); err != nil {
					t.Errorf("waiter %d: %v", i, err)
				}
				order <- i
			}()
			synctest.Wait() // queue in a known order
		}
		if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false, nil); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("third waiter: err = %v, want ErrQueueFull", err)
		}
		for want := range 2 {
			l.Release(b)
			if got := <-order; got != want {
				t.Errorf("release %d woke waiter %d, want %d (first in, first out)", want, got, want)
			}
		}
		if got := l.Queued(); got != 0 {
			t.Errorf("queued = %d, want 0", got)
		}
		// Nobody releases: the wait ends at the queue timeout.
		start := time.Now()
		if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false, nil); !errors.Is(err, ErrQueueTimeout) {
			t.Fatalf("err = %v, want ErrQueueTimeout", err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("waited %v on fake time, want 10s", d)
		}
	})
}

// full returns a Limit of one slot per backend and a backend whose slot is
// taken, so that every request for it queues.
func full(t *testing.T, maxQueue int) (*Limit, *Backend) {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	b := NewBackend(u.String(), u, 1)
	l := &Limit{PerBackend: 1, MaxQueue: maxQueue, Timeout: 10 * time.Second}
	if !l.TryAcquire(b) {
		t.Fatal("the one slot refused")
	}
	return l, b
}

// wantQueued fails unless n requests are queued.
func wantQueued(t *testing.T, l *Limit, n int64) {
	t.Helper()
	if got := l.Queued(); got != n {
		t.Errorf("queued = %d, want %d", got, n)
	}
}

// TestLimitQueueMixed: requests blocked in Wait and requests that wait for
// a callback (Enqueue) share one queue and one first-in-first-out order; a
// woken request queued again (again) goes to the front, even past MaxQueue,
// while a newcomer beyond MaxQueue is refused.
func TestLimitQueueMixed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, b := full(t, 4)
		order := make(chan int, 8)
		wait := func(i int, again bool) {
			go func() {
				if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), again, nil); err != nil {
					t.Errorf("waiter %d: %v", i, err)
				}
				order <- i
			}()
			synctest.Wait() // queued in a known order
		}
		var ws [5]Waiter
		enqueue := func(i int, again bool) error {
			return l.Enqueue(&ws[i], again, func() { order <- i }, nil)
		}
		// 0 and 2 block in Wait, 1 and 3 wait for wake.
		wait(0, false)
		if err := enqueue(1, false); err != nil {
			t.Fatal(err)
		}
		wait(2, false)
		if err := enqueue(3, false); err != nil {
			t.Fatal(err)
		}
		wantQueued(t, l, 4)
		if err := enqueue(4, false); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("fifth waiter: err = %v, want ErrQueueFull", err)
		}
		if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false, nil); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("fifth waiter in Wait: err = %v, want ErrQueueFull", err)
		}
		wantQueued(t, l, 4)

		// release frees the slot that the last one woken took, waking the
		// next in line.
		release := func() int {
			l.TryAcquire(b)
			l.Release(b)
			synctest.Wait()
			return <-order
		}
		if got := release(); got != 0 {
			t.Fatalf("first release woke %d, want 0", got)
		}
		if err := enqueue(4, false); err != nil { // 3 queued of 4: room
			t.Fatal(err)
		}
		// 1 is woken and loses the slot: it waits again, at the front, and
		// so does 0 after it, past MaxQueue.
		if got := release(); got != 1 {
			t.Fatalf("second release woke %d, want 1", got)
		}
		if err := enqueue(1, true); err != nil {
			t.Fatalf("again: %v", err)
		}
		wait(0, true)
		wantQueued(t, l, 5)
		var late Waiter
		if err := l.Enqueue(&late, false, nil, nil); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("newcomer with 5 queued of 4: err = %v, want ErrQueueFull", err)
		}
		for i, want := range []int{0, 1, 2, 3, 4} {
			if got := release(); got != want {
				t.Errorf("release %d woke %d, want %d (first in, first out; again at the front)", i, got, want)
			}
			wantQueued(t, l, int64(4-i))
		}
		select {
		case got := <-order:
			t.Errorf("%d woken with nobody queued", got)
		default:
		}
	})
}

// TestLimitCancel: a request that leaves the queue before its wake-up is
// not woken and the next one is; one woken already when it gives up passes
// the wake-up on, so the slot it announced is not lost.
func TestLimitCancel(t *testing.T) {
	l, b := full(t, 4)
	var woke [3]int
	var ws [3]Waiter
	for i := range ws {
		if err := l.Enqueue(&ws[i], false, func() { woke[i]++ }, nil); err != nil {
			t.Fatal(err)
		}
	}
	wantQueued(t, l, 3)
	if !l.Cancel(&ws[1]) {
		t.Fatal("Cancel of a queued waiter reports it woken")
	}
	wantQueued(t, l, 2)

	l.Release(b) // wakes 0
	if woke != [3]int{1, 0, 0} {
		t.Fatalf("woken %v after one release, want only 0", woke)
	}
	wantQueued(t, l, 1)
	// 0 gives up (its timer fired) before acting on the wake-up.
	if l.Cancel(&ws[0]) {
		t.Fatal("Cancel of a woken waiter reports it still queued")
	}
	if woke != [3]int{1, 0, 1} {
		t.Fatalf("woken %v after 0 gave up, want 0 and 2 once each, never 1", woke)
	}
	wantQueued(t, l, 0)
	if !l.TryAcquire(b) {
		t.Fatal("the slot passed on to 2 is gone")
	}
	// A Waiter may queue again after Cancel.
	if err := l.Enqueue(&ws[1], false, func() { woke[1]++ }, nil); err != nil {
		t.Fatal(err)
	}
	l.Release(b)
	if woke != [3]int{1, 1, 1} {
		t.Fatalf("woken %v, want each once", woke)
	}
	wantQueued(t, l, 0)
}

// TestLimitWakeCallsLimit: wake runs with no lock of the Limit held, so it
// may take the slot, release it (waking the next), queue itself or others
// and cancel, all from within the Release that woke it.
func TestLimitWakeCallsLimit(t *testing.T) {
	l, b := full(t, 4)
	var order []string
	var a, c, d, e Waiter
	done := make(chan struct{})
	wakeE := func() { order = append(order, "e"); close(done) }
	wakeD := func() {
		order = append(order, "d")
		// Gives up at once, as when its client went away: e is woken.
		if l.Cancel(&d) {
			t.Error("Cancel inside wake reports d still queued")
		}
	}
	wakeC := func() {
		order = append(order, "c")
		if !l.TryAcquire(b) {
			t.Error("c: the released slot is gone")
		}
		if err := l.Enqueue(&e, false, wakeE, nil); err != nil {
			t.Error(err)
		}
		l.Release(b) // wakes d
	}
	wakeA := func() {
		order = append(order, "a")
		if !l.TryAcquire(b) {
			t.Error("a: the released slot is gone")
		}
		l.Release(b) // wakes c
	}
	woken := func() { order = append(order, "a") }
	for _, w := range []struct {
		w    *Waiter
		wake func()
	}{{&a, woken}, {&c, wakeC}, {&d, wakeD}} {
		if err := l.Enqueue(w.w, false, w.wake, nil); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		l.Release(b) // wakes a
		// A quicker request takes the slot before a does, so a waits
		// again, at the front, past c.
		l.TryAcquire(b)
		if l.TryAcquire(b) {
			t.Error("a took a slot over PerBackend 1")
		}
		if err := l.Enqueue(&a, true, wakeA, nil); err != nil {
			t.Error(err)
		}
		l.Release(b) // a, then c, d and e from within the callbacks
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up within 5s: a wake callback that calls the Limit deadlocked")
	}
	if got := strings.Join(order, " "); got != "a a c d e" {
		t.Errorf("woken in order %q, want \"a a c d e\"", got)
	}
	wantQueued(t, l, 0)
	if n := b.InFlight.Load(); n != 0 {
		t.Errorf("in flight = %d, want 0", n)
	}
}

// TestLimitQueueConcurrent: requests in Wait and requests woken by a
// callback, some giving up at once, take turns on two slots from many
// goroutines (run it with -race): never more than two in flight, every
// request gets its slot in the end, and the queue ends empty. No wait runs
// out: a slot released between a request finding none and its queueing is
// found by free (were both slots left idle so, every goroutine of the
// bubble would stop and the fake clock run to the deadline).
func TestLimitQueueConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
		b := NewBackend(u.String(), u, 1)
		l := &Limit{PerBackend: 2, MaxQueue: 16, Timeout: time.Second}
		free := func() bool { return l.Free(b) }
		const workers, rounds = 8, 200
		var held atomic.Int64
		use := func() {
			if n := held.Add(1); n > 2 {
				t.Errorf("%d requests hold a slot, want at most 2", n)
			}
			held.Add(-1)
			l.Release(b)
		}
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() {
				var w Waiter
				ch := make(chan struct{}, 1)
				wake := func() { ch <- struct{}{} }
				for r := range rounds {
					again := false
					quit := r%3 == 0 // gives up its first wait at once
					for !l.TryAcquire(b) {
						if i%2 == 0 {
							// Blocked in Wait.
							if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), again, free); err != nil {
								t.Errorf("Wait: %v, with a slot left idle", err)
								return
							}
							again = true
							continue
						}
						if err := l.Enqueue(&w, again, wake, free); err != nil {
							t.Errorf("Enqueue: %v", err)
							return
						}
						if quit {
							// Leaves the queue; a wake-up that came
							// meanwhile has passed on, so drop our own.
							quit = false
							if !l.Cancel(&w) {
								<-ch
							}
							again = false
							continue
						}
						<-ch
						again = true
					}
					use()
				}
			})
		}
		wg.Wait()
		wantQueued(t, l, 0)
		if n := b.InFlight.Load(); n != 0 {
			t.Errorf("in flight = %d, want 0", n)
		}
	})
}

// TestLimitQueueFreed: a slot released after a request found none free but
// before it queued wakes nobody, as nobody is queued yet. Once queued, the
// request asks free: a slot being free, the first in line is woken, as the
// release would have woken it: the request itself when it is first (at
// once, from within Enqueue, and Wait returns), else the one queued before
// it. A spare wake-up (two requests find the one slot freed) costs the
// loser a try and a place at the front.
func TestLimitQueueFreed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		l, b := full(t, 4)
		free := func() bool { return l.Free(b) }

		// Blocked in Wait.
		if l.TryAcquire(b) {
			t.Fatal("a slot over PerBackend 1")
		}
		l.Release(b) // nobody queued: nobody woken
		start := time.Now()
		if err := l.Wait(ctx, start.Add(l.Timeout), false, free); err != nil {
			t.Fatalf("Wait with the slot freed as it queued: %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("waited %v with the slot free, want 0", d)
		}
		wantQueued(t, l, 0)
		if !l.TryAcquire(b) {
			t.Fatal("the slot that woke the waiter is gone")
		}
		// Without free (nil), the same wait runs to the deadline.
		l.Release(b)
		if err := l.Wait(ctx, time.Now().Add(l.Timeout), false, nil); !errors.Is(err, ErrQueueTimeout) {
			t.Fatalf("Wait without free: %v, want ErrQueueTimeout", err)
		}
		if !l.TryAcquire(b) {
			t.Fatal("the slot is gone")
		}

		// Waiting for a callback: the wake-up comes from within Enqueue.
		var ws [3]Waiter
		var woke []int
		enqueue := func(i int, again bool, free func() bool) {
			t.Helper()
			if err := l.Enqueue(&ws[i], again, func() { woke = append(woke, i) }, free); err != nil {
				t.Fatal(err)
			}
		}
		l.Release(b)
		enqueue(0, false, free)
		if !slices.Equal(woke, []int{0}) {
			t.Fatalf("woken %v, want 0 from within its Enqueue", woke)
		}
		wantQueued(t, l, 0)
		if !l.TryAcquire(b) {
			t.Fatal("the slot is gone")
		}

		// 1 queued without asking (nil) after the slot was freed: the next
		// to queue, 2, wakes 1, the first in line, and waits itself.
		woke = nil
		l.Release(b)
		enqueue(1, false, nil)
		enqueue(2, false, free)
		if !slices.Equal(woke, []int{1}) {
			t.Fatalf("woken %v, want 1 (first in line), not 2", woke)
		}
		wantQueued(t, l, 1)
		if !l.TryAcquire(b) {
			t.Fatal("the slot is gone")
		}
		l.Release(b) // 1 is done: wakes 2
		if !slices.Equal(woke, []int{1, 2}) {
			t.Fatalf("woken %v, want 1 then 2", woke)
		}
		wantQueued(t, l, 0)
		if !l.TryAcquire(b) {
			t.Fatal("the slot is gone")
		}

		// The slot freed with nobody queued, two requests queue: both are
		// woken (the second queues before the first took the slot); the one
		// that loses waits again at the front, finds no slot and stays
		// queued.
		l.Release(b) // 2 is done
		woke = nil
		enqueue(0, false, free)
		enqueue(1, false, free)
		if !slices.Equal(woke, []int{0, 1}) {
			t.Fatalf("woken %v, want 0 and 1", woke)
		}
		if !l.TryAcquire(b) || l.TryAcquire(b) {
			t.Fatal("not exactly one slot for two wake-ups")
		}
		enqueue(1, true, free)
		if !slices.Equal(woke, []int{0, 1}) {
			t.Fatalf("woken %v, want 1 queued again and not woken", woke)
		}
		wantQueued(t, l, 1)
		l.Release(b)
		if !slices.Equal(woke, []int{0, 1, 1}) {
			t.Fatalf("woken %v, want 1 woken by the release", woke)
		}
		wantQueued(t, l, 0)
		if n := b.InFlight.Load(); n != 0 {
			t.Errorf("in flight = %d, want 0", n)
		}
	})
}
