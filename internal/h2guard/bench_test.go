package h2guard

import (
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// loopConn serves the same bytes over and over, and discards writes.
type loopConn struct {
	scriptConn
	data []byte
	off  int
}

func (l *loopConn) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off += n
	if l.off == len(l.data) {
		l.off = 0
	}
	return n, nil
}

func (l *loopConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkConnRead reads frame streams the way http2.Server does (9-byte
// header, then the payload) through a Conn, and bare for comparison.
func BenchmarkConnRead(b *testing.B) {
	requests := newWire(false)
	for sid := uint32(1); sid < 20; sid += 2 {
		requests.get(sid).data(sid, 4096, false).data(sid, 1024, true)
	}
	control := newWire(false).ping(false).ping(true).wu(0).wu(1).prio(1).settings().rst(1).data(1, 100, false)
	control.headers(3, make([]byte, 100), false, false).cont(3, make([]byte, 100), true).dataPadded(3, 10, 5, true)
	off := Rate{Burst: -1}
	many := Rate{Burst: 1 << 30, PerSecond: 1e9}
	offLimits := Limits{Ping: off, Settings: off, Priority: off, RSTStream: off, WindowUpdate: off, Other: off,
		RapidResetMax: -1, PrematureResetMinStreams: -1}
	for _, bc := range []struct {
		name  string
		w     *wire
		guard bool
		lim   Limits
	}{
		{"requests/bare", requests, false, Limits{}},
		{"requests/guard", requests, true, Limits{}},
		{"control/bare", control, false, offLimits},
		{"control/guard", control, true, offLimits},
		// Buckets on (never empty): the clock is read once per Read.
		{"control/guard-buckets", control, true, Limits{Ping: many, Settings: many, Priority: many, RSTStream: many,
			WindowUpdate: many, Other: many, RapidResetMax: -1, PrematureResetMinStreams: -1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lc := &loopConn{data: bc.w.bytes()}
			var c net.Conn = lc
			if bc.guard {
				c = New(lc, &Config{PrefaceRead: true, Limits: bc.lim})
			}
			hdr := make([]byte, 9)
			payload := make([]byte, 1<<16)
			frames := bc.w.n()
			b.SetBytes(int64(len(lc.data)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for range frames {
					if _, err := io.ReadFull(c, hdr); err != nil {
						b.Fatal(err)
					}
					n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
					if _, err := io.ReadFull(c, payload[:n]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/frame")
			if g := From(c); g != nil && g.Reason() != None {
				b.Fatalf("closed for %v", g.Reason())
			}
		})
	}
}

// BenchmarkConnWrite writes server frames (HEADERS and DATA) through a Conn.
func BenchmarkConnWrite(b *testing.B) {
	w := newWire(false)
	for sid := uint32(1); sid < 20; sid += 2 {
		w.mark(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: make([]byte, 40), EndHeaders: true}))
		w.data(sid, 16384, false).data(sid, 100, true)
	}
	data := w.bytes()
	c := New(&loopConn{}, nil)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// In pieces, as a bufio.Writer flushes.
		for off := 0; off < len(data); off += 4096 {
			if _, err := c.Write(data[off:min(off+4096, len(data))]); err != nil {
				b.Fatal(err)
			}
		}
	}
}
