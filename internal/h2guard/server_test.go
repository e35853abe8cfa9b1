package h2guard

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// h2Server serves HTTP/2 with x/net's http2.Server on a loopback listener,
// each connection behind a Conn (or bare when cfg is nil).
type h2Server struct {
	addr    string
	stats   Stats
	mu      sync.Mutex
	reasons []Reason
	wg      sync.WaitGroup
}

func handler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/big":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		buf := make([]byte, 32<<10)
		for n > 0 {
			k := min(n, len(buf))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	case "/echo":
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	case "/slow":
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	case "/tls":
		if r.TLS == nil {
			w.WriteHeader(500)
			return
		}
		fmt.Fprint(w, r.TLS.ServerName)
	default:
		fmt.Fprint(w, "ok")
	}
}

func startServer(t *testing.T, guard bool, lim Limits) *h2Server {
	t.Helper()
	return startServerTLS(t, guard, lim, nil)
}

// startServerTLS is startServer with TLS when tc is not nil.
func startServerTLS(t *testing.T, guard bool, lim Limits, tc *tls.Config) *h2Server {
	t.Helper()
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h2Server{addr: ln.Addr().String()}
	cfg := &Config{Limits: lim, Stats: &s.stats, OnClose: func(c *Conn, r Reason) {
		s.mu.Lock()
		s.reasons = append(s.reasons, r)
		s.mu.Unlock()
	}}
	srv := &http2.Server{MaxConcurrentStreams: 100}
	base := &http.Server{MaxHeaderBytes: 65536, ErrorLog: nil}
	conns := make(map[net.Conn]bool)
	var cmu sync.Mutex
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns[nc] = true
			cmu.Unlock()
			c := nc
			if tc != nil {
				tlsConn := tls.Server(nc, tc)
				tlsConn.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tlsConn.Handshake(); err != nil {
					nc.Close()
					continue
				}
				tlsConn.SetDeadline(time.Time{})
				c = tlsConn
			}
			if guard {
				c = New(c, cfg)
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				srv.ServeConn(c, &http2.ServeConnOpts{Handler: http.HandlerFunc(handler), BaseConfig: base})
				c.Close()
				cmu.Lock()
				delete(conns, nc)
				cmu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for c := range conns {
			c.Close()
		}
		cmu.Unlock()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ServeConn did not return")
		}
		// Handlers and x/net's goroutines end too.
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
	})
	return s
}

func (s *h2Server) closedFor() []Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Reason(nil), s.reasons...)
}

// rawClient speaks HTTP/2 with a Framer. A goroutine reads the server's
// frames: it acknowledges SETTINGS, returns flow control for DATA (one
// connection and one stream WINDOW_UPDATE per DATA frame) and records what
// came.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	wmu  sync.Mutex
	fr   *http2.Framer
	hb   bytes.Buffer
	enc  *hpack.Encoder

	mu       sync.Mutex
	status   map[uint32]string
	body     map[uint32]int
	ended    map[uint32]bool
	resets   int
	pingAcks int
	acked    bool // the server's first SETTINGS is acknowledged
	goAway   *http2.GoAwayFrame
	goDebug  string
	readErr  error
	readDone chan struct{}
}

func dial(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawClient{t: t, conn: conn, status: map[uint32]string{}, body: map[uint32]int{},
		ended: map[uint32]bool{}, readDone: make(chan struct{})}
	c.fr = http2.NewFramer(conn, conn)
	c.fr.AllowIllegalWrites = true
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hb)
	t.Cleanup(func() {
		conn.Close()
		<-c.readDone
	})
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
	go c.read()
	// Nothing of the reader's may fall between the frames of a header block.
	c.waitFor("the server's SETTINGS", func() bool { return c.acked })
	return c
}

func (c *rawClient) read() {
	defer close(c.readDone)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.mu.Unlock()
				c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				c.mu.Lock()
				c.acked = true
			}
		case *http2.PingFrame:
			if f.IsAck() {
				c.pingAcks++
			}
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" {
				c.status[f.StreamID] = s
			}
			if f.StreamEnded() {
				c.ended[f.StreamID] = true
			}
		case *http2.DataFrame:
			n := len(f.Data())
			c.body[f.StreamID] += n
			if f.StreamEnded() {
				c.ended[f.StreamID] = true
			}
			if n > 0 {
				sid := f.StreamID
				end := f.StreamEnded()
				c.mu.Unlock()
				c.write(func(fr *http2.Framer) error {
					if err := fr.WriteWindowUpdate(0, uint32(n)); err != nil || end {
						return err
					}
					return fr.WriteWindowUpdate(sid, uint32(n))
				})
				c.mu.Lock()
			}
		case *http2.RSTStreamFrame:
			c.resets++
			c.ended[f.StreamID] = true
		case *http2.GoAwayFrame:
			c.goAway = f
			c.goDebug = string(f.DebugData())
		}
		c.mu.Unlock()
	}
}

