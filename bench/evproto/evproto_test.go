package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// The prototype runs as a child process (this test binary with
// EVPROTO_MAIN=1), because its loops run until the process ends.
func TestMain(m *testing.M) {
	if os.Getenv("EVPROTO_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// testBackend is a loopback origin with the routes the tests need; it
// records the last request's header.
type testBackend struct {
	ln   net.Listener
	srv  *http.Server
	last chan http.Header
	// /slow: a request there is announced on started and answered once
	// release is closed (or after 5 s)
	started chan struct{}
	release chan struct{}
}

func startBackend(t *testing.T, idle time.Duration) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{ln: ln, last: make(chan http.Header, 100), started: make(chan struct{}, 10), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case b.last <- r.Header.Clone():
		default:
		}
		w.Header().Set("X-Backend", ln.Addr().String())
		w.Header().Set("Content-Length", "100")
		w.Write(bytes.Repeat([]byte("x"), 100))
	})
	mux.HandleFunc("/kb/64", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(64<<10))
		w.Write(pattern(64 << 10))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 5; i++ {
			w.Write(pattern(10000 + i))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		b.started <- struct{}{}
		select {
		case <-b.release:
		case <-time.After(5 * time.Second):
		}
		w.Write([]byte("slow"))
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("/untilclose", func(w http.ResponseWriter, r *http.Request) {
		conn, bw, _ := w.(http.Hijacker).Hijack()
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
		bw.Write(pattern(30000))
		bw.Flush()
		conn.Close()
	})
	b.srv = &http.Server{Handler: mux, IdleTimeout: idle}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// startProto runs the prototype in mode in front of backends and returns
// its address.
func startProto(t *testing.T, mode string, backends ...*testBackend) string {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(testenv.Ports(t, 1))
	return runProto(t, addr, []string{"-mode", mode, "-listen", addr}, backends)
}

// runProto runs the prototype with args in front of backends and waits
// until addr accepts connections.
func runProto(t *testing.T, addr string, args []string, backends []*testBackend) string {
	t.Helper()
	var bs []string
	for _, b := range backends {
		bs = append(bs, b.ln.Addr().String())
	}
	args = append(args, "-backends", strings.Join(bs, ","), "-timeout", "5s")
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "EVPROTO_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("evproto stderr:\n%s", stderr.String())
		}
	})
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp4", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("evproto did not listen on %s: %s", addr, stderr.String())
	return ""
}

