package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// streamBackend is a loopback HTTP/1.1 backend that reads requests with
// net/http's parser and answers each with what answer writes, raw: the
// tests below control every byte a response holds, and past it.
type streamBackend struct {
	*rawBackend
	reqs chan *http.Request // each request, its body read into Body
}

func newStreamBackend(t *testing.T, answer func(c net.Conn, r *http.Request, body []byte)) *streamBackend {
	t.Helper()
	sb := &streamBackend{reqs: make(chan *http.Request, 64)}
	sb.rawBackend = newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			select {
			case sb.reqs <- r:
			default:
			}
			answer(c, r, body)
		}
	})
	return sb
}

// streamFixture is an upstream with one backend, rb.
func streamFixture(t *testing.T, rb *streamBackend) (*proxy.Upstream, *pool.Backend) {
	t.Helper()
	u := proxy.NewUpstream(config.PoolTimeouts{Connect: 2 * time.Second, Idle: 30 * time.Second}, nil)
	t.Cleanup(u.Close)
	addr := rb.ln.Addr().String()
	return u, pool.NewBackend("http://"+addr, &url.URL{Scheme: "http", Host: addr}, 1)
}

func streamReq(t *testing.T, ctx context.Context, method, target string, body []byte) *http.Request {
	t.Helper()
	path, query, _ := strings.Cut(target, "?")
	r := &http.Request{Method: method, Host: "example.test", Header: http.Header{"X-A": {"1", "2"}},
		URL: &url.URL{Scheme: "http", Opaque: path, RawQuery: query}}
	if body != nil {
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	return r.WithContext(ctx)
}

func roundTrip(t *testing.T, u *proxy.Upstream, b *pool.Backend, r *http.Request, replay bool) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := Streams{}.RoundTrip(r.Context(), u, r, b, replay, 0)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestStreamsFraming: each response framing is read to its end, trailers
// included, and the connection is reused only after framings that allow it.
func TestStreamsFraming(t *testing.T) {
	rb := newStreamBackend(t, func(c net.Conn, r *http.Request, body []byte) {
		switch r.URL.Path {
		case "/fixed":
			io.WriteString(c, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-Multi: a\r\nX-Multi: b\r\nContent-Length: 5\r\n\r\nhello")
		case "/chunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-Sum: 5\r\nX-Late: 1\r\n\r\n")
		case "/echo":
			io.WriteString(c, "HTTP/1.1 201 Created\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n")
			c.Write(body)
		case "/head":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
		case "/interim":
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
		case "/close":
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil close")
			c.Close()
		}
	})
	u, b := streamFixture(t, rb)
	ctx := context.Background()

	resp, body, err := roundTrip(t, u, b, streamReq(t, ctx, "GET", "/fixed?q=1", nil), true)
	if err != nil || resp.StatusCode != 200 || string(body) != "hello" || resp.ContentLength != 5 {
		t.Fatalf("fixed: %v %v %q", err, resp, body)
	}
	if got := resp.Header["X-Multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("fixed: header %v", resp.Header)
	}
	r := <-rb.reqs
	if r.URL.RequestURI() != "/fixed?q=1" || r.Host != "example.test" || len(r.Header["X-A"]) != 2 || r.ContentLength != 0 {
		t.Errorf("fixed: backend saw %s %s host %q %v cl %d", r.Method, r.URL, r.Host, r.Header, r.ContentLength)
	}

	resp, body, err = roundTrip(t, u, b, streamReq(t, ctx, "GET", "/chunked", nil), true)
	if err != nil || string(body) != "abcde" || resp.ContentLength != -1 {
		t.Fatalf("chunked: %v %q", err, body)
	}
	if resp.Trailer.Get("X-Sum") != "5" || resp.Trailer.Get("X-Late") != "1" || resp.Header.Get("Trailer") != "" {
		t.Errorf("chunked: trailer %v header %v", resp.Trailer, resp.Header)
	}
	<-rb.reqs

	resp, body, err = roundTrip(t, u, b, streamReq(t, ctx, "POST", "/echo", []byte("payload")), false)
	if err != nil || resp.StatusCode != 201 || string(body) != "payload" {
		t.Fatalf("echo: %v %q", err, body)
	}
	if r := <-rb.reqs; r.ContentLength != 7 {
		t.Errorf("echo: backend saw content-length %d", r.ContentLength)
	}
	if _, _, err = roundTrip(t, u, b, streamReq(t, ctx, "POST", "/echo", nil), false); err != nil {
		t.Fatal(err)
	}
	if r := <-rb.reqs; r.Header.Get("Content-Length") != "0" {
		t.Errorf("POST without a body: backend saw %v", r.Header)
	}

	resp, body, err = roundTrip(t, u, b, streamReq(t, ctx, "HEAD", "/head", nil), true)
	if err != nil || len(body) != 0 || resp.ContentLength != 1234 {
		t.Fatalf("head: %v %q %d", err, body, resp.ContentLength)
	}
	<-rb.reqs
	resp, _, err = roundTrip(t, u, b, streamReq(t, ctx, "GET", "/interim", nil), true)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("interim: %v %v", err, resp)
	}
	<-rb.reqs
	if n := rb.conns.Load(); n != 1 {
		t.Errorf("%d backend connections for 6 exchanges that allow reuse, want 1", n)
	}

	resp, body, err = roundTrip(t, u, b, streamReq(t, ctx, "GET", "/close", nil), true)
	if err != nil || string(body) != "until close" {
		t.Fatalf("until close: %v %q", err, body)
	}
	<-rb.reqs
	if _, _, err = roundTrip(t, u, b, streamReq(t, ctx, "GET", "/fixed", nil), true); err != nil {
		t.Fatal(err)
	}
	if n := rb.conns.Load(); n != 2 {
		t.Errorf("%d backend connections, want 2 (the until-close body ended its connection)", n)
	}
}

