package h2

// A connection's writes on its loop (what the server writes is queued on
// the socket and goes out as it takes it) and its read and write
// deadlines, which end it from a timer posted to the loop.

import "time"

// flushLocked queues what the server wrote and, but in the loop's own
// event (whose end writes once for all of it), writes what the socket
// takes at once.
func (w *lwire) flushLocked() {
	if !w.queueOutLocked() {
		return
	}
	if !w.inEvent {
		w.sendLocked()
	}
}

// queueOutLocked moves what the server wrote (c.out) to the socket's
// queue, past the flood guard's count; false when the connection is over
// (or its TLS failed, which ends it).
func (w *lwire) queueOutLocked() bool {
	c := w.c
	if c.dead || w.closed {
		c.out = c.out[:0]
		return false
	}
	if len(c.out) > 0 {
		if w.g != nil {
			w.g.ScanOut(c.out)
		}
		err := w.sk.Queue(c.out)
		c.out = c.out[:0]
		if err != nil {
			w.failLocked(err)
			return false
		}
	}
	return true
}

// sendLocked writes what is queued as the socket takes it.
func (w *lwire) sendLocked() {
	c := w.c
	before := w.sk.Queued()
	if w.blocked || w.closed || before == 0 {
		return
	}
	done, err := w.sk.Send()
	if err != nil {
		w.failLocked(err)
		return
	}
	if !done {
		w.blocked = true
		if wt := c.srv.WriteTimeout; wt > 0 {
			// Each write bounded, as a goroutine's write deadline bounds
			// it: the deadline moves on while the client takes bytes (set
			// lazily, at most once a second).
			now := time.Now()
			if w.writeBy.IsZero() || w.sk.Queued() < before && w.writeBy.Sub(now) < wt-time.Second {
				w.writeBy = now.Add(wt)
				w.armLocked()
			}
		}
	} else {
		w.writeBy = time.Time{}
	}
	c.drained.Broadcast()
}

// failLocked ends the connection after its socket failed: the loop closes
// it.
func (w *lwire) failLocked(err error) {
	c := w.c
	c.dieLocked(err)
	if !w.inEvent && !w.l.PostTo(w, w.endOnLoop) { // in the event, its end sees c.dead
		go w.end() // the loops are closed; end takes c.mu, held here
	}
}

// setReadDeadlineLocked sets the read deadline: past it, the connection
// ends (as a goroutine's read past its deadline ends it).
func (w *lwire) setReadDeadlineLocked(t time.Time) {
	w.readBy = t
	w.armLocked()
}

// armLocked arms the timer for the earlier deadline.
func (w *lwire) armLocked() {
	next := w.readBy
	if !w.writeBy.IsZero() && (next.IsZero() || w.writeBy.Before(next)) {
		next = w.writeBy
	}
	if next.IsZero() || w.closed {
		return // a timer that fires finds nothing due
	}
	d := time.Until(next)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fired)
		return
	}
	w.timer.Reset(d)
}

// fired runs on the timer's goroutine: the loop ends the connection if a
// deadline has passed.
func (w *lwire) fired() {
	if !w.l.PostTo(w, w.expire) {
		w.end() // the loops are closed: nothing runs on them any more
	}
}

func (w *lwire) expire() {
	if w.due() {
		w.endOnLoop()
	}
}

// due reports whether a deadline has passed (and rearms the timer if
// not).
func (w *lwire) due() bool {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.closed {
		return false // a timer that fired as the connection ended
	}
	now := time.Now()
	due := !w.readBy.IsZero() && !now.Before(w.readBy) ||
		!w.writeBy.IsZero() && w.blocked && !now.Before(w.writeBy)
	if !due {
		w.armLocked()
	} else if w.preface > 0 {
		c.count("bad_preface") // as a goroutine's read of it past its deadline
	}
	return due
}
