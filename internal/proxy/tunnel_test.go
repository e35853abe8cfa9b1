package proxy

import (
	"bytes"
	"testing"
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