// seenBy sends req and returns the response and the header of the request
// as one of backends saw it.
func seenBy(t *testing.T, c *http.Client, req *http.Request, backends ...*testBackend) (*http.Response, http.Header) {
	t.Helper()
	for _, b := range backends {
		for len(b.last) > 0 {
			<-b.last
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	deadline := time.After(2 * time.Second)
	for {
		for _, b := range backends {
			select {
			case h := <-b.last:
				return resp, h
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatal("no backend saw the request")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func httpClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp, body
}

func TestKeepAliveRoundRobinAndHeads(t *testing.T) {
	for _, mode := range []string{"loop", "goroutine"} {
		t.Run(mode, func(t *testing.T) {
			b1, b2, b3 := startBackend(t, 0), startBackend(t, 0), startBackend(t, 0)
			addr := startProto(t, mode, b1, b2, b3)
			c := httpClient()
			seen := map[string]bool{}
			for i := 0; i < 30; i++ {
				resp, body := get(t, c, "http://"+addr+"/")
				if resp.StatusCode != 200 || len(body) != 100 || resp.Header.Get("X-Request-Id") == "" {
					t.Fatalf("request %d: %d, %d bytes, X-Request-Id %q", i, resp.StatusCode, len(body), resp.Header.Get("X-Request-Id"))
				}
				seen[resp.Header.Get("X-Backend")] = true
			}
			if len(seen) != 3 {
				t.Errorf("backends used: %v, want all 3", seen)
			}
			// Hop-by-hop fields, those Connection names and the client's
			// forwarding fields do not reach the backend; sluice's do.
			req, _ := http.NewRequest("GET", "http://"+addr+"/a/./b", nil)
			req.Header.Set("Connection", "keep-alive, X-Secret")
			req.Header.Set("X-Secret", "1")
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			req.Header.Set("X-Keep", "yes")
			_, h := seenBy(t, c, req, b1, b2, b3)
			if h.Get("X-Secret") != "" || h.Get("X-Keep") != "yes" || h.Get("X-Forwarded-For") != "127.0.0.1" ||
				h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Request-Id") == "" {
				t.Errorf("backend saw %v", h)
			}
			resp, body := get(t, c, "http://"+addr+"/kb/64")
			if resp.StatusCode != 200 || !bytes.Equal(body, pattern(64<<10)) {
				t.Errorf("64 KiB: %d, %d bytes, intact %v", resp.StatusCode, len(body), bytes.Equal(body, pattern(64<<10)))
			}
			resp, _ = get(t, c, "http://"+addr+"/empty")
			if resp.StatusCode != 204 {
				t.Errorf("/empty: %d", resp.StatusCode)
			}
			hr, err := c.Head("http://" + addr + "/")
			if err != nil || hr.StatusCode != 200 || hr.ContentLength != 100 {
				t.Errorf("HEAD: %v %v", hr, err)
			} else {
				hr.Body.Close()
			}
			// A body larger than the read buffer, with a length.
			big := pattern(100000)
			pr, err := c.Post("http://"+addr+"/echo", "application/octet-stream", bytes.NewReader(big))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(pr.Body)
			pr.Body.Close()
			if !bytes.Equal(got, big) {
				t.Errorf("echo: %d bytes back, intact %v", len(got), bytes.Equal(got, big))
			}
			// A chunked response passes through whole.
			resp, body = get(t, c, "http://"+addr+"/chunked")
			var want []byte
			for i := 0; i < 5; i++ {
				want = append(want, pattern(10000+i)...)
			}
			if resp.StatusCode != 200 || !bytes.Equal(body, want) {
				t.Errorf("chunked: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}

func TestLoopBodiesPipeliningAndRefusals(t *testing.T) {
	b := startBackend(t, 0)
	addr := startProto(t, "loop", b)
	c := httpClient()
	// A chunked request body.
	big := pattern(70000)
	req, _ := http.NewRequest("POST", "http://"+addr+"/echo", io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, big) {
		t.Errorf("chunked echo: %d bytes back", len(got))
	}
	// A close-delimited response ends the client connection after it.
	resp, body := get(t, c, "http://"+addr+"/untilclose")
	if resp.StatusCode != 200 || !bytes.Equal(body, pattern(30000)) || !resp.Close {
		t.Errorf("until close: %d, %d bytes, close %v", resp.StatusCode, len(body), resp.Close)
	}

	// Three pipelined requests on one connection, answered in order.
	conn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /kb/64 HTTP/1.1\r\nHost: a\r\n\r\nGET /empty HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(conn)
	for i, want := range []int{100, 64 << 10, 0} {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined response %d: %v", i, err)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if int(n) != want {
			t.Errorf("pipelined response %d: %d bytes, want %d", i, n, want)
		}
	}

	// A malformed request gets 400 and the connection closes.
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		conn, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, raw)
		all, _ := io.ReadAll(conn)
		conn.Close()
		if !bytes.HasPrefix(all, []byte("HTTP/1.1 400 ")) {
			t.Errorf("%q: got %q", raw, all)
		}
	}
}

// A backend that closes its idle connections: the loop sees the close as an
// event on the idle connection and drops it, or resends the request once on
// a new connection when the close crosses the request.
func TestLoopBackendClosesIdle(t *testing.T) {
	b := startBackend(t, 30*time.Millisecond)
	addr := startProto(t, "loop", b)
	c := httpClient()
	for i := 0; i < 6; i++ {
		resp, body := get(t, c, "http://"+addr+"/")
		if resp.StatusCode != 200 || len(body) != 100 {
			t.Fatalf("request %d: %d, %d bytes", i, resp.StatusCode, len(body))
		}
		time.Sleep(time.Duration(10+i*10) * time.Millisecond)
	}
}
