package h2

// Streams forwarded on the loop, against a fake LoopForwarder that drives
// the stream's StreamOut on the loop as package h1's lconn does (the
// end-to-end tests drive it with the real one: internal/e2e/h2loop_test.go).

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
	"golang.org/x/net/http2"
)

type fakeFwd struct{ got chan *fakeStream }

func (f *fakeFwd) Forward(sk Socket, head []byte, out StreamOut) (LoopStream, bool) {
	fs := &fakeStream{out: out, l: sk.Loop(), head: string(head),
		resumed: make(chan struct{}, 64), cancelled: make(chan struct{}, 64)}
	f.got <- fs
	return fs, true
}

type fakeStream struct {
	out                StreamOut
	l                  *loop.Loop
	head               string
	resumed, cancelled chan struct{}
}

func (fs *fakeStream) Cancel() {
	select {
	case fs.cancelled <- struct{}{}:
	default:
	}
}

func (fs *fakeStream) Resume() {
	select {
	case fs.resumed <- struct{}{}:
	default:
	}
}

// on runs fn on the stream's loop and waits for it.
func (fs *fakeStream) on(fn func()) {
	done := make(chan struct{})
	fs.l.Post(func() { fn(); close(done) })
	<-done
}

// eofAfter reports io.EOF on the read after the first one that brings
// bytes once armed: the client's FIN arrived with its last frames.
type eofAfter struct {
	*h1.Socket
	arm, eof atomic.Bool
}

func (s *eofAfter) Read(p []byte) (int, error) {
	if s.eof.Load() {
		return 0, io.EOF
	}
	n, err := s.Socket.Read(p)
	if n > 0 && s.arm.Load() {
		s.eof.Store(true)
	}
	return n, err
}

// answerPastTheWindow sends a whole 70,000-byte answer, which the
// client's initial 65,535-byte window holds back in part.
func (fs *fakeStream) answerPastTheWindow(t *testing.T) {
	t.Helper()
	var held bool
	fs.on(func() {
		fs.out.Head(200, []byte("Content-Length: 70000\r\n"), false)
		fs.out.Data(make([]byte, 70000), true)
		held = fs.out.Held()
	})
	if !held {
		t.Fatal("70000 bytes in a 65535 window: not held")
	}
}

// readBody reads stream 1's DATA until n bytes came.
func readBody(p *peer, n int) {
	got := 0
	for got < n {
		f := p.nextFrame()
		if f.typ == http2.FrameData && f.id == 1 {
			got += len(f.data)
			if f.end {
				p.t.Fatalf("END_STREAM after %d bytes, want %d first", got, n)
			}
		}
	}
}

// TestLoopStreamResumedWhenTheConnectionEnds: a stream whose held rest
// goes out on a WINDOW_UPDATE that arrives in the same read as the
// client's FIN still resumes its forwarder, which waits in Held (else the
// request would never end: no access log, its buffers kept).
func TestLoopStreamResumedWhenTheConnectionEnds(t *testing.T) {
	ls, err := testLoops()
	if err != nil {
		t.Fatal(err)
	}
	ff := &fakeFwd{got: make(chan *fakeStream, 4)}
	wrapped := make(chan *eofAfter, 1)
	ts := startLoopServerOn(t, ls, &Server{Forward: ff}, nil, nil, func(sk *h1.Socket) Socket {
		w := &eofAfter{Socket: sk}
		wrapped <- w
		return w
	})
	p := newPeer(t, ts)
	p.open(1, true, get("/x")...)
	fs := recv(t, ff.got, "Forward")
	w := recv(t, wrapped, "the socket")
	fs.answerPastTheWindow(t)
	readBody(p, 65535)
	w.arm.Store(true)
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteWindowUpdate(1, 10000)
	fr.WriteWindowUpdate(0, 10000)
	p.nc.Write(b.Bytes())
	select {
	case <-fs.resumed:
	case <-fs.cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("the forwarder waiting in Held was neither resumed nor cancelled after its stream ended and the connection closed")
	}
}

