package loop

import "math/bits"

// The wheel's resolution and span. A deadline fires in the first wake-up at
// or after it, at most one Tick late (or a little more when the loop is
// busy); one further than the span sits in the wheel's last slot and is
// put back when that slot comes round.
const (
	Tick   = 10_000_000 // nanoseconds
	nslots = 512        // 5.12 s of ticks
)

// Expirer is what a Timer tells when its deadline passes.
type Expirer interface {
	// Expire is called on the loop, once per arming, with the loop's clock.
	Expire(now int64)
}

// Timer is one deadline on a loop's wheel, kept in the struct it times (a
// connection, an exchange). Moving a deadline later costs nothing but the
// store (the timer stays in its slot and moves when the slot comes round),
// which is what lets a connection keep one timer for its idle, read, write
// and backend phases without touching the wheel per request. The zero value
// is a stopped timer.
type Timer struct {
	when int64 // the deadline, nanoseconds on the loop's clock; 0: stopped
	tick int64 // the tick of the slot that holds it; 0: none
	e    Expirer
}

// Stop stops t; a stopped timer stays in its slot until the slot comes
// round, and is then dropped.
func (t *Timer) Stop() { t.when = 0 }

// When reports t's deadline, 0 when stopped.
func (t *Timer) When() int64 { return t.when }

// wheel is a loop's timers: nslots slots of one Tick each, a bitmap of
// the slots that hold timers (so that the next wake-up is found without
// visiting empty slots), and the entries in each slot. An entry is stale
// when its timer has since moved to an earlier slot (its tick no longer
// names this one); stale entries are dropped when their slot comes round.
type wheel struct {
	slots [nslots][]*Timer
	bits  [nslots / 64]uint64
	spare []*Timer
	cur   int64 // the last tick processed: every deadline up to cur*Tick has fired
	n     int   // entries in the slots, stale ones included
}

func tickOf(when int64) int64 { return (when + Tick - 1) / Tick }

// set arms t to tell e at when.
func (w *wheel) set(t *Timer, e Expirer, when int64) {
	t.e = e
	t.when = when
	tk := tickOf(when)
	if t.tick != 0 && t.tick <= tk {
		return // its slot comes first; it moves on from there
	}
	w.add(t, tk)
}

func (w *wheel) add(t *Timer, tk int64) {
	if tk <= w.cur {
		tk = w.cur + 1
	}
	if last := w.cur + nslots - 1; tk > last {
		tk = last
	}
	t.tick = tk
	i := tk & (nslots - 1)
	w.slots[i] = append(w.slots[i], t)
	w.bits[i/64] |= 1 << (i % 64)
	w.n++
}

// next reports the first tick after cur whose slot holds entries, and
// false when none does.
func (w *wheel) next() (int64, bool) {
	if w.n == 0 {
		return 0, false
	}
	start := (w.cur + 1) & (nslots - 1)
	for k := int64(0); k <= nslots/64; k++ {
		word := (start/64 + k) % (nslots / 64)
		b := w.bits[word]
		if k == 0 {
			b &= ^uint64(0) << (start % 64)
		} else if k == nslots/64 {
			b &= 1<<(start%64) - 1 // the first word again, below start
		}
		if b != 0 {
			i := word*64 + int64(bits.TrailingZeros64(b))
			return w.cur + 1 + (i-start+nslots)&(nslots-1), true
		}
	}
	return 0, false
}

// timeout is the epoll_wait timeout in milliseconds that wakes the loop for
// its next timer: -1 when none is armed.
func (w *wheel) timeout(now int64) int {
	tk, ok := w.next()
	if !ok {
		return -1
	}
	d := tk*Tick - now
	if d <= 0 {
		return 0
	}
	return int((d + 999_999) / 1_000_000)
}

// advance processes every tick up to now, calling fire for each timer
// whose deadline has passed. fire may arm timers (this one or others): they
// go to later slots.
func (w *wheel) advance(now int64, fire func(*Timer)) {
	end := now / Tick
	for w.cur < end {
		tk, ok := w.next()
		if !ok || tk > end {
			w.cur = end
			return
		}
		w.cur = tk
		i := tk & (nslots - 1)
		list := w.slots[i]
		w.slots[i] = w.spare[:0]
		w.bits[i/64] &^= 1 << (i % 64)
		for j, t := range list {
			list[j] = nil
			w.n--
			if t.tick != tk {
				continue // stale: the timer moved to an earlier slot, and on
			}
			t.tick = 0
			switch {
			case t.when == 0:
			case t.when <= now:
				t.when = 0
				fire(t)
			default:
				w.add(t, tickOf(t.when))
			}
		}
		w.spare = list[:0]
	}
}
