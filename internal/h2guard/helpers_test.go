package h2guard

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// wire builds a client's byte stream with an http2.Framer and remembers where
// each frame ends.
type wire struct {
	buf  bytes.Buffer
	fr   *http2.Framer
	ends []int // ends[i]: offset just past frame i (the preface is not a frame)
	hb   bytes.Buffer
	enc  *hpack.Encoder
}

func newWire(preface bool) *wire {
	w := &wire{}
	w.fr = http2.NewFramer(&w.buf, nil)
	w.fr.AllowIllegalWrites = true
	w.enc = hpack.NewEncoder(&w.hb)
	if preface {
		w.buf.WriteString(http2.ClientPreface)
	}
	return w
}

func (w *wire) mark(err error) *wire {
	if err != nil {
		panic(err)
	}
	w.ends = append(w.ends, w.buf.Len())
	return w
}

func (w *wire) bytes() []byte { return w.buf.Bytes() }
func (w *wire) n() int        { return len(w.ends) }

// frameAt returns the index of the frame holding byte off.
func (w *wire) frameAt(off int) int {
	for i, e := range w.ends {
		if off < e {
			return i
		}
	}
	return len(w.ends)
}

func (w *wire) settings() *wire    { return w.mark(w.fr.WriteSettings()) }
func (w *wire) settingsAck() *wire { return w.mark(w.fr.WriteSettingsAck()) }
func (w *wire) ping(ack bool) *wire {
	return w.mark(w.fr.WritePing(ack, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}))
}
func (w *wire) rst(sid uint32) *wire { return w.mark(w.fr.WriteRSTStream(sid, http2.ErrCodeCancel)) }
func (w *wire) wu(sid uint32) *wire  { return w.mark(w.fr.WriteWindowUpdate(sid, 1)) }
func (w *wire) prio(sid uint32) *wire {
	return w.mark(w.fr.WritePriority(sid, http2.PriorityParam{StreamDep: 0, Weight: 15}))
}
func (w *wire) data(sid uint32, n int, end bool) *wire {
	return w.mark(w.fr.WriteData(sid, end, make([]byte, n)))
}
func (w *wire) dataPadded(sid uint32, n, pad int, end bool) *wire {
	return w.mark(w.fr.WriteDataPadded(sid, end, make([]byte, n), make([]byte, pad)))
}
func (w *wire) raw(t http2.FrameType, flags http2.Flags, sid uint32, payload []byte) *wire {
	return w.mark(w.fr.WriteRawFrame(t, flags, sid, payload))
}

// block HPACK-encodes a GET request for path.
func (w *wire) block(path string, extra ...string) []byte {
	w.hb.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "example.test"}, {Name: ":path", Value: path},
	} {
		_ = w.enc.WriteField(f)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		_ = w.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return bytes.Clone(w.hb.Bytes())
}

// get sends a complete GET on sid in one HEADERS frame.
func (w *wire) get(sid uint32) *wire {
	return w.mark(w.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: sid, BlockFragment: w.block("/"), EndStream: true, EndHeaders: true,
	}))
}

func (w *wire) headers(sid uint32, frag []byte, endStream, endHeaders bool) *wire {
	return w.mark(w.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: sid, BlockFragment: frag, EndStream: endStream, EndHeaders: endHeaders,
	}))
}

func (w *wire) cont(sid uint32, frag []byte, end bool) *wire {
	return w.mark(w.fr.WriteContinuation(sid, end, frag))
}

// scriptConn is a net.Conn whose Read returns queued chunks, for driving a
// Conn from the test goroutine alone.
type scriptConn struct {
	mu     sync.Mutex
	in     [][]byte
	out    bytes.Buffer
	closed bool
}

func (s *scriptConn) push(b []byte, chunk int) {
	for len(b) > 0 {
		k := min(chunk, len(b))
		s.in = append(s.in, b[:k])
		b = b[k:]
	}
}

func (s *scriptConn) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	if len(s.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.in[0])
	if n == len(s.in[0]) {
		s.in = s.in[1:]
	} else {
		s.in[0] = s.in[0][n:]
	}
	return n, nil
}

func (s *scriptConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	return s.out.Write(p)
}

func (s *scriptConn) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *scriptConn) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (*scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (*scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (*scriptConn) SetDeadline(time.Time) error      { return nil }
func (*scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (*scriptConn) SetWriteDeadline(time.Time) error { return nil }

type tlsScriptConn struct{ scriptConn }

func (*tlsScriptConn) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{Version: tls.VersionTLS13, ServerName: "x.test"}
}

// drain reads c until it fails and returns the bytes read and the error.
func drain(c net.Conn, readSize int) (int, error) {
	buf := make([]byte, readSize)
	total := 0
	for {
		n, err := c.Read(buf)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// outcome of feeding a byte stream through a Conn over net.Pipe.
type outcome struct {
	delivered int    // bytes Read returned before failing
	exact     bool   // the delivered bytes equal the input's prefix
	err       error  // Read's final error
	fromConn  []byte // what the client received (a GOAWAY)
	reason    Reason
	failAt    int64 // Conn.failAt
}

// pipeFeed writes data into a Conn over net.Pipe in chunks of chunk bytes
// while a goroutine reads it readSize bytes at a time.
func pipeFeed(t *testing.T, data []byte, cfg *Config, chunk, readSize int) outcome {
	t.Helper()
	cli, srv := net.Pipe()
	g := New(srv, cfg)
	var o outcome
	var progress atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, readSize)
		o.exact = true
		for {
			n, err := g.Read(buf)
			if n > 0 && !bytes.Equal(buf[:n], data[o.delivered:o.delivered+n]) {
				o.exact = false
			}
			o.delivered += n
			progress.Store(int64(o.delivered))
			if err != nil {
				o.err = err
				return
			}
		}
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(cli)
		got <- b
	}()
	for off := 0; off < len(data); off += chunk {
		if _, err := cli.Write(data[off:min(off+chunk, len(data))]); err != nil {
			break
		}
	}
	// Wait until the reader has counted everything or failed.
	deadline := time.Now().Add(10 * time.Second)
wait:
	for progress.Load() < int64(len(data)) && time.Now().Before(deadline) {
		select {
		case <-done:
			break wait
		case <-time.After(100 * time.Microsecond):
		}
	}
	cli.Close()
	<-done
	o.fromConn = <-got
	o.reason = From(g).Reason()
	o.failAt = From(g).failAt
	var ge *Error
	if o.reason != None && (!errors.As(o.err, &ge) || ge.Reason != o.reason) {
		t.Errorf("Read error %v, want *Error for %v", o.err, o.reason)
	}
	return o
}

// goAwayIn parses frames and returns the GOAWAY among them, if any.
func goAwayIn(b []byte) *http2.GoAwayFrame {
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga
		}
	}
}

// slow: token buckets that never refill during a test, for exact counts.
func slow(burst int) Rate { return Rate{Burst: burst, PerSecond: 1e-6} }
