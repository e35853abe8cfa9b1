package h1

import (
	"bufio"
	"crypto/tls"
	"crypto/x509/pkix"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// The engine's side of the response-safety contract (proxy.Attempt) on
// paths the end-to-end desync tests do not reach: TLS backends, responses
// discarded for a retry, pipelined clients, and Close with requests still
// waiting on a backend.

// strayAfter answers each request with its path in the body, followed in
// the same write by a complete response nobody asked for.
func strayAfter(r *http.Request, _ []byte) (string, bool) {
	body := "for " + r.URL.Path
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body +
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY", false
}

// wantOwn reads one response per path from c and checks each is that
// path's answer.
func wantOwn(t *testing.T, c *testClient, paths ...string) {
	t.Helper()
	for _, p := range paths {
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || string(body) != "for "+p {
			t.Fatalf("GET %s: %d %q, want 200 %q", p, resp.StatusCode, body, "for "+p)
		}
	}
}

func TestEngineStrayBytesOverTLSBackend(t *testing.T) {
	cert := testenv.NewCA(t, "Test CA").Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "backend"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.Pair}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				eachRequest(strayAfter)(c, bufio.NewReader(c))
			}()
		}
	}()
	s := defaultSetup()
	s.UpstreamTLS = &tls.Config{InsecureSkipVerify: true}
	env := startEngine(t, s, "https://"+ln.Addr().String())
	for i, p := range []string{"/a", "/b", "/c"} {
		c := dialClient(t, env.addr) // a different client each time
		c.write("GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n")
		wantOwn(t, c, p)
		mu.Lock()
		n := accepted
		mu.Unlock()
		if n != i+1 {
			t.Fatalf("after %d requests the TLS backend accepted %d connections, want %d: a connection with a stray response was used again", i+1, n, i+1)
		}
	}
}

func TestEngineRetryStatusDiscardKeepsNoStrayBytes(t *testing.T) {
	// The first answer is a 503 that retry_on discards, with a stray
	// response after it; the retry goes to the other backend.
	var tried atomic.Int32
	retry := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
		tried.Add(1)
		return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY", false
	}))
	good := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
		body := "for " + r.URL.Path
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, false
	}))
	s := defaultSetup()
	s.Retries.OnStatus = []int{503}
	env := startEngine(t, s, retry.URL, good.URL)
	for _, p := range []string{"/1", "/2", "/3", "/4"} {
		c := dialClient(t, env.addr)
		c.write("GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n")
		wantOwn(t, c, p)
	}
	if conns, reqs := retry.conns.Load(), tried.Load(); conns != reqs || reqs == 0 {
		t.Errorf("the retried backend accepted %d connections for %d requests, want one each: a discarded response's connection with bytes after it was used again", conns, reqs)
	}
}

func TestEnginePipelinedClientWithStrayBytes(t *testing.T) {
	rb := newRawBackend(t, eachRequest(strayAfter))
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	c.write("GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")
	wantOwn(t, c, "/p1", "/p2", "/p3")
	if got := rb.conns.Load(); got != 3 {
		t.Errorf("backend connections = %d for 3 pipelined requests, want 3 (each one's connection had a stray response)", got)
	}
}

func TestEngineCloseEndsRequestsWaitingOnBackends(t *testing.T) {
	// A streaming answer that stops mid-body and a backend that never
	// answers: with no request timeout, only Close can end them.
	release := make(chan struct{})
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if r.URL.Path == "/stream" {
			c.Write([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"))
		}
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the backend's own cleanup, which waits for this handler
	s := defaultSetup()
	s.Pool.ResponseHeader = 0
	env := startEngine(t, s, rb.URL)
	streaming := dialClient(t, env.addr)
	streaming.write("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	if head := streaming.rawHead(); !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("stream head %q", head)
	}
	silent := dialClient(t, env.addr)
	silent.write("GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "both requests at the backend", func() bool { return rb.conns.Load() == 2 })
	env.engine.Close()
	err := recv(t, env.served, "Serve to return after Close (its connections' goroutines wait on backends)")
	env.served <- err // for the cleanup
}