// TestStreamsStrayBytesNeverReachAnotherRequest: bytes past a response's
// framing, or sent on an idle connection, make the connection unusable; the
// next request gets its own response on a new connection.
func TestStreamsStrayBytesNeverReachAnotherRequest(t *testing.T) {
	strayWritten := make(chan struct{}, 1)
	rb := newStreamBackend(t, func(c net.Conn, r *http.Request, _ []byte) {
		own := "own " + r.URL.Path
		switch r.URL.Path {
		case "/past":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(own))+"\r\n\r\n"+own+"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
		case "/later":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(own))+"\r\n\r\n"+own)
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
			strayWritten <- struct{}{} // over loopback: in the proxy's socket buffer now
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(own))+"\r\n\r\n"+own)
		}
	})
	u, b := streamFixture(t, rb)
	ctx := context.Background()
	for i, path := range []string{"/past", "/a", "/later", "/b", "/c"} {
		if path == "/b" {
			<-strayWritten
		}
		// /b may not be sent twice, and still goes to another connection:
		// the one with stray bytes is found out before anything is sent.
		replay := path != "/b"
		_, body, err := roundTrip(t, u, b, streamReq(t, ctx, "GET", path, nil), replay)
		if err != nil || string(body) != "own "+path {
			t.Fatalf("request %d (%s): %v, body %q", i, path, err, body)
		}
	}
	if n := rb.conns.Load(); n != 3 {
		t.Errorf("%d backend connections, want 3 (two were spoiled by stray bytes)", n)
	}
}

