package loop

import (
	"math/rand/v2"
	"testing"
	"time"
)

// fired records when each timer fired, by the wheel's clock.
type fired struct {
	at    map[*Timer]int64
	order []*Timer
	t     *Timer
	w     *wheel
	// on expiry, re-arm this timer at now+again (0: not)
	again int64
}

func (f *fired) Expire(now int64) {
	f.at[f.t] = now
	f.order = append(f.order, f.t)
	if f.again > 0 {
		f.w.set(f.t, f, now+f.again)
	}
}

// TestWheelNeverEarlyNeverLost arms timers at random deadlines up to 20 s
// ahead (beyond the wheel's span), moves some later, some earlier and
// stops some, then advances the clock in random steps: every armed timer
// fires exactly once, never before its deadline and in the first step that
// passes the end of its deadline's tick; stopped ones never fire.
func TestWheelNeverEarlyNeverLost(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 20; round++ {
		start := int64(1_700_000_000_000_000_000) + r.Int64N(Tick)
		w := &wheel{cur: start / Tick}
		at := map[*Timer]int64{}
		want := map[*Timer]int64{}
		var fs []*fired
		for i := 0; i < 2000; i++ {
			tm := &Timer{}
			f := &fired{at: at, t: tm, w: w}
			fs = append(fs, f)
			when := start + 1 + r.Int64N(20_000_000_000)
			w.set(tm, f, when)
			switch r.IntN(4) {
			case 0: // later
				when += r.Int64N(3_000_000_000)
				w.set(tm, f, when)
			case 1: // earlier
				when = start + 1 + r.Int64N(when-start)
				w.set(tm, f, when)
			case 2:
				if r.IntN(2) == 0 {
					tm.Stop()
					when = 0
				}
			}
			if when != 0 {
				want[tm] = when
			}
		}
		now := start
		for now < start+30_000_000_000 {
			now += 1 + r.Int64N(3*Tick)
			w.advance(now, func(tm *Timer) { tm.e.Expire(now) })
			for tm, when := range want {
				got, ok := at[tm]
				if !ok {
					if now >= tickOf(when)*Tick {
						t.Fatalf("round %d: timer due at %d not fired by %d", round, when-start, now-start)
					}
					continue
				}
				if got < when {
					t.Fatalf("round %d: timer due at %d fired early, at %d", round, when-start, got-start)
				}
				delete(want, tm)
			}
		}
		if len(want) != 0 {
			t.Fatalf("round %d: %d timers never fired", round, len(want))
		}
		for _, f := range fs {
			n := 0
			for _, o := range f.order {
				if o == f.t {
					n++
				}
			}
			if n > 1 {
				t.Fatalf("round %d: a timer fired %d times", round, n)
			}
		}
		if w.n != 0 {
			t.Fatalf("round %d: %d entries left in the wheel", round, w.n)
		}
		if _, ok := w.next(); ok {
			t.Fatalf("round %d: next reports a slot in an empty wheel", round)
		}
	}
}

// TestWheelRearmFromExpire re-arms a timer from its own Expire: it fires
// once per period, and the wheel's timeout always names the next firing.
func TestWheelRearmFromExpire(t *testing.T) {
	start := int64(1_800_000_000_000_000_000)
	w := &wheel{cur: start / Tick}
	tm := &Timer{}
	f := &fired{at: map[*Timer]int64{}, t: tm, w: w, again: 7 * Tick}
	w.set(tm, f, start+7*Tick)
	n := 0
	now := start
	for i := 0; i < 1000; i++ {
		ms := w.timeout(now)
		if ms < 0 {
			t.Fatal("no timeout with a timer armed")
		}
		now += int64(ms) * 1_000_000
		w.advance(now, func(tm *Timer) { n++; tm.e.Expire(now) })
	}
	if want := int((now - start) / (7 * Tick)); n < want-1 || n > want {
		t.Fatalf("fired %d times in %d ticks, want about %d", n, (now-start)/Tick, want)
	}
}

// TestWheelNext checks the bitmap search against a plain scan, slot by slot.
func TestWheelNext(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 500; round++ {
		w := &wheel{cur: r.Int64N(1 << 40)}
		first := int64(-1)
		for k := 0; k < r.IntN(4); k++ {
			tk := w.cur + 1 + r.Int64N(nslots-1)
			w.add(&Timer{}, tk)
			if first < 0 || tk < first {
				first = tk
			}
		}
		got, ok := w.next()
		if first < 0 {
			if ok {
				t.Fatalf("round %d: next = %d in an empty wheel", round, got)
			}
			continue
		}
		if !ok || got != first {
			t.Fatalf("round %d: next = %d, %v; want %d (cur %d)", round, got, ok, first, w.cur)
		}
	}
}

func TestBufs(t *testing.T) {
	b := &Bufs{Size: 4096, Max: 2}
	p := b.Get()
	if len(p) != 4096 {
		t.Fatalf("len %d", len(p))
	}
	b.Put(p[:10])
	if q := b.Get(); len(q) != 4096 || &q[0] != &p[0] {
		t.Fatal("Put then Get did not give the same full-length buffer back")
	}
	b.Put(make([]byte, 100)) // another size: dropped
	b.Put(b.Get())
	b.Put(make([]byte, 4096))
	b.Put(make([]byte, 4096)) // beyond Max
	if b.Free() != 2 {
		t.Fatalf("%d free, want 2", b.Free())
	}
}

// TestFreedTimerGivenOutAgain: a timer given back (Disarm) while it is
// still in a slot neither fires nor keeps what it timed, and given out
// again (Arm) it fires once, at its new deadline, whether that is before
// its old slot, in it or after it.
func TestFreedTimerGivenOutAgain(t *testing.T) {
	second := int64(time.Second)
	for _, c := range []struct {
		name  string
		again int64 // the new deadline, from the start; 0: not given out again
	}{
		{"not given out again", 0},
		{"earlier", 1 * second},
		{"same slot", 3*second + Tick/2},
		{"later", 4 * second},
	} {
		l, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		start := l.now
		at := map[*Timer]int64{}
		var owner *Timer
		old := &fired{at: at, w: &l.wheel}
		l.Arm(&owner, old, start+3*second)
		tm := owner
		old.t = tm
		l.Disarm(&owner)
		if owner != nil || tm.e != nil {
			t.Fatalf("%s: a freed timer still points to what it timed", c.name)
		}
		nu := &fired{at: at, t: tm, w: &l.wheel}
		if c.again != 0 {
			var next *Timer
			l.Arm(&next, nu, start+c.again)
			if next != tm {
				t.Fatalf("%s: Arm did not take the spare timer", c.name)
			}
		}
		for l.now = start; l.now < start+6*second; l.now += Tick {
			l.wheel.advance(l.now, l.fire)
		}
		if len(old.order) != 0 {
			t.Fatalf("%s: the freed timer's old owner was told %d times", c.name, len(old.order))
		}
		switch {
		case c.again == 0 && len(nu.order) != 0:
			t.Fatalf("%s: a freed timer fired", c.name)
		case c.again != 0 && (len(nu.order) != 1 || at[tm] < start+c.again || at[tm] > start+c.again+2*Tick):
			t.Fatalf("%s: the timer given out again fired %d times, at %d (deadline %d)", c.name, len(nu.order), at[tm]-start, c.again)
		}
		l.Close()
	}
}
