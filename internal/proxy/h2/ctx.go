package h2

import (
	"context"
	"time"
)

// streamCtx is a request's context: done when its stream ends (reset,
// the handler returned, the connection closed). It is not a
// context.WithCancel: a child context (the request's timeouts, an
// attempt's) registers with it through AfterFunc, a slice under the
// connection's lock, where a cancelCtx parent allocates a map for its
// children on every request (measured: a tenth of the server's CPU per
// request with the context.AfterFunc of the engine's exchange).
//
// Its parent is context.Background (its Deadline and Value are the
// background's): sluice's codec keeps nothing in a connection's context
// that a request needs, and a parent with a cancelCtx of its own would make
// context.Cause find that one's cause instead of this one's error.
type streamCtx struct{ st *stream } // one pointer: an interface holds it without allocating

var _ interface {
	AfterFunc(func()) func() bool
} = streamCtx{}

func (x streamCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (x streamCtx) Value(any) any               { return nil }

func (x streamCtx) Done() <-chan struct{} {
	st := x.st
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.done == nil {
		st.done = make(chan struct{})
		if st.ended {
			close(st.done)
		}
	}
	return st.done
}

func (x streamCtx) Err() error {
	st := x.st
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.ended {
		return context.Canceled
	}
	return nil
}

// AfterFunc runs f on a goroutine of its own once the stream ends (as
// context.AfterFunc); stop reports whether it kept f from running.
func (x streamCtx) AfterFunc(f func()) (stop func() bool) {
	st := x.st
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.ended {
		go f()
		return func() bool { return false }
	}
	st.seq++
	id := st.seq
	if st.after == nil {
		st.after = st.afterBuf[:0]
	}
	st.after = append(st.after, afterFunc{id, f})
	return func() bool {
		st.c.mu.Lock()
		defer st.c.mu.Unlock()
		for i, a := range st.after {
			if a.id == id {
				st.after = append(st.after[:i], st.after[i+1:]...)
				return true
			}
		}
		return false
	}
}

type afterFunc struct {
	id uint64
	f  func()
}

// endCtxLocked ends the stream's context (once).
func (st *stream) endCtxLocked() {
	if st.ended {
		return
	}
	st.ended = true
	if st.done != nil {
		close(st.done)
	}
	for _, a := range st.after {
		go a.f()
	}
	st.after = nil
}