// write runs fn on the Framer; errors (the server hung up) are returned.
func (c *rawClient) write(fn func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return fn(c.fr)
}

func (c *rawClient) block(method, path string) []byte {
	c.hb.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "example.test"}, {Name: ":path", Value: path},
	} {
		_ = c.enc.WriteField(f)
	}
	return c.hb.Bytes()
}

func (c *rawClient) request(sid uint32, method, path string, endStream bool) error {
	return c.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: c.block(method, path),
			EndStream: endStream, EndHeaders: true})
	})
}

// waitFor polls cond (under c.mu) until it holds or 10 s pass.
func (c *rawClient) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// flood writes frames until the server hangs up or n frames are written.
func (c *rawClient) flood(n int, fn func(fr *http2.Framer, i int) error) int {
	for i := range n {
		if err := c.write(func(fr *http2.Framer) error { return fn(fr, i) }); err != nil {
			return i
		}
	}
	return n
}

// expectGuardClose waits for the server to hang up and checks why.
func (c *rawClient) expectGuardClose(s *h2Server, r Reason) {
	c.t.Helper()
	select {
	case <-c.readDone:
	case <-time.After(10 * time.Second):
		c.t.Fatal("the server did not close the connection")
	}
	c.mu.Lock()
	ga, debug, rerr := c.goAway, c.goDebug, c.readErr
	c.mu.Unlock()
	if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || debug != "h2guard: "+r.String() {
		c.t.Fatalf("GOAWAY %v %q (the read ended with %v), want ENHANCE_YOUR_CALM for %v", ga, debug, rerr, r)
	}
	// OnClose runs after the close the client sees.
	deadline := time.Now().Add(5 * time.Second)
	for len(s.closedFor()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := s.closedFor(); len(got) != 1 || got[0] != r || s.stats.Closed(r) != 1 {
		c.t.Fatalf("closed for %v (stats %d), want %v", got, s.stats.Closed(r), r)
	}
}

// alive checks the connection still works: a PING round trip and a request.
func (c *rawClient) alive(sid uint32) {
	c.t.Helper()
	c.mu.Lock()
	acks := c.pingAcks
	c.mu.Unlock()
	if err := c.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{9}) }); err != nil {
		c.t.Fatalf("connection gone: %v", err)
	}
	c.waitFor("a PING ACK", func() bool { return c.pingAcks > acks || c.readErr != nil })
	if err := c.request(sid, "GET", "/", true); err != nil {
		c.t.Fatal(err)
	}
	c.waitFor("a response", func() bool { return c.ended[sid] || c.readErr != nil })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr != nil || c.status[sid] != "200" || c.goAway != nil {
		c.t.Fatalf("connection broken: %v, status %q, GOAWAY %v", c.readErr, c.status[sid], c.goAway)
	}
}

