package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose reads return the scripted chunks in order
// (each possibly over several Reads), then io.EOF.
type scriptConn struct {
	reads [][]byte
	loop  []byte // when set, every Read returns it whole, forever
	wrote bytes.Buffer
}

func script(chunks ...string) *scriptConn {
	c := &scriptConn{}
	for _, s := range chunks {
		c.reads = append(c.reads, []byte(s))
	}
	return c
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.loop != nil {
		return copy(p, c.loop), nil
	}
	for len(c.reads) > 0 && len(c.reads[0]) == 0 {
		c.reads = c.reads[1:]
	}
	if len(c.reads) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.reads[0])
	c.reads[0] = c.reads[0][n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error)      { return c.wrote.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// readAll reads c with a buffer of size bytes until an error, which it
// returns unless it is io.EOF.
func readAll(c net.Conn, size int) ([]byte, error) {
	var out []byte
	p := make([]byte, size)
	for {
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// splits returns s delivered in pieces of every size in sizes.
func splits(s string, sizes ...int) map[string][]string {
	m := map[string][]string{"whole": {s}}
	for _, n := range sizes {
		var parts []string
		for i := 0; i < len(s); i += n {
			parts = append(parts, s[i:min(i+n, len(s))])
		}
		m["pieces of "+itoa(int64(n))] = parts
	}
	return m
}

func synthetic(token string) string {
	return "GET / HTTP/1.1\r\nHost: " + token + "\r\nConnection: close\r\n\r\n"
}

var pipelined = crlf("GET /a HTTP/1.1\nHost: a\n\n" +
	"POST /b HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello" +
	"PUT /c HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n" +
	"5;x=\"y\"\nhello\n6\n world\n0\nX-Sum: 1\n\n" +
	"GET /d HTTP/1.0\n\n")

func TestConnPassesValidRequests(t *testing.T) {
	for name, parts := range splits(pipelined, 1, 3, 17, 100) {
		for _, size := range []int{1, 7, 4096} {
			c := NewConn(script(parts...), Limits{})
			out, err := readAll(c, size)
			if err != nil || string(out) != pipelined {
				t.Fatalf("%s, reads of %d: got %q, %v\nwant %q", name, size, out, err, pipelined)
			}
			if status, reason, ok := c.Rejection(); ok || c.RejectToken() != "" {
				t.Fatalf("%s, reads of %d: refused %d %q", name, size, status, reason)
			}
		}
	}
}

func TestConnDropsEmptyLinesBetweenRequests(t *testing.T) {
	in := crlf("\nPOST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nok\n" + get)
	want := crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nok" + get)
	for name, parts := range splits(in, 1, 5) {
		out, err := readAll(NewConn(script(parts...), Limits{}), 4096)
		if err != nil || string(out) != want {
			t.Errorf("%s: got %q, %v, want %q", name, out, err, want)
		}
	}
}

func TestConnRefuses(t *testing.T) {
	good := crlf(get)
	head := crlf("POST /up HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n")
	tests := []struct {
		name      string
		reads     []string
		lim       Limits
		wantOut   string // before the synthetic request or the error
		status    int
		synthetic bool // else Read fails with ErrMalformed
	}{
		{name: "bad head", reads: []string{crlf("GET / HTTP/1.1\nHost : a\n\n")}, status: 400, synthetic: true},
		{name: "good then bad in one read", reads: []string{good + crlf("TRACE / HTTP/1.1\nHost: a\n\n")}, wantOut: good, status: 405, synthetic: true},
		{name: "good then bad in two reads", reads: []string{good, crlf("GET / HTTP/1.1\nContent-Length: 1\nContent-Length: 1\nHost: a\n\n")}, wantOut: good, status: 400, synthetic: true},
		{name: "good, then a bare CR", reads: []string{good + "GET /x HTTP/1.1\r\nHost: a\r\rX\r\n\r\n"}, wantOut: good, status: 400, synthetic: true},
		{name: "bad chunk in the read of its head", reads: []string{good + head + "5\r\nhello\r\nzz\r\n"}, wantOut: good, status: 400, synthetic: true},
		{name: "bad chunk after the head was returned", reads: []string{head + "5\r\nhello\r\n", "zz\r\n"}, wantOut: head + "5\r\nhello\r\n", status: 400},
		{name: "missing CRLF after chunk data, late", reads: []string{head, "5\r\nhelloX"}, wantOut: head + "5\r\nhello", status: 400},
		{name: "URI too long, arriving slowly", reads: append([]string{"GET /"}, strings.Split(strings.Repeat("a", 9000), "")...), status: 414, synthetic: true},
		{name: "head too large", reads: []string{"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 200)}, lim: Limits{MaxHeaderBytes: 100}, status: 431, synthetic: true},
		{name: "preface not first", reads: []string{good + crlf("PRI * HTTP/2.0\n\nSM\n\n")}, wantOut: good, status: 400, synthetic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConn(script(tt.reads...), tt.lim)
			out, err := readAll(c, 4096)
			status, reason, ok := c.Rejection()
			if !ok || status != tt.status {
				t.Fatalf("Rejection() = (%d, %q, %v), want status %d", status, reason, ok, tt.status)
			}
			want := tt.wantOut
			if tt.synthetic {
				tok := c.RejectToken()
				if len(tok) != 32 {
					t.Fatalf("RejectToken() = %q, want 32 hex digits", tok)
				}
				want += synthetic(tok)
				if err != nil {
					t.Fatalf("Read error %v, want io.EOF after the synthetic request", err)
				}
			} else {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Read error %v, want ErrMalformed", err)
				}
				if c.RejectToken() != "" {
					t.Fatalf("RejectToken() = %q without a synthetic request", c.RejectToken())
				}
			}
			if string(out) != want {
				t.Fatalf("got  %q\nwant %q", out, want)
			}
			// Refused for good: later Reads keep failing the same way.
			if n, again := c.Read(make([]byte, 10)); n != 0 || (again != io.EOF && !errors.Is(again, ErrMalformed)) {
				t.Fatalf("Read after the end = (%d, %v)", n, again)
			}
		})
	}
}

func TestConnTokensDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 10 {
		c := NewConn(script("\x16\x03\x01"), Limits{})
		if _, err := readAll(c, 64); err != nil {
			t.Fatal(err)
		}
		tok := c.RejectToken()
		if seen[tok] || strings.Trim(tok, "0123456789abcdef") != "" {
			t.Fatalf("token %q repeated or not hex", tok)
		}
		seen[tok] = true
	}
}

func TestConnUpgradePassesThrough(t *testing.T) {
	up := crlf("GET /ws HTTP/1.1\nHost: a\nConnection: Upgrade\nUpgrade: websocket\n\n")
	frames := "\x81\x85\x00\x00\x00\x00hello\x00\r\r\nGET / HTTP/9.9\r\n\r\n"
	for name, parts := range splits(crlf(get)+up+frames, 1, 10) {
		c := NewConn(script(parts...), Limits{})
		out, err := readAll(c, 4096)
		if err != nil || string(out) != crlf(get)+up+frames {
			t.Errorf("%s: got %q, %v", name, out, err)
		}
		if _, _, ok := c.Rejection(); ok {
			t.Errorf("%s: refused", name)
		}
	}
}

func TestConnUpgradeOtherThanWebSocketIsStillParsed(t *testing.T) {
	in := crlf("GET / HTTP/1.1\nHost: a\nConnection: Upgrade\nUpgrade: h2c\n\n") + "\x00\x00\x12\x04"
	c := NewConn(script(in), Limits{})
	if _, err := readAll(c, 4096); err != nil {
		t.Fatal(err)
	}
	if status, _, ok := c.Rejection(); !ok || status != 400 {
		t.Errorf("Rejection() = %d, %v; want 400: after an h2c upgrade request, bytes are HTTP/1 still", status, ok)
	}
}

// TestConnRefusesH2Preface: h2c with prior knowledge is told apart before
// the guard; the preface reaching the guard is refused.
func TestConnRefusesH2Preface(t *testing.T) {
	in := crlf("PRI * HTTP/2.0\n\nSM\n\n") + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
	c := NewConn(script(in), Limits{})
	out, _ := readAll(c, 4096)
	if status, _, _ := c.Rejection(); status != 400 || string(out) != synthetic(c.RejectToken()) {
		t.Errorf("status %d, got %q; want 400", status, out)
	}
}

func TestConnSteadyStateAllocs(t *testing.T) {
	for _, req := range []string{
		typicalHead,
		crlf("POST /f HTTP/1.1\nHost: a\nContent-Length: 300\n\n") + strings.Repeat("x", 300),
		crlf("POST /f HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n64\n") + strings.Repeat("x", 100) + crlf("\n0\n\n"),
	} {
		c := NewConn(&scriptConn{loop: []byte(req)}, Limits{})
		p := make([]byte, 512)
		c.Read(p) // allocates the buffer
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := c.Read(p); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%.20q: allocs per Read = %v, want 0", req, allocs)
		}
		if _, _, ok := c.Rejection(); ok {
			t.Errorf("%.20q: refused", req)
		}
	}
}

func TestConnDeadlineAbortsRead(t *testing.T) {
	// net/http aborts its background read with a past deadline and tells
	// the timeout apart by asserting net.Error on the error as it comes.
	client, server := net.Pipe()
	defer client.Close()
	c := NewConn(server, Limits{})
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	go client.Write([]byte("GET / HTTP/1.1\r\n")) // a partial head: Read waits
	time.Sleep(20 * time.Millisecond)
	c.Rejection()
	c.RejectToken()
	c.SetReadDeadline(time.Unix(1, 0)) // what net/http's abortPendingRead sets
	select {
	case err := <-errc:
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("Read error %v, want the connection's own timeout error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read not aborted by the deadline")
	}
	// The partial head was kept: the rest completes it.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	go client.Write([]byte("Host: a\r\n\r\n"))
	p := make([]byte, 100)
	n, err := io.ReadAtLeast(c, p, len("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	if err != nil || string(p[:n]) != "GET / HTTP/1.1\r\nHost: a\r\n\r\n" {
		t.Fatalf("after the deadline: %q, %v", p[:n], err)
	}
}

func BenchmarkConnRead(b *testing.B) {
	c := NewConn(&scriptConn{loop: []byte(typicalHead)}, Limits{})
	p := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalHead)))
	for b.Loop() {
		if _, err := c.Read(p); err != nil {
			b.Fatal(err)
		}
	}
}
