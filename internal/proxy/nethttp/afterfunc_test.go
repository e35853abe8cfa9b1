package nethttp

import (
	"context"
	"sync"
	"testing"
)

// streamLike is a context done when end is called, which registers
// functions itself, as the HTTP/2 server's streams do.
type streamLike struct {
	context.Context // Background: no deadline, no values
	mu              sync.Mutex
	done            chan struct{}
	fs              []func()
}

func (s *streamLike) Done() <-chan struct{} { return s.done }
func (s *streamLike) Err() error {
	select {
	case <-s.done:
		return context.Canceled
	default:
		return nil
	}
}
func (s *streamLike) AfterFunc(f func()) func() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fs = append(s.fs, f)
	return func() bool { return true }
}

type key struct{}

// TestKeepAfterFunc: a value context over a stream's context, as an
// attempt's trace makes, still registers with the stream (instead of a
// goroutine per context.AfterFunc), and its values are there.
func TestKeepAfterFunc(t *testing.T) {
	s := &streamLike{Context: context.Background(), done: make(chan struct{})}
	defer close(s.done)
	vctx := context.WithValue(s, key{}, "v")

	// Without it, context.AfterFunc does not find the stream's (it waits
	// for Done on a goroutine of its own).
	context.AfterFunc(vctx, func() {})()
	if len(s.fs) != 0 {
		t.Fatalf("the baseline changed: context.AfterFunc over a value context found the stream's AfterFunc")
	}

	kctx := keepAfterFunc(vctx, s)
	stop := context.AfterFunc(kctx, func() {})
	defer stop()
	if len(s.fs) != 1 {
		t.Errorf("%d functions registered with the stream, want 1", len(s.fs))
	}
	if kctx.Value(key{}) != "v" || kctx.Err() != nil {
		t.Errorf("value %v, err %v", kctx.Value(key{}), kctx.Err())
	}
	if keepAfterFunc(s, s) != context.Context(s) {
		t.Errorf("ctx itself is not returned as it is")
	}
}