func TestServerNormalTraffic(t *testing.T) {
	s := startServer(t, true, Limits{})
	c := dial(t, s.addr)
	sid := uint32(1)
	// 400 requests, 50 at a time, each batch with pings and priorities.
	for range 8 {
		first := sid
		for range 50 {
			if err := c.request(sid, "GET", "/", true); err != nil {
				t.Fatal(err)
			}
			sid += 2
		}
		c.write(func(fr *http2.Framer) error {
			if err := fr.WritePing(false, [8]byte{1}); err != nil {
				return err
			}
			return fr.WritePriority(sid, http2.PriorityParam{Weight: 10})
		})
		last := sid - 2
		c.waitFor("a batch", func() bool {
			for id := first; id <= last; id += 2 {
				if !c.ended[id] {
					return false
				}
			}
			return true
		})
	}
	// Downloads bigger than the windows: the client answers every DATA frame
	// with WINDOW_UPDATEs.
	big := []uint32{}
	for range 4 {
		if err := c.request(sid, "GET", "/big?n=3000000", true); err != nil {
			t.Fatal(err)
		}
		big = append(big, sid)
		sid += 2
	}
	// An upload in DATA frames, the last one empty with END_STREAM.
	up := sid
	sid += 2
	c.request(up, "POST", "/echo", false)
	for range 6 {
		c.write(func(fr *http2.Framer) error { return fr.WriteData(up, false, make([]byte, 10000)) })
	}
	c.write(func(fr *http2.Framer) error { return fr.WriteData(up, true, nil) })
	// One cancelled request.
	c.request(sid, "GET", "/slow", true)
	c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(sid, http2.ErrCodeCancel) })
	sid += 2
	c.waitFor("the downloads", func() bool {
		for _, id := range big {
			if !c.ended[id] {
				return false
			}
		}
		return c.ended[up]
	})
	c.mu.Lock()
	for _, id := range big {
		if c.body[id] != 3000000 {
			t.Errorf("stream %d: %d bytes", id, c.body[id])
		}
	}
	if c.status[up] != "200" || c.body[up] != 5 {
		t.Errorf("upload: %q %d", c.status[up], c.body[up])
	}
	for id := uint32(1); id < big[0]; id += 2 {
		if c.status[id] != "200" {
			t.Fatalf("stream %d: status %q", id, c.status[id])
		}
	}
	c.mu.Unlock()
	// Pings with their ACKs awaited.
	for i := range 50 {
		c.mu.Lock()
		acks := c.pingAcks
		c.mu.Unlock()
		c.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{byte(i)}) })
		c.waitFor("a PING ACK", func() bool { return c.pingAcks > acks })
	}
	c.alive(sid)
	if r := s.closedFor(); len(r) != 0 {
		t.Fatalf("closed for %v", r)
	}
}

func TestServerGoClient(t *testing.T) {
	s := startServer(t, true, Limits{})
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	get := func(path string) (int, error) {
		resp, err := cl.Get("http://" + s.addr + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		return int(n), err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/"
			if i%50 == 0 {
				path = "/big?n=4000000" // Go's Transport sends a WINDOW_UPDATE per 4 KiB read
			}
			if _, err := get(path); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/slow", nil)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := cl.Do(req); err == nil {
		t.Fatal("cancelled request succeeded")
	}
	if n, err := get("/big?n=1000"); err != nil || n != 1000 {
		t.Fatal(n, err)
	}
	if r := s.closedFor(); len(r) != 0 {
		t.Fatalf("closed for %v over %d connections", r, s.stats.Conns.Load())
	}
}

// sizeUpdates is a header block fragment of HPACK dynamic table size
// updates (to 4096, which keeps the table usable afterwards): it decodes to
// no header field, so x/net's header list budget never runs out.
var sizeUpdates = bytes.Repeat([]byte{0x3f, 0xe1, 0x1f}, 16383/3)

// floods, each against the default limits unless lim says otherwise.
var floods = []struct {
	name   string
	lim    Limits
	reason Reason
	n      int
	setup  func(c *rawClient)
	frame  func(c *rawClient, fr *http2.Framer, i int) error
}{
	{"ping", Limits{}, PingFlood, 5000, nil, func(c *rawClient, fr *http2.Framer, i int) error {
		return fr.WritePing(false, [8]byte{byte(i)})
	}},
	{"settings", Limits{}, SettingsFlood, 5000, nil, func(c *rawClient, fr *http2.Framer, i int) error {
		return fr.WriteSettings()
	}},
	{"window_update", Limits{}, WindowUpdateFlood, 5000, nil, func(c *rawClient, fr *http2.Framer, i int) error {
		return fr.WriteWindowUpdate(0, 1)
	}},
	{"priority", Limits{}, PriorityFlood, 5000, nil, func(c *rawClient, fr *http2.Framer, i int) error {
		return fr.WritePriority(3, http2.PriorityParam{Weight: uint8(i)})
	}},
	{"rst_stream", Limits{RapidResetMax: -1, PrematureResetMinStreams: -1}, RSTStreamFlood, 5000,
		func(c *rawClient) { c.request(1, "GET", "/", true) },
		func(c *rawClient, fr *http2.Framer, i int) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) }},
	{"rapid_reset", Limits{}, RapidReset, 5000, nil, func(c *rawClient, fr *http2.Framer, i int) error {
		sid := uint32(1 + 2*i)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: c.block("GET", "/slow"),
			EndStream: true, EndHeaders: true}); err != nil {
			return err
		}
		return fr.WriteRSTStream(sid, http2.ErrCodeCancel)
	}},
	{"empty_data", Limits{}, EmptyFrames, 5000,
		func(c *rawClient) { c.request(1, "POST", "/echo", false) },
		func(c *rawClient, fr *http2.Framer, i int) error { return fr.WriteData(1, false, nil) }},
	{"continuation_size_updates", Limits{}, HeaderBlockTooLarge, 5000,
		func(c *rawClient) {
			c.write(func(fr *http2.Framer) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x20}})
			})
		},
		func(c *rawClient, fr *http2.Framer, i int) error {
			return fr.WriteContinuation(1, false, sizeUpdates)
		}},
	{"continuation_count", Limits{}, ContinuationFlood, 5000,
		func(c *rawClient) {
			c.write(func(fr *http2.Framer) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x20}})
			})
		},
		func(c *rawClient, fr *http2.Framer, i int) error { return fr.WriteContinuation(1, false, []byte{0x20}) }},
	{"ping_ack", Limits{}, OtherFlood, 5000, nil, func(c *rawClient, fr *http2.Framer, i int) error {
		return fr.WritePing(true, [8]byte{byte(i)})
	}},
}

