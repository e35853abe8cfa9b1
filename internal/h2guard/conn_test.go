package h2guard

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Chunkings: client write size × Conn read size. Size 1 splits every frame
// header across Reads; large sizes take the whole-header path.
var chunkings = [][2]int{{1, 1}, {1, 4096}, {5, 7}, {9, 9}, {13, 4096}, {4096, 3}, {1 << 20, 4096}, {1 << 20, 1 << 16}}

// smaller keeps long streams from being fed a byte at a time (slow under
// -race); 257 still splits frame headers.
func smaller(ch [2]int, n int) [2]int {
	if n > 20000 {
		ch[0], ch[1] = max(ch[0], 257), max(ch[1], 257)
	}
	return ch
}

// expectClose feeds w at every chunking and wants the Conn to close for
// reason at frame index frame, having passed every byte before it intact.
func expectClose(t *testing.T, w *wire, cfg *Config, reason Reason, frame int) {
	t.Helper()
	for _, ch := range chunkings {
		ch = smaller(ch, len(w.bytes()))
		o := pipeFeed(t, w.bytes(), cfg, ch[0], ch[1])
		if o.reason != reason {
			t.Fatalf("chunking %v: reason %v, want %v (err %v)", ch, o.reason, reason, o.err)
		}
		if got := w.frameAt(int(o.failAt) - 1); got != frame {
			t.Fatalf("chunking %v: closed at frame %d (byte %d), want frame %d", ch, got, o.failAt, frame)
		}
		if !o.exact || int64(o.delivered) > o.failAt {
			t.Fatalf("chunking %v: delivered %d bytes (exact %v), decided at %d", ch, o.delivered, o.exact, o.failAt)
		}
		ga := goAwayIn(o.fromConn)
		if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "h2guard: "+reason.String() {
			t.Fatalf("chunking %v: client got %q, want a GOAWAY ENHANCE_YOUR_CALM for %v", ch, o.fromConn, reason)
		}
	}
}

// expectPass feeds w at every chunking and wants every byte through intact.
func expectPass(t *testing.T, w *wire, cfg *Config) {
	t.Helper()
	for _, ch := range chunkings {
		ch = smaller(ch, len(w.bytes()))
		o := pipeFeed(t, w.bytes(), cfg, ch[0], ch[1])
		if o.reason != None || o.delivered != len(w.bytes()) || !o.exact {
			t.Fatalf("chunking %v: reason %v, delivered %d of %d (exact %v), err %v",
				ch, o.reason, o.delivered, len(w.bytes()), o.exact, o.err)
		}
		if !errors.Is(o.err, io.EOF) && !errors.Is(o.err, io.ErrClosedPipe) {
			t.Fatalf("chunking %v: final error %v", ch, o.err)
		}
		if len(o.fromConn) != 0 {
			t.Fatalf("chunking %v: the Conn wrote %q", ch, o.fromConn)
		}
	}
}

func TestNormalTrafficPasses(t *testing.T) {
	w := newWire(true).settings().settingsAck().get(1)
	blk := w.block("/big", "cookie", strings.Repeat("c", 20000), "x-a", strings.Repeat("a", 20000))
	third := len(blk) / 3
	w.headers(3, blk[:third], false, false).cont(3, blk[third:2*third], false).cont(3, blk[2*third:], true)
	w.data(3, 1000, false).data(3, 0, true) // an empty DATA that ends the stream
	w.wu(0).wu(3).ping(false).ping(true).prio(5).get(5).rst(5)
	w.get(7).dataPadded(7, 10, 20, false).dataPadded(7, 0, 0, true)
	w.raw(http2.FramePriorityUpdate, 0, 0, []byte{0, 0, 0, 7, 'u', '=', '1'})
	w.raw(0xfa, 0, 0, []byte("grease"))
	for sid := uint32(9); sid < 209; sid += 2 {
		w.get(sid).wu(sid).ping(false)
	}
	w.headers(209, w.block("/t"), false, true).data(209, 5, false).headers(209, w.block("/trailers"), true, true)
	expectPass(t, w, nil)
}

