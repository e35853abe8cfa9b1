package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type connKey struct{}

// testServer is a real http.Server on 127.0.0.1 behind the guard. Its
// handler answers the guard's refusals and counts every other request: those
// are the ones that would have reached a backend.
type testServer struct {
	addr    string
	srv     *http.Server
	done    chan struct{} // closed when Serve returned
	served  atomic.Int64
	started chan struct{} // a /stream handler began reading its body
	bodyErr chan error    // body read errors seen by handlers
}

func startServer(t *testing.T, lim Limits, cfg func(*http.Server)) *testServer {
	t.Helper()
	s := &testServer{
		started: make(chan struct{}, 16),
		bodyErr: make(chan error, 16),
		done:    make(chan struct{}),
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c.(*Conn))
		},
	}
	if cfg != nil {
		cfg(s.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() {
		defer close(s.done)
		s.srv.Serve(NewListener(ln, lim))
	}()
	t.Cleanup(func() {
		s.srv.Close()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return s
}

func (s *testServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	g := r.Context().Value(connKey{}).(*Conn)
	if tok := g.RejectToken(); tok != "" && r.Host == tok {
		status, reason, _ := g.Rejection()
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, reason+"\n")
		return
	}
	s.served.Add(1)
	if r.URL.Path == "/ws" {
		s.echoUpgrade(w, r)
		return
	}
	var body []byte
	var err error
	if r.URL.Path == "/stream" {
		head := make([]byte, 15)
		if _, err = io.ReadFull(r.Body, head); err == nil {
			s.started <- struct{}{}
			body, err = io.ReadAll(r.Body)
		}
	} else {
		body, err = io.ReadAll(r.Body)
	}
	if err != nil {
		s.bodyErr <- err
		status := http.StatusBadRequest
		if st, _, ok := g.Rejection(); ok {
			status = st
		}
		w.Header().Set("Connection", "close")
		w.WriteHeader(status)
		return
	}
	fmt.Fprintf(w, "%s %s %d\n", r.Method, r.URL.Path, len(body))
}

// echoUpgrade switches protocols and echoes raw bytes, as a WebSocket tunnel
// would carry them.
func (s *testServer) echoUpgrade(w http.ResponseWriter, r *http.Request) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	io.Copy(c, brw.Reader)
}

// exchange writes raw to a new connection and returns the status of every
// response, and whether the server then closed the connection cleanly.
func exchange(t *testing.T, addr, raw string) (statuses []int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go io.WriteString(c, raw) // may block while the server refuses to read
	br := bufio.NewReader(c)
	for {
		if _, err := br.Peek(1); err != nil {
			if err != io.EOF {
				t.Logf("after %v: %v", statuses, err)
			}
			return statuses, err == io.EOF
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Logf("after %v: %v", statuses, err)
			return statuses, false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
}

func TestServerRefusesHostileRequests(t *testing.T) {
	bigHeader := "X-Big: " + strings.Repeat("a", 70<<10) + "\n"
	tests := []struct {
		name   string
		raw    string // "\n" becomes CRLF
		lim    Limits
		want   []int
		served int64
	}{
		{name: "CL and TE", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n", want: []int{400}},
		{name: "TE and CL", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 5\n\n0\n\n", want: []int{400}},
		{name: "TE gzip, chunked", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n0\n\n", want: []int{400}},
		{name: "bad chunk size", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\nzz\nhello\n0\n\n", want: []int{400}},
		{name: "chunk without CRLF", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\nhelloGET / HTTP/1.1\nHost: a\n\n", want: []int{400}},
		{name: "9 KiB URI", raw: "GET /" + strings.Repeat("a", 9<<10) + " HTTP/1.1\nHost: a\n\n", want: []int{414}},
		{name: "101 headers", raw: "GET / HTTP/1.1\nHost: a\n" + strings.Repeat("X: y\n", 100) + "\n", want: []int{431}},
		{name: "70 KiB header", raw: "GET / HTTP/1.1\nHost: a\n" + bigHeader + "\n", want: []int{431}},
		{name: "absolute-form mismatch", raw: "GET http://internal.example/admin HTTP/1.1\nHost: public.example\n\n", want: []int{400}},
		{name: "CONNECT", raw: "CONNECT internal.example:22 HTTP/1.1\nHost: internal.example:22\n\n", want: []int{405}},
		{name: "TRACE", raw: "TRACE / HTTP/1.1\nHost: a\n\n", want: []int{405}},
		{name: "PRI preface", raw: "PRI * HTTP/2.0\n\nSM\n\n", want: []int{400}},
		{name: "obs-fold", raw: "GET / HTTP/1.1\nHost: a\nX: a\n  b\n\n", want: []int{400}},
		{name: "space before colon", raw: "GET / HTTP/1.1\nHost: a\nContent-Length : 5\n\nhello", want: []int{400}},
		{name: "duplicate CL", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 5\n\nhello", want: []int{400}},
		{name: "HTTP/1.2", raw: "GET / HTTP/1.2\nHost: a\n\n", want: []int{505}},
		{name: "good then bad, pipelined", raw: "GET /ok HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\nHost: a\nHost: b\n\n", want: []int{200, 400}, served: 1},
		{name: "good body then smuggled head", raw: "POST /ok HTTP/1.1\nHost: a\nContent-Length: 5\n\nhelloGET /x HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 3\nHost: a\n\n", want: []int{200, 400}, served: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.lim, nil)
			statuses, closed := exchange(t, s.addr, crlf(tt.raw))
			if fmt.Sprint(statuses) != fmt.Sprint(tt.want) {
				t.Errorf("statuses %v, want %v", statuses, tt.want)
			}
			if !closed {
				t.Errorf("connection not closed cleanly after the responses")
			}
			if got := s.served.Load(); got != tt.served {
				t.Errorf("handler served %d requests, want %d", got, tt.served)
			}
		})
	}
}

func TestServerKeepsGoodTraffic(t *testing.T) {
	s := startServer(t, Limits{}, nil)
	raw := crlf("GET /a HTTP/1.1\nHost: a\n\n" +
		"POST /b HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello" +
		"\n" + // an extra CRLF after a body, as old clients send
		"PUT /c HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5;ext=1\nhello\n0\nX-Sum: 1\n\n" +
		"GET http://a:80/d HTTP/1.1\nHost: a\n\n" +
		"GET /e HTTP/1.1\nHost: a\nConnection: close\n\n")
	statuses, closed := exchange(t, s.addr, raw)
	if fmt.Sprint(statuses) != "[200 200 200 200 200]" || !closed {
		t.Errorf("statuses %v (closed %v), want five 200s then close", statuses, closed)
	}
	if got := s.served.Load(); got != 5 {
		t.Errorf("served %d, want 5", got)
	}

	// And through a real client, with keep-alive and a streamed upload.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := range 3 {
		pr, pw := io.Pipe()
		go func() {
			for range 4 {
				io.WriteString(pw, strings.Repeat("x", 1000))
			}
			pw.Close()
		}()
		resp, err := client.Post("http://"+s.addr+"/up", "text/plain", pr)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "POST /up 4000\n" {
			t.Fatalf("upload %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

func TestServerBadChunkLateInBody(t *testing.T) {
	s := startServer(t, Limits{}, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, crlf("POST /stream HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"+
		"5\nhello\n5\nhello\n5\nhello\n"))
	select {
	case <-s.started:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not start reading the body")
	}
	io.WriteString(c, crlf("5\nhelloXX\n0\n\n"))
	select {
	case err := <-s.bodyErr:
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("body read error %v, want ErrMalformed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("body read did not fail")
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want EOF", err)
	}
}

func TestServerUpgradeTunnel(t *testing.T) {
	s := startServer(t, Limits{}, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Frame bytes that are no HTTP at all, sent with the request.
	frames := "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\r\r\x00"
	io.WriteString(c, crlf("GET /ws HTTP/1.1\nHost: a\nConnection: Upgrade\nUpgrade: websocket\n\n")+frames)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade response %v, %v", resp, err)
	}
	got := make([]byte, len(frames))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != frames {
		t.Fatalf("echo %q, %v; want %q", got, err, frames)
	}
	more := "GET / HTTP/1.1\r\nHost : x\r\n\r\n" // not HTTP any more: passes
	io.WriteString(c, more)
	got = make([]byte, len(more))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != more {
		t.Fatalf("echo %q, %v; want %q", got, err, more)
	}
}

func TestServerHeaderTimeout(t *testing.T) {
	s := startServer(t, Limits{}, func(srv *http.Server) { srv.ReadHeaderTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The header timeout is 200ms; a close within this deadline is the
	// bound (a read past it fails the test).
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n") // and never the end
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v, want the server to answer and close within the deadline", err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 408 ") {
		t.Errorf("answer %q, want 408 before the close", got)
	}
	if got := s.served.Load(); got != 0 {
		t.Errorf("served %d", got)
	}
}

func TestServerKeepAliveIdleThenRequest(t *testing.T) {
	// A request arriving after the handler of the previous one returned and
	// net/http's background read was aborted: nothing may be lost.
	s := startServer(t, Limits{}, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := range 3 {
		io.WriteString(c, "GET /k HTTP/1.1\r\nHost: a\r\n")
		time.Sleep(20 * time.Millisecond)
		io.WriteString(c, "\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
}
