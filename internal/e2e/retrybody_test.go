package e2e

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// The tests of this file retry requests whose body is still on its way: a
// PUT whose body the client sends in two parts, and a PUT with Expect:
// 100-continue whose body the client holds back until it is told to send
// it. The first backend tried answers (or closes) before reading the body;
// the retry must send exactly the client's body to the next backend, once.

// rbPair starts two scripted backends that share one handler and returns
// a pool of both, with the given retry_on, one retry and a full budget.
func rbPair(t *testing.T, retryOn string, handle func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool) *sluice {
	t.Helper()
	a, b := startC9Backend(t, handle), startC9Backend(t, handle)
	p := poolAt("web", a.URL(), b.URL())
	p.Retries.NumRetries = 1
	p.Retries.RetryOn = []string{retryOn}
	p.Retries.BudgetPercent = 100
	return startSluice(t, oneListener(p))
}

// rbSum answers a request with the length and SHA-256 of its body.
func rbSum(req *http.Request, w *bufio.Writer) bool {
	h := sha256.New()
	n, err := io.Copy(h, req.Body)
	if err != nil {
		return false
	}
	body := fmt.Sprintf("len=%d sha256=%x", n, h.Sum(nil))
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return true
}

func rbWant(body []byte) string {
	return fmt.Sprintf("len=%d sha256=%x", len(body), sha256.Sum256(body))
}

func rbBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// TestRetryWhileBodyArrives: the client sends the head and half of a PUT's
// body; the first backend answers 503 at once without reading the body
// (retry_on 503). Only then does the client send the rest. The other
// backend must get the whole body once, in order: the attempt that was
// given up must not go on reading the client's body beside the retry.
func TestRetryWhileBodyArrives(t *testing.T) {
	t.Parallel()
	const size = 40000
	var refused atomic.Bool
	answered := make(chan struct{}, 1)
	s := rbPair(t, "503", func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool {
		if req.URL.Path == "/upload" && refused.CompareAndSwap(false, true) {
			io.WriteString(w, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
			w.Flush()
			answered <- struct{}{}
			// The body is left unread; the connection stays open.
			time.Sleep(2 * time.Second)
			return false
		}
		return rbSum(req, w)
	})
	body := rbBody(size)
	c, err := net.DialTimeout("tcp", s.Addr("public"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	head := "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(body[:size/2]); err != nil {
		t.Fatal(err)
	}
	// The h1 engine reads a body this small whole before any attempt, so
	// its first backend sees the request only once the rest is sent.
	select {
	case <-answered:
		time.Sleep(desyncMargin)
		if _, err := c.Write(body[size/2:]); err != nil {
			t.Fatal(err)
		}
	case <-time.After(500 * time.Millisecond):
		if _, err := c.Write(body[size/2:]); err != nil {
			t.Fatal(err)
		}
		waitSignal(t, answered, "the first backend's 503")
	}
	resp, got, err := c9ReadResponse(c, bufio.NewReader(c), http.MethodPut, 10*time.Second)
	if err != nil {
		t.Fatalf("no answer within 10s to the retried PUT: %v", err)
	}
	if want := rbWant(body); resp.StatusCode != 200 || got != want {
		t.Errorf("the retried PUT got %d %q, want 200 %q (the retry must send the client's body whole, once)",
			resp.StatusCode, got, want)
	}
}

// TestRetryExpectContinue: a PUT with Expect: 100-continue whose first
// backend answers 503 (retry_on 503) or closes the connection (retry_on
// reset) without asking for the body. The client was never told to send
// it, so the request is retried; the next backend answers 100 Continue,
// which reaches the client (the first backend's answer never does), and
// gets the body the client then sends.
func TestRetryExpectContinue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, retryOn string }{
		{"first backend answers 503", "503"},
		{"first backend closes", "reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var refused atomic.Bool
			s := rbPair(t, tc.retryOn, func(req *http.Request, w *bufio.Writer, br *bufio.Reader) bool {
				if !c9Expects(req) {
					return rbSum(req, w)
				}
				if refused.CompareAndSwap(false, true) {
					if tc.retryOn == "reset" {
						return false
					}
					io.WriteString(w, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
					return true
				}
				io.WriteString(w, "HTTP/1.1 100 Continue\r\n\r\n")
				if w.Flush() != nil {
					return false
				}
				return rbSum(req, w)
			})
			body := rbBody(c9UploadSize)
			c, err := net.DialTimeout("tcp", s.Addr("public"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			head := "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(c9UploadSize) +
				"\r\nExpect: 100-continue\r\n\r\n"
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, head); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, got, err := c9ReadResponse(c, br, http.MethodPut, 5*time.Second)
			if err != nil {
				t.Fatalf("no answer within 5s to the head: %v", err)
			}
			if resp.StatusCode != http.StatusContinue {
				t.Fatalf("the client got %d %q, want the second backend's 100 Continue after the retry",
					resp.StatusCode, got)
			}
			if _, err := c.Write(body); err != nil {
				t.Fatalf("write the body: %v", err)
			}
			resp, got, err = c9ReadResponse(c, br, http.MethodPut, 10*time.Second)
			if err != nil {
				t.Fatalf("no final answer within 10s after the body: %v", err)
			}
			if want := rbWant(body); resp.StatusCode != 200 || got != want {
				t.Errorf("final answer %d %q, want 200 %q", resp.StatusCode, got, want)
			}
			// The connection carries the next request.
			if _, err := io.WriteString(c, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, got, err = c9ReadResponse(c, br, http.MethodGet, 5*time.Second)
			if err != nil || resp.StatusCode != 200 || got != rbWant(nil) {
				t.Errorf("GET /after on the same connection: %v %q, want 200 %q", err, got, rbWant(nil))
			}
		})
	}
}
