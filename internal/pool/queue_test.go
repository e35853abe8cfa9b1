package pool

import (
	"context"
	"errors"
	"net/url"
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
				if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false); err != nil {
					t.Errorf("waiter %d: %v", i, err)
				}
				order <- i
			}()
			synctest.Wait() // queue in a known order
		}
		if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false); !errors.Is(err, ErrQueueFull) {
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
		if err := l.Wait(context.Background(), time.Now().Add(l.Timeout), false); !errors.Is(err, ErrQueueTimeout) {
			t.Fatalf("err = %v, want ErrQueueTimeout", err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("waited %v on fake time, want 10s", d)
		}
	})
}