// TestStreamsStaleConnection: a reused connection that the backend closes
// without answering is replaced when the request may be sent again; the
// failure is returned otherwise.
func TestStreamsStaleConnection(t *testing.T) {
	var mu sync.Mutex
	served := map[net.Conn]bool{}
	rb := newStreamBackend(t, func(c net.Conn, r *http.Request, _ []byte) {
		mu.Lock()
		again := served[c]
		served[c] = true
		mu.Unlock()
		if again {
			c.Close() // the second request of a connection: no answer
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	u, b := streamFixture(t, rb)
	ctx := context.Background()
	for _, replay := range []bool{true, false} {
		u.CloseIdleConnections()
		if _, _, err := roundTrip(t, u, b, streamReq(t, ctx, "GET", "/first", nil), replay); err != nil {
			t.Fatal(err)
		}
		_, body, err := roundTrip(t, u, b, streamReq(t, ctx, "GET", "/second", nil), replay)
		if replay && (err != nil || string(body) != "ok") {
			t.Errorf("replayable request on a stale connection: %v %q", err, body)
		}
		if !replay && err == nil {
			t.Errorf("a request that may not be sent twice was sent again on a new connection")
		}
	}
}

// slowStreamBackend is a backend that answers /slow-head only when the
// test ends, and /slow-body with a head of Content-Length n and two bytes
// of the body at once, then calls rest (with the channel closed when the
// test ends).
func slowStreamBackend(t *testing.T, n int, rest func(c net.Conn, release <-chan struct{})) (*proxy.Upstream, *pool.Backend) {
	release := make(chan struct{})
	rb := newStreamBackend(t, func(c net.Conn, r *http.Request, _ []byte) {
		switch r.URL.Path {
		case "/slow-head":
			<-release
		case "/slow-body":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nab", n)
			rest(c, release)
		}
	})
	t.Cleanup(func() { close(release) })
	return streamFixture(t, rb)
}

// TestStreamsTimeouts: the header bound ends a wait for the head
// (proxy.ErrHeaderTimeout) but not the body's read; the context's deadline
// ends either (proxy.ErrRequestTimeout).
func TestStreamsTimeouts(t *testing.T) {
	u, b := slowStreamBackend(t, 4, func(c net.Conn, _ <-chan struct{}) {
		time.Sleep(300 * time.Millisecond)
		io.WriteString(c, "cd")
	})
	bg := context.Background()

	_, err := Streams{}.RoundTrip(bg, u, streamReq(t, bg, "GET", "/slow-head", nil), b, true, 50*time.Millisecond)
	if err != proxy.ErrHeaderTimeout {
		t.Errorf("slow head with a 50ms header bound: %v, want %v", err, proxy.ErrHeaderTimeout)
	}
	resp, err := Streams{}.RoundTrip(bg, u, streamReq(t, bg, "GET", "/slow-body", nil), b, true, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "abcd" {
		t.Errorf("a body slower than the header bound: %q, %v; want it whole", body, err)
	}

	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	_, err = Streams{}.RoundTrip(ctx, u, streamReq(t, ctx, "GET", "/slow-head", nil), b, true, time.Minute)
	if err != proxy.ErrRequestTimeout && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow head past the context's deadline: %v, want %v", err, proxy.ErrRequestTimeout)
	}
}

// TestStreamsContextEndsBody: the request's context ends an exchange
// blocked on the backend, the body's read included, and the connection is
// not reused.
func TestStreamsContextEndsBody(t *testing.T) {
	u, b := slowStreamBackend(t, 10, func(_ net.Conn, release <-chan struct{}) { <-release })

	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(50*time.Millisecond, func() { cancel(proxy.ErrHeaderTimeout) })
	_, err := Streams{}.RoundTrip(ctx, u, streamReq(t, ctx, "GET", "/slow-head", nil), b, true, 0)
	if !errors.Is(err, proxy.ErrHeaderTimeout) {
		t.Errorf("slow head: %v, want the context's cause", err)
	}

	ctx, cancel2 := context.WithCancel(context.Background())
	resp, err := Streams{}.RoundTrip(ctx, u, streamReq(t, ctx, "GET", "/slow-body", nil), b, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel2)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(body) != "ab" {
		t.Errorf("slow body: %q, %v; want the 2 bytes sent and an error", body, err)
	}
}