func TestServerFloods(t *testing.T) {
	for _, f := range floods {
		t.Run(f.name, func(t *testing.T) {
			s := startServer(t, true, f.lim)
			c := dial(t, s.addr)
			if f.setup != nil {
				f.setup(c)
			}
			sent := c.flood(f.n, func(fr *http2.Framer, i int) error { return f.frame(c, fr, i) })
			c.expectGuardClose(s, f.reason)
			if sent == f.n {
				t.Logf("all %d frames written before the close was seen", sent)
			}
		})
	}
}

// TestServerXNetAlone documents what x/net v0.62.0 lets through without a
// Conn in front: after each flood the connection still answers. If one of
// these starts failing, x/net has grown a defence of its own; update the
// package documentation.
func TestServerXNetAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("baseline of x/net's own behaviour")
	}
	for _, f := range floods {
		switch f.name {
		case "ping", "settings", "window_update", "priority", "empty_data", "continuation_size_updates", "ping_ack":
		default:
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			s := startServer(t, false, Limits{})
			c := dial(t, s.addr)
			if f.setup != nil {
				f.setup(c)
			}
			n := 3000
			if f.name == "continuation_size_updates" {
				n = 256 // 4 MiB of header block, 64 times max_header_bytes
			}
			if sent := c.flood(n, func(fr *http2.Framer, i int) error { return f.frame(c, fr, i) }); sent != n {
				t.Fatalf("x/net hung up after %d frames", sent)
			}
			if f.name == "continuation_size_updates" {
				// End the block with a real request: x/net serves it.
				c.write(func(fr *http2.Framer) error { return fr.WriteContinuation(1, true, c.block("GET", "/")) })
				c.waitFor("the response", func() bool { return c.ended[1] || c.readErr != nil })
				c.mu.Lock()
				st := c.status[1]
				c.mu.Unlock()
				if st != "200" {
					t.Fatalf("status %q", st)
				}
				c.alive(3)
				return
			}
			c.alive(101)
		})
	}
	t.Run("rapid_reset", func(t *testing.T) {
		// x/net bounds the handlers running (MaxConcurrentStreams) and
		// queued (4×), not the rate of resets: 2000 streams opened and reset
		// in batches of 50 pass.
		s := startServer(t, false, Limits{})
		c := dial(t, s.addr)
		sid := uint32(1)
		for range 40 {
			for range 50 {
				err := c.write(func(fr *http2.Framer) error {
					if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: c.block("GET", "/"),
						EndStream: true, EndHeaders: true}); err != nil {
						return err
					}
					return fr.WriteRSTStream(sid, http2.ErrCodeCancel)
				})
				if err != nil {
					t.Fatal(err)
				}
				sid += 2
			}
			c.alive(sid)
			sid += 2
		}
	})
}

func TestServerTLS(t *testing.T) {
	ca := testenv.NewCA(t, "Test CA")
	s := startServerTLS(t, true, Limits{}, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, testenv.Leaf{Names: []string{"h2.test"}}).Pair},
		NextProtos:   []string{"h2"}, MinVersion: tls.VersionTLS12,
	})
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "h2.test"}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range 20 {
		resp, err := cl.Get("https://" + s.addr + "/tls")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// x/net saw the TLS state through the TLSConn.
		if resp.StatusCode != 200 || string(b) != "h2.test" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	}
	if r := s.closedFor(); len(r) != 0 || s.stats.Conns.Load() == 0 {
		t.Fatalf("closed for %v, %d connections", r, s.stats.Conns.Load())
	}
}