func TestControlFloods(t *testing.T) {
	cases := []struct {
		name   string
		lim    Limits
		frame  func(w *wire)
		free   int // frames of this kind before the bucket (besides the SETTINGS)
		reason Reason
	}{
		{"ping", Limits{Ping: slow(10)}, func(w *wire) { w.ping(false) }, 10, PingFlood},
		{"settings", Limits{Settings: slow(10)}, func(w *wire) { w.settings() }, 9, SettingsFlood}, // the first SETTINGS takes a token
		{"priority", Limits{Priority: slow(10), PriorityPerStream: -1}, func(w *wire) { w.prio(3) }, 10, PriorityFlood},
		{"priority allowance", Limits{Priority: slow(1)}, func(w *wire) { w.prio(3) }, 101, PriorityFlood},
		{"priority update", Limits{Priority: slow(3), PriorityPerStream: -1}, func(w *wire) {
			w.raw(http2.FramePriorityUpdate, 0, 0, []byte{0, 0, 0, 1, 'u', '=', '2'})
		}, 3, PriorityFlood},
		{"rst_stream", Limits{RSTStream: slow(10), RapidResetMax: -1, PrematureResetMinStreams: -1}, func(w *wire) { w.rst(1) }, 10, RSTStreamFlood},
		{"window_update", Limits{WindowUpdate: slow(10), WindowUpdatesPerDataFrame: -1}, func(w *wire) { w.wu(0) }, 10, WindowUpdateFlood},
		{"window_update allowance", Limits{WindowUpdate: slow(5)}, func(w *wire) { w.wu(1) }, 6, WindowUpdateFlood}, // 1 + 2×(0 + 10×0) free
		{"ping ack", Limits{Other: slow(10)}, func(w *wire) { w.ping(true) }, 10, OtherFlood},
		{"settings ack", Limits{Other: slow(4)}, func(w *wire) { w.settingsAck() }, 4, OtherFlood},
		{"unknown", Limits{Other: slow(4)}, func(w *wire) { w.raw(0xbb, 0, 0, nil) }, 4, OtherFlood},
		{"goaway", Limits{Other: slow(4)}, func(w *wire) { w.raw(http2.FrameGoAway, 0, 0, make([]byte, 8)) }, 4, OtherFlood},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Limits: tc.lim}
			w := newWire(true).settings()
			for range tc.free {
				tc.frame(w)
			}
			expectPass(t, w, cfg)
			tc.frame(w)
			w.ping(true) // bytes after the offending frame are never delivered
			expectClose(t, w, cfg, tc.reason, 1+tc.free)
		})
	}
}

func TestPriorityAllowanceGrowsWithStreams(t *testing.T) {
	cfg := &Config{Limits: Limits{Priority: slow(1), PriorityPerStream: 2}}
	w := newWire(true).settings()
	w.prio(1).prio(1).get(1).prio(1).prio(1).get(3).prio(1).prio(1) // 6 ≤ 2×(1+2)
	w.prio(1)                                                       // the token
	expectPass(t, w, cfg)
	w.prio(1)
	expectClose(t, w, cfg, PriorityFlood, w.n()-1)
}

