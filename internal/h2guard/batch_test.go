package h2guard

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestBatchConnOrderAndCloseDrains: bytes written in many small Writes
// arrive whole and in order, those still pending when Close is called
// included; Write after Close fails.
func TestBatchConnOrderAndCloseDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := newBatchConn(nc)
	var want []byte
	for i := 0; i < 2000; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%300)
		want = append(want, p...)
		if n, err := b.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-got; !bytes.Equal(r, want) {
		t.Fatalf("peer read %d bytes, want %d in order", len(r), len(want))
	}
	if _, err := b.Write([]byte("late")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestBatchConnBackPressure: a peer that never reads makes Write block once
// maxPending bytes wait, Close returns all the same (its drain gives up
// after closeDrain), and the failure reaches the blocked writer.
func TestBatchConnBackPressure(t *testing.T) {
	a, peer := net.Pipe() // unbuffered: nothing is sent until the peer reads
	defer peer.Close()
	b := newBatchConn(a)
	blocked := make(chan error, 1)
	go func() {
		p := make([]byte, 16<<10)
		for {
			if _, err := b.Write(p); err != nil {
				blocked <- err
				return
			}
		}
	}()
	pending := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.pending)
	}
	for end := time.Now().Add(10 * time.Second); pending() < maxPending && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-blocked:
		t.Fatalf("Write did not block on a peer that reads nothing: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if n := pending(); n < maxPending || n > maxPending+16<<10 {
		t.Errorf("%d bytes pending, want about maxPending (%d)", n, maxPending)
	}
	b.Close() // returns: its drain gives up at closeDrain
	if err := <-blocked; err == nil {
		t.Error("the blocked Write returned no error")
	}
	if err := b.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite on a pipe: %v, want ErrUnsupported", err)
	}
}