// TestLoopStreamEndsOnANegativeWindow: a stream whose client shrank
// SETTINGS_INITIAL_WINDOW_SIZE (its window now negative) still ends with
// END_STREAM, in an empty DATA frame that needs no window (RFC 9113
// §6.9.1), as a worker's stream does (sendData); the forwarder's end
// (Reset, as lconn.endStream calls it) then resets nothing.
func TestLoopStreamEndsOnANegativeWindow(t *testing.T) {
	ff := &fakeFwd{got: make(chan *fakeStream, 4)}
	ts := startLoopServer(t, &Server{Forward: ff}, nil, nil)
	p := newPeer(t, ts)
	p.open(1, true, get("/x")...)
	fs := recv(t, ff.got, "Forward")
	fs.on(func() {
		fs.out.Head(200, nil, false)
		fs.out.Data(make([]byte, 40000), false)
	})
	readBody(p, 40000)
	// The stream's window: 25535 - 65535 = -40000.
	if err := p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	p.recvInit = 0
	p.ping([8]byte{1}) // the SETTINGS is applied
	// The book says 0, not -40000: RFC 9113 §6.9.1 allows an empty
	// END_STREAM DATA frame with no space in the windows.
	p.recvStream[1] = 0
	var held bool
	fs.on(func() {
		fs.out.Data(nil, true)
		held = fs.out.Held()
	})
	if held {
		t.Log("the empty END_STREAM DATA is held for a negative window (the worker path sends it)")
	}
	p.windowUpdate(0, 40000) // connection only: the stream's stays negative
	if held {
		select {
		case <-fs.resumed:
		case <-fs.cancelled:
			t.Fatal("cancelled")
		case <-time.After(2 * time.Second):
			t.Fatal("not resumed")
		}
		fs.on(func() {
			if !fs.out.Held() {
				fs.out.Reset() // lconn: endRequest, close, endStream
			}
		})
	}
	for {
		f := p.nextFrame()
		if f.id != 1 {
			continue
		}
		switch {
		case f.typ == http2.FrameRSTStream:
			t.Fatalf("the whole response ended with RST_STREAM %v, not END_STREAM", f.code)
		case f.end:
			return
		}
	}
}

// TestLoopStreamTrailersAfterHeldData: trailers sent while DATA is held
// for the windows go out after it, with END_STREAM.
func TestLoopStreamTrailersAfterHeldData(t *testing.T) {
	ff := &fakeFwd{got: make(chan *fakeStream, 4)}
	ts := startLoopServer(t, &Server{Forward: ff}, nil, nil)
	p := newPeer(t, ts)
	p.autoWU = true
	p.open(1, true, get("/x")...)
	fs := recv(t, ff.got, "Forward")
	fs.on(func() {
		fs.out.Head(200, []byte("Trailer: X-T\r\n"), false)
		fs.out.Data(make([]byte, 70000), false)
		fs.out.Trailers([]byte("X-T: 1\r\n"))
	})
	got := 0
	for {
		f := p.nextFrame()
		if f.id != 1 {
			continue
		}
		switch f.typ {
		case http2.FrameData:
			got += len(f.data)
			if f.end {
				t.Fatal("END_STREAM on DATA before the trailers")
			}
		case http2.FrameHeaders:
			if f.has("x-t") {
				if got != 70000 || !f.end {
					t.Fatalf("trailers after %d bytes, end %v", got, f.end)
				}
				return
			}
		case http2.FrameRSTStream:
			t.Fatalf("reset %v", f.code)
		}
	}
}

// TestLoopStreamCancelledNotResumed: a forwarder whose stream holds bytes
// when the client goes is told Cancel and not Resume: resumed, it would
// relay (and count as sent) more of the backend's answer before the
// Cancel it was posted runs.
func TestLoopStreamCancelledNotResumed(t *testing.T) {
	ff := &fakeFwd{got: make(chan *fakeStream, 4)}
	ts := startLoopServer(t, &Server{Forward: ff}, nil, nil)
	p := newPeer(t, ts)
	p.open(1, true, get("/x")...)
	fs := recv(t, ff.got, "Forward")
	fs.answerPastTheWindow(t)
	p.nc.Close()
	recv(t, fs.cancelled, "Cancel")
	fs.on(func() {}) // what the loop does at the connection's end is done
	select {
	case <-fs.resumed:
		t.Fatal("a cancelled forwarder was resumed")
	default:
	}
}