// feed pushes b into sc and reads it through g; it returns the Read error.
func feed(g net.Conn, sc *scriptConn, b []byte) error {
	sc.push(b, 1<<20)
	buf := make([]byte, 1<<16)
	for {
		_, err := g.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func serverFrame(t *testing.T, write func(fr *http2.Framer) error) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := write(http2.NewFramer(&b, nil)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestPingFreeAfterServerData(t *testing.T) {
	sc := &scriptConn{}
	g := New(sc, &Config{Limits: Limits{Ping: slow(2)}})
	if err := feed(g, sc, newWire(true).settings().bytes()); err != nil {
		t.Fatal(err)
	}
	data := serverFrame(t, func(fr *http2.Framer) error { return fr.WriteData(1, false, make([]byte, 100)) })
	hdrs := serverFrame(t, func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0x88}, EndHeaders: true})
	})
	ping := newWire(false).ping(false).bytes()
	for i := range 500 {
		// The server's frames arrive in pieces: the count must not depend on it.
		out := data
		if i%2 == 1 {
			out = hdrs
		}
		for j := 0; j < len(out); j += 1 + i%11 {
			if _, err := g.Write(out[j:min(len(out), j+1+i%11)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := feed(g, sc, ping); err != nil {
			t.Fatalf("ping %d after server data: %v", i, err)
		}
	}
	// Without server frames in between, pings take tokens: two, then close.
	for i := range 2 {
		if err := feed(g, sc, ping); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	if err := feed(g, sc, ping); !errors.Is(err, net.ErrClosed) || From(g).Reason() != PingFlood {
		t.Fatalf("third ping without data: %v, reason %v", err, From(g).Reason())
	}
}

func TestWindowUpdateAllowance(t *testing.T) {
	sc := &scriptConn{}
	g := New(sc, &Config{Limits: Limits{WindowUpdate: slow(1)}})
	wu := newWire(false).wu(1).bytes()
	if err := feed(g, sc, newWire(true).settings().wu(1).wu(1).bytes()); err != nil { // 1 free, 1 token
		t.Fatal(err)
	}
	data := serverFrame(t, func(fr *http2.Framer) error { return fr.WriteData(1, false, make([]byte, 3)) })
	for range 5 {
		for _, b := range data { // one byte per Write
			if _, err := g.Write([]byte{b}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Allowance 1 + 2×(0 + 10×5) = 101; 2 used.
	for i := range 99 {
		if err := feed(g, sc, wu); err != nil {
			t.Fatalf("window update %d: %v", i, err)
		}
	}
	if err := feed(g, sc, wu); From(g).Reason() != WindowUpdateFlood {
		t.Fatalf("window update over the allowance: %v, reason %v", err, From(g).Reason())
	}
}

func TestRapidReset(t *testing.T) {
	w := newWire(true).settings()
	for i := range 200 {
		sid := uint32(1 + 2*i)
		w.get(sid).rst(sid)
	}
	expectPass(t, w, nil)
	w.get(401).rst(401)
	expectClose(t, w, nil, RapidReset, w.n()-1)
}

func TestPrematureResetRatio(t *testing.T) {
	// Envoy's rule alone: before 500 streams, 250 premature resets close.
	cfg := &Config{Limits: Limits{RapidResetMax: -1}}
	w := newWire(true).settings()
	for i := range 249 {
		sid := uint32(1 + 2*i)
		w.get(sid).rst(sid)
	}
	expectPass(t, w, cfg)
	w.get(499).rst(499)
	expectClose(t, w, cfg, PrematureReset, w.n()-1)

	// After 1000 good streams, resets must reach half of all streams.
	cfg = &Config{Limits: Limits{RapidResetMax: -1, RSTStream: Rate{Burst: -1}}}
	w = newWire(true).settings()
	sid := uint32(1)
	for range 1000 {
		w.get(sid)
		sid += 2
	}
	for range 999 { // 2×999 < 1999 streams
		w.get(sid).rst(sid)
		sid += 2
	}
	for _, ch := range [][2]int{{1 << 20, 4096}, {7, 3}} {
		if o := pipeFeed(t, w.bytes(), cfg, ch[0], ch[1]); o.reason != None {
			t.Fatalf("999 resets of 1999 streams: closed for %v", o.reason)
		}
	}
	w.get(sid).rst(sid) // 2×1000 ≥ 2000
	o := pipeFeed(t, w.bytes(), cfg, 1<<20, 4096)
	if o.reason != PrematureReset || w.frameAt(int(o.failAt)-1) != w.n()-1 {
		t.Fatalf("1000 resets of 2000 streams: reason %v at frame %d of %d", o.reason, w.frameAt(int(o.failAt)-1), w.n())
	}
}

func TestOldStreamResetsAreNotPremature(t *testing.T) {
	sc := &scriptConn{}
	// Age 600 ms, measured in quarters of 150 ms.
	g := New(sc, &Config{Limits: Limits{PrematureResetAge: 600 * time.Millisecond, RapidResetMax: 5}})
	w := newWire(true).settings()
	for sid := uint32(1); sid <= 19; sid += 2 {
		w.get(sid)
	}
	if err := feed(g, sc, w.bytes()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(650 * time.Millisecond)
	w = newWire(false)
	for sid := uint32(1); sid <= 19; sid += 2 {
		w.rst(sid)
	}
	if err := feed(g, sc, w.bytes()); err != nil || From(g).premature != 0 {
		t.Fatalf("resets of 650 ms old streams: %v, %d premature", err, From(g).premature)
	}
	// Streams 120 ms old are premature (certainly below 450 ms).
	w = newWire(false)
	for sid := uint32(21); sid <= 29; sid += 2 {
		w.get(sid)
	}
	if err := feed(g, sc, w.bytes()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	w = newWire(false)
	for sid := uint32(21); sid <= 29; sid += 2 {
		w.rst(sid)
	}
	if err := feed(g, sc, w.bytes()); err != nil || From(g).premature != 5 {
		t.Fatalf("resets of 120 ms old streams: %v, %d premature", err, From(g).premature)
	}
	if err := feed(g, sc, newWire(false).get(31).rst(31).bytes()); From(g).Reason() != RapidReset {
		t.Fatalf("sixth premature reset: %v, reason %v", err, From(g).Reason())
	}
}

func TestRapidResetWindowExpires(t *testing.T) {
	sc := &scriptConn{}
	g := New(sc, &Config{Limits: Limits{RapidResetMax: 3, RapidResetWindow: 30 * time.Millisecond}})
	if err := feed(g, sc, newWire(true).settings().bytes()); err != nil {
		t.Fatal(err)
	}
	sid := uint32(1)
	for round := range 3 {
		for range 3 {
			if err := feed(g, sc, newWire(false).get(sid).rst(sid).bytes()); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			sid += 2
		}
		time.Sleep(40 * time.Millisecond)
	}
	w := newWire(false)
	for range 4 {
		w.get(sid).rst(sid)
		sid += 2
	}
	if err := feed(g, sc, w.bytes()); From(g).Reason() != RapidReset {
		t.Fatalf("4 resets in a window: %v, reason %v", err, From(g).Reason())
	}
}

func TestEmptyFrames(t *testing.T) {
	t.Run("data", func(t *testing.T) {
		w := newWire(true).settings().get(1).data(1, 0, false)
		expectPass(t, w, nil)
		w.data(1, 0, false)
		expectClose(t, w, nil, EmptyFrames, w.n()-1)
	})
	t.Run("end stream and content break the run", func(t *testing.T) {
		w := newWire(true).settings()
		for sid := uint32(1); sid < 200; sid += 2 {
			w.data(sid, 0, false).data(sid, 0, true).data(sid, 0, false).data(sid, 1, false)
		}
		expectPass(t, w, nil)
	})
	t.Run("other frames do not break the run", func(t *testing.T) {
		w := newWire(true).settings().data(1, 0, false).ping(false).wu(1).data(1, 0, false)
		expectClose(t, w, nil, EmptyFrames, w.n()-1)
	})
	t.Run("padding only", func(t *testing.T) {
		w := newWire(true).settings().dataPadded(1, 5, 200, false).dataPadded(1, 0, 200, false)
		expectPass(t, w, nil)
		w.dataPadded(1, 0, 0, false) // the Pad Length byte alone
		expectClose(t, w, nil, EmptyFrames, w.n()-1)
	})
	t.Run("headers and continuation", func(t *testing.T) {
		w := newWire(true).settings().headers(1, nil, false, false)
		expectPass(t, w, nil)
		w.cont(1, nil, false)
		expectClose(t, w, nil, EmptyFrames, w.n()-1)
	})
	t.Run("headers with priority fields only", func(t *testing.T) {
		pr := []byte{0, 0, 0, 0, 15}
		w := newWire(true).settings()
		w.raw(http2.FrameHeaders, http2.FlagHeadersPriority|http2.FlagHeadersEndHeaders, 1, pr)
		w.raw(http2.FrameHeaders, http2.FlagHeadersPriority|http2.FlagHeadersEndHeaders, 1, pr)
		expectClose(t, w, nil, EmptyFrames, w.n()-1)
	})
	t.Run("limit", func(t *testing.T) {
		cfg := &Config{Limits: Limits{MaxConsecutiveEmptyFrames: 5}}
		w := newWire(true).settings()
		for range 5 {
			w.data(1, 0, false)
		}
		expectPass(t, w, cfg)
		w.data(1, 0, false)
		expectClose(t, w, cfg, EmptyFrames, w.n()-1)
		expectPass(t, w, &Config{Limits: Limits{MaxConsecutiveEmptyFrames: -1}})
	})
}

func TestHeaderBlock(t *testing.T) {
	big := bytes.Repeat([]byte{0x20}, 65536) // HPACK table size updates: no fields
	t.Run("size across continuations", func(t *testing.T) {
		w := newWire(true).settings().headers(1, big[:40000], false, false).cont(1, big[40000:], true)
		expectPass(t, w, nil)
		w = newWire(true).settings().headers(1, big[:40000], false, false).cont(1, big[40000:], false).cont(1, []byte{0x20}, true)
		expectClose(t, w, nil, HeaderBlockTooLarge, w.n()-1)
	})
	t.Run("size in one frame", func(t *testing.T) {
		w := newWire(true).settings().headers(1, append(big, 0x20), true, true)
		expectClose(t, w, nil, HeaderBlockTooLarge, 1)
	})
	t.Run("padding does not count", func(t *testing.T) {
		w := newWire(true).settings()
		w.mark(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: big, EndHeaders: true, PadLength: 255}))
		expectPass(t, w, nil)
	})
	t.Run("size-update flood", func(t *testing.T) {
		w := newWire(true).settings().headers(1, big[:16384], false, false)
		for range 3 {
			w.cont(1, big[:16384], false)
		}
		expectPass(t, w, nil)
		w.cont(1, big[:1], false)
		expectClose(t, w, nil, HeaderBlockTooLarge, w.n()-1)
	})
	t.Run("continuation count", func(t *testing.T) {
		w := newWire(true).settings()
		for sid := uint32(1); sid < 20; sid += 2 {
			w.headers(sid, []byte{0x82}, true, false)
			for i := range 16 {
				w.cont(sid, []byte{0x84}, i == 15)
			}
		}
		expectPass(t, w, nil)
		w.headers(21, []byte{0x82}, true, false)
		for range 17 {
			w.cont(21, []byte{0x84}, false)
		}
		expectClose(t, w, nil, ContinuationFlood, w.n()-1)
	})
	t.Run("limits", func(t *testing.T) {
		cfg := &Config{Limits: Limits{MaxHeaderBlockBytes: 100, MaxContinuationFrames: 2}}
		w := newWire(true).settings().headers(1, big[:50], false, false).cont(1, big[:50], true)
		expectPass(t, w, cfg)
		w.headers(3, big[:1], false, false).cont(3, big[:1], false).cont(3, big[:1], false).cont(3, big[:1], true)
		expectClose(t, w, cfg, ContinuationFlood, w.n()-1)
		w = newWire(true).settings().headers(1, big[:101], true, true)
		expectClose(t, w, cfg, HeaderBlockTooLarge, 1)
		off := &Config{Limits: Limits{MaxHeaderBlockBytes: -1, MaxContinuationFrames: -1}}
		w = newWire(true).settings().headers(1, big, false, false)
		for range 40 {
			w.cont(1, big[:1000], false)
		}
		expectPass(t, w, off)
	})
}

func TestFrameLargerThanMaxPassesThrough(t *testing.T) {
	// x/net answers frames over its SETTINGS_MAX_FRAME_SIZE with a GOAWAY
	// FRAME_SIZE_ERROR; the Conn only has to skip them correctly.
	w := newWire(true).settings().data(1, 1<<20+1, true).ping(false).data(1, 2<<20, true).get(3)
	for _, ch := range [][2]int{{1 << 20, 1 << 16}, {1 << 16, 1<<20 + 9}} {
		o := pipeFeed(t, w.bytes(), nil, ch[0], ch[1])
		if o.reason != None || o.delivered != len(w.bytes()) || !o.exact {
			t.Fatalf("chunking %v: reason %v, delivered %d of %d", ch, o.reason, o.delivered, len(w.bytes()))
		}
	}
	// The largest length a header can carry.
	sc := &scriptConn{}
	g := New(sc, nil)
	if err := feed(g, sc, append(newWire(true).settings().bytes(), 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 7)); err != nil {
		t.Fatal(err)
	}
	if From(g).skip != 1<<24-2 {
		t.Fatalf("skip %d", From(g).skip)
	}
}

func TestNotHTTP2PassesThrough(t *testing.T) {
	w := newWire(false)
	w.buf.WriteString("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	for range 50 {
		w.data(1, 0, false).ping(false) // would be floods in HTTP/2
	}
	expectPass(t, w, &Config{Limits: Limits{Ping: slow(1)}})
	// A preface that breaks off late is not HTTP/2 either.
	w = newWire(false)
	w.buf.WriteString(http2.ClientPreface[:20] + "XXXX")
	for range 50 {
		w.data(1, 0, false)
	}
	expectPass(t, w, nil)
}

func TestPrefaceRead(t *testing.T) {
	cfg := &Config{PrefaceRead: true}
	w := newWire(false).settings().get(1).data(1, 0, false)
	expectPass(t, w, cfg)
	w.data(1, 0, false)
	expectClose(t, w, cfg, EmptyFrames, w.n()-1)
}

func TestGoAway(t *testing.T) {
	w := newWire(true).settings().get(1).get(7).data(7, 0, false).data(7, 0, false)
	o := pipeFeed(t, w.bytes(), nil, 1<<20, 4096)
	ga := goAwayIn(o.fromConn)
	if ga == nil || ga.LastStreamID != 7 || ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %+v", ga)
	}

	// No GOAWAY in the middle of a server frame, nor after the server's own.
	for _, out := range [][]byte{
		serverFrame(t, func(fr *http2.Framer) error { return fr.WriteData(1, false, make([]byte, 100)) })[:50],
		serverFrame(t, func(fr *http2.Framer) error { return fr.WriteGoAway(1, http2.ErrCodeProtocol, nil) }),
	} {
		sc := &scriptConn{}
		g := New(sc, nil)
		if _, err := g.Write(out); err != nil {
			t.Fatal(err)
		}
		if err := feed(g, sc, newWire(true).settings().data(1, 0, false).data(1, 0, false).bytes()); From(g).Reason() != EmptyFrames {
			t.Fatalf("reason %v, err %v", From(g).Reason(), err)
		}
		if !sc.isClosed() || !bytes.Equal(sc.out.Bytes(), out) {
			t.Fatalf("closed %v, wrote %q after %q", sc.isClosed(), sc.out.Bytes()[len(out):], out)
		}
	}
}

func TestStatsOnCloseAndError(t *testing.T) {
	var stats Stats
	var calls atomic.Int32
	var last atomic.Value
	cfg := &Config{Stats: &stats, OnClose: func(c *Conn, r Reason) {
		calls.Add(1)
		last.Store(r)
		if c.Reason() != r {
			t.Errorf("OnClose: c.Reason() = %v, want %v", c.Reason(), r)
		}
	}}
	for _, b := range [][]byte{
		newWire(true).settings().data(1, 0, false).data(1, 0, false).bytes(),
		newWire(true).settings().headers(1, make([]byte, 70000), true, true).bytes(),
		newWire(true).settings().get(1).bytes(),
	} {
		sc := &scriptConn{}
		g := New(sc, cfg)
		err := feed(g, sc, b)
		if From(g).Reason() == None {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		var ge *Error
		if !errors.As(err, &ge) || ge.Reason != From(g).Reason() || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("error %v", err)
		}
		if _, err2 := g.Read(make([]byte, 10)); err2 != err {
			t.Fatalf("later Read: %v, want %v", err2, err)
		}
		if last.Load() != From(g).Reason() {
			t.Fatalf("OnClose got %v, want %v", last.Load(), From(g).Reason())
		}
	}
	if stats.Conns.Load() != 3 || stats.EmptyFrames.Load() != 1 || stats.HeaderBlockTooLarge.Load() != 1 || calls.Load() != 2 {
		t.Fatalf("conns %d, empty %d, header %d, OnClose calls %d", stats.Conns.Load(), stats.EmptyFrames.Load(), stats.HeaderBlockTooLarge.Load(), calls.Load())
	}
	total := uint64(0)
	for _, r := range Reasons() {
		total += stats.Closed(r)
		if r.String() == "" || r.String() == "unknown" || r.String() == "none" {
			t.Fatalf("reason %d has no name", r)
		}
	}
	if total != 2 || len(Reasons()) != int(numReasons)-1 {
		t.Fatalf("total %d over %d reasons", total, len(Reasons()))
	}
	if s := errs[RapidReset].Error(); s != "h2guard: connection closed: rapid_reset" {
		t.Fatal(s)
	}
}

func TestTLSConn(t *testing.T) {
	tc := New(&tlsScriptConn{}, nil)
	if _, ok := tc.(*TLSConn); !ok {
		t.Fatalf("New over a TLS conn: %T", tc)
	}
	if cs := tc.(*TLSConn).ConnectionState(); cs.ServerName != "x.test" {
		t.Fatalf("ConnectionState %+v", cs)
	}
	if From(tc) == nil || From(tc).NetConn() == nil {
		t.Fatal("From(TLSConn)")
	}
	pc := New(&scriptConn{}, nil)
	if _, ok := pc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		t.Fatal("a plain Conn must not look like TLS to http2.Server")
	}
	if From(pc) == nil || From(&scriptConn{}) != nil {
		t.Fatal("From")
	}
}

func TestResolveDefaults(t *testing.T) {
	r := (&Limits{}).resolve()
	if r.maxConts != 16 || r.maxBlock != 65536 || r.maxEmpty != 1 || r.rapidMax != 200 ||
		r.rapidWindow != int64(10*time.Second) || r.prematureQ != int64(250*time.Millisecond) ||
		r.minStreams != 500 || r.prioPerStream != 100 || r.wuPerData != 10 {
		t.Fatalf("%+v", r)
	}
	for k := range numKinds {
		if r.interval[k] != int64(10*time.Millisecond) || r.tau[k] != 999*int64(10*time.Millisecond) {
			t.Fatalf("bucket %d: %d %d", k, r.interval[k], r.tau[k])
		}
	}
	if r := (&Limits{MaxHeaderBlockBytes: 1 << 20}).resolve(); r.maxConts != 256 {
		t.Fatal(r.maxConts)
	}
	if r := (&Limits{MaxHeaderBlockBytes: 100}).resolve(); r.maxConts != 8 {
		t.Fatal(r.maxConts)
	}
	r = (&Limits{Ping: Rate{Burst: -1}, PrematureResetAge: -1, MaxHeaderBlockBytes: -1, WindowUpdatesPerDataFrame: 1 << 30,
		Settings: Rate{Burst: 1 << 30, PerSecond: 1e-12}}).resolve()
	if r.interval[kPing] >= 0 || r.prematureQ >= 0 || r.maxBlock >= 0 || r.maxConts != 8 || r.wuPerData != 1<<20 || r.tau[kSettings] <= 0 {
		t.Fatalf("%+v", r)
	}
}

// TestChunkingInvariance checks on pseudo-random frame sequences that where
// the Conn closes does not depend on how the bytes are split.
func TestChunkingInvariance(t *testing.T) {
	cfg := &Config{Limits: Limits{Ping: slow(20), Settings: slow(5), Priority: slow(10), PriorityPerStream: 3,
		RSTStream: slow(30), WindowUpdate: slow(10), Other: slow(10), MaxConsecutiveEmptyFrames: 2,
		MaxHeaderBlockBytes: 3000, MaxContinuationFrames: 4, RapidResetMax: 12}}
	seed := uint64(1)
	rnd := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % n
	}
	for iter := range 60 {
		w := newWire(true).settings()
		sid := uint32(1)
		for range 40 + rnd(80) {
			switch rnd(12) {
			case 0:
				w.get(sid)
				sid += 2
			case 1:
				w.rst(sid - 2)
			case 2:
				w.data(sid, rnd(3), rnd(4) == 0)
			case 3:
				w.dataPadded(sid, rnd(2), rnd(3), false)
			case 4:
				w.ping(rnd(3) == 0)
			case 5:
				w.wu(uint32(rnd(3)))
			case 6:
				w.prio(sid)
			case 7:
				w.settings()
			case 8:
				w.headers(sid, make([]byte, rnd(1500)), false, false)
				for range rnd(6) {
					w.cont(sid, make([]byte, rnd(800)), false)
				}
				w.cont(sid, nil, true)
				sid += 2
			case 9:
				w.raw(0xcc, 0, 0, make([]byte, rnd(20)))
			case 10:
				w.get(sid).rst(sid)
				sid += 2
			default:
				w.data(sid, 1+rnd(100), false)
			}
		}
		var ref outcome
		for i, ch := range [][2]int{{1 << 20, 1 << 16}, {1, 1}, {1 + rnd(20), 1 + rnd(20)}, {9, 4096}} {
			o := pipeFeed(t, w.bytes(), cfg, ch[0], ch[1])
			if !o.exact {
				t.Fatalf("iter %d chunking %v: bytes changed", iter, ch)
			}
			if i == 0 {
				ref = o
				continue
			}
			if o.reason != ref.reason || o.failAt != ref.failAt {
				t.Fatalf("iter %d chunking %v: %v at %d, whole: %v at %d", iter, ch, o.reason, o.failAt, ref.reason, ref.failAt)
			}
		}
		if testing.Verbose() && iter < 10 {
			fmt.Printf("iter %d: %d frames, %v at byte %d\n", iter, w.n(), ref.reason, ref.failAt)
		}
	}
}

// TestReadBufPassesBytesAndErrors: over cleartext, small reads are served
// from the buffer in order, a large read goes straight to the connection,
// and an error that came with buffered bytes is returned once they are read.
func TestReadBufPassesBytesAndErrors(t *testing.T) {
	a, b := net.Pipe()
	c := New(a, nil).(*Conn)
	if !c.rb.on {
		t.Fatal("a cleartext Conn reads without the buffer")
	}
	var in []byte
	in = append(in, clientPreface...)
	in = append(in, 0, 0, 8, fPing, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8)
	in = append(in, 0, 0, 0, fSettings, 0, 0, 0, 0, 0)
	go func() {
		b.Write(in)
		b.Close()
	}()
	var got []byte
	for _, n := range []int{9, 9, 6, 9, 8, 9, 9} {
		p := make([]byte, n)
		k, err := io.ReadFull(c, p)
		got = append(got, p[:k]...)
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got, in) {
		t.Fatalf("read %q, want %q", got, in)
	}
	if c.rb.b != nil {
		t.Error("the drained buffer was kept")
	}
	if _, err := c.Read(make([]byte, 9)); err != io.EOF {
		t.Errorf("after the bytes: %v, want EOF", err)
	}
}
