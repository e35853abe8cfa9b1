package proxy

import (
	"bytes"
	"context"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// frame builds a server or client WebSocket frame header plus payload.
func frame(payload int, masked bool) []byte {
	b := []byte{0x82}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case payload < 126:
		b = append(b, m|byte(payload))
	case payload < 1<<16:
		b = append(b, m|126, byte(payload>>8), byte(payload))
	default:
		b = append(b, m|127, 0, 0, 0, 0, byte(payload>>24), byte(payload>>16), byte(payload>>8), byte(payload))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, bytes.Repeat([]byte{'x'}, payload)...)
}

func TestWSFrameBoundaries(t *testing.T) {
	stream := append(append(append(frame(5, false), frame(300, true)...), frame(70000, false)...), frame(0, false)...)
	boundaries := map[int]bool{0: true}
	off := 0
	for _, n := range []int{len(frame(5, false)), len(frame(300, true)), len(frame(70000, false)), len(frame(0, false))} {
		off += n
		boundaries[off] = true
	}
	// Feed one byte at a time: the tracker must be at a boundary exactly at
	// frame ends.
	var f wsFrames
	for i := 0; i <= len(stream); i++ {
		if got := f.atBoundary(); got != boundaries[i] {
			t.Fatalf("after %d bytes: atBoundary = %v, want %v", i, got, boundaries[i])
		}
		if i < len(stream) {
			f.feed(stream[i : i+1])
		}
	}
	// And in odd-sized pieces.
	var g wsFrames
	for i := 0; i < len(stream); i += 777 {
		g.feed(stream[i:min(i+777, len(stream))])
	}
	if !g.atBoundary() {
		t.Errorf("after the whole stream in pieces: not at a boundary")
	}
}

// pipeTunnel registers an opened tunnel whose client end is a pipe; what
// the WebSocket client receives arrives on the returned channel, which is
// closed when the client connection closes.
func pipeTunnel(t *testing.T, ts *Tunnels) (*Tunnel, <-chan []byte) {
	t.Helper()
	client, far := net.Pipe()
	back, backFar := net.Pipe()
	t.Cleanup(func() { far.Close(); backFar.Close() })
	got := make(chan []byte, 16)
	go func() {
		defer close(got)
		buf := make([]byte, 64)
		for {
			n, err := far.Read(buf)
			if err != nil {
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	tn := NewTunnel(client, back, "web", nil)
	if !ts.Add(tn) {
		t.Fatal("Add refused a tunnel")
	}
	if err := tn.Open([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	<-got
	return tn, got
}

// TestDrainLetsTunnelsRunToTheDeadline: during Drain a tunnel keeps
// carrying frames until wait before the deadline, then gets the close
// frame; one that ends by itself ends Drain early, without a close frame.
func TestDrainLetsTunnelsRunToTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ts Tunnels
		tn, got := pipeTunnel(t, &ts)
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			ts.Drain(ctx, time.Second)
		}()
		time.Sleep(8 * time.Second)
		msg := frame(3, false)
		go tn.Write(msg)
		if b := <-got; !bytes.Equal(b, msg) {
			t.Fatalf("8s into the drain the client got %q, want the frame %q", b, msg)
		}
		b := <-got
		if !bytes.Equal(b, closeFrame) {
			t.Fatalf("then the client got %q, want the close frame %q", b, closeFrame)
		}
		if at := time.Since(start); at != 9*time.Second {
			t.Errorf("the close frame came %v into the drain, want 9s (wait before the deadline)", at)
		}
		if _, open := <-got; open {
			t.Error("the client connection is still open after the close frame")
		}
		ts.Remove(tn) // what the relay does once both sides are closed
		<-drained
		if !ts.closing {
			t.Error("Drain closed the tunnels without refusing new ones")
		}

		var ts2 Tunnels
		tn2, got2 := pipeTunnel(t, &ts2)
		start = time.Now()
		ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel2()
		drained = make(chan struct{})
		go func() {
			defer close(drained)
			ts2.Drain(ctx2, time.Second)
		}()
		time.Sleep(3 * time.Second)
		ts2.Remove(tn2) // the WebSocket ended by itself
		<-drained
		if at := time.Since(start); at != 3*time.Second {
			t.Errorf("Drain returned %v after the last tunnel ended, want at once (3s)", at)
		}
		synctest.Wait()
		select {
		case b := <-got2:
			t.Errorf("a tunnel that ended by itself got %q from Drain, want nothing", b)
		default:
		}
	})
}
