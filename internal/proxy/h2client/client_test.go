package h2client

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/proxy"
)

func h2cServer(t *testing.T, idle time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{IdleTimeout: idle, Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}), &http2.Server{IdleTimeout: idle})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestPoolForgetsAConnectionThatNeverCarriedAStream: a connection whose
// first request never got a stream (its context ended first), then closed
// by the backend (its idle timeout), is one x/net still offers (it says
// such a connection can take a request); the pool must not keep handing
// it out, or every later request to the backend fails.
func TestPoolForgetsAConnectionThatNeverCarriedAStream(t *testing.T) {
	addr := h2cServer(t, 200*time.Millisecond)
	c := newClient(proxy.NewUpstream(config.PoolTimeouts{Connect: time.Second, Idle: 90 * time.Second}, nil))
	defer c.Close()
	// A request that ends before its stream starts (on most runs x/net
	// then starts none on the new connection).
	ctx, cancel := context.WithCancel(context.Background())
	cc, err := c.h2c.get(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if resp, err := cc.cc.RoundTrip(req); err == nil {
		resp.Body.Close()
	}
	cc.requests.Add(-1)
	time.Sleep(1500 * time.Millisecond) // the backend closes the idle connection
	for i := range 5 {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Errorf("request %d: %v", i, err)
			continue
		}
		resp.Body.Close()
	}
}

// stalledBackend is an h2c backend that grants a huge window, one stream,
// and stops reading once a request's HEADERS came: the client's body
// writer blocks in its write, holding the connection's write lock.
func stalledBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				buf := make([]byte, len(http2.ClientPreface))
				io.ReadFull(c, buf)
				fr := http2.NewFramer(c, c)
				fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
				fr.WriteWindowUpdate(0, 1<<31-1-65535)
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.HeadersFrame); ok {
						<-stop // read no more
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }
func (endless) Close() error               { return nil }

// TestAStalledConnectionBlocksNoOtherBackend: a backend that stops
// reading holds its connection's write lock in x/net; neither closing idle
// connections nor a request that finds that connection full may wait on
// it while it holds the pool's own lock, or a request to a healthy
// backend waits too.
func TestAStalledConnectionBlocksNoOtherBackend(t *testing.T) {
	for _, trigger := range []string{"CloseIdleConnections", "a second request to the stalled backend"} {
		t.Run(trigger, func(t *testing.T) {
			slow := stalledBackend(t)
			good := h2cServer(t, time.Minute)
			c := newClient(proxy.NewUpstream(config.PoolTimeouts{Connect: time.Second, Idle: 90 * time.Second}, nil))
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			t.Cleanup(func() { cancel(); c.Close(); wg.Wait() })
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+slow+"/", endless{})
				if resp, err := c.RoundTrip(req); err == nil {
					resp.Body.Close()
				}
			})
			time.Sleep(500 * time.Millisecond) // the body's writer fills the socket
			if trigger == "CloseIdleConnections" {
				wg.Go(c.CloseIdleConnections)
			} else {
				wg.Go(func() {
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+slow+"/", nil)
					if resp, err := c.RoundTrip(req); err == nil {
						resp.Body.Close()
					}
				})
			}
			time.Sleep(100 * time.Millisecond)
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequest("GET", "http://"+good+"/", nil)
				resp, err := c.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("request to the healthy backend: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("a request to a healthy backend waited more than 5 s behind a stalled connection to another")
				<-done
			}
		})
	}
}

// TestClosingWaitsOnNoStalledConnection: closing the pool's idle
// connections (a reload does, for the pools it replaces) must not wait on
// a connection whose writes are stalled (x/net's State waits for its write
// lock): it returns at once, closes the idle connections and leaves the
// busy one to close when its request ends.
func TestClosingWaitsOnNoStalledConnection(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(map[bool]string{false: "CloseIdleConnections", true: "Close"}[all], func(t *testing.T) {
			slow := stalledBackend(t)
			good := h2cServer(t, time.Minute)
			c := newClient(proxy.NewUpstream(config.PoolTimeouts{Connect: time.Second, Idle: 90 * time.Second}, nil))
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			t.Cleanup(func() { cancel(); wg.Wait() })
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+slow+"/", endless{})
				if resp, err := c.RoundTrip(req); err == nil {
					resp.Body.Close()
				}
			})
			req, _ := http.NewRequest("GET", "http://"+good+"/", nil)
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			time.Sleep(500 * time.Millisecond) // the body's writer fills the socket
			c.h2c.mu.Lock()
			idle, busy := c.h2c.by[good][0].cc, c.h2c.by[slow][0]
			c.h2c.mu.Unlock()
			if n := busy.requests.Load(); n != 1 {
				t.Fatalf("%d requests counted on the stalled connection, want 1", n)
			}
			done := make(chan struct{})
			go func() {
				if all {
					c.Close()
				} else {
					c.CloseIdleConnections()
				}
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("closing the idle connections waited more than 5 s on a stalled one")
			}
			if !idle.State().Closed {
				t.Error("the idle connection is still open")
			}
			c.h2c.mu.Lock()
			_, kept := c.h2c.by[slow]
			c.h2c.mu.Unlock()
			if kept == all {
				t.Errorf("after %s the busy connection is pooled: %v", map[bool]string{false: "CloseIdleConnections", true: "Close"}[all], kept)
			}
		})
	}
}

// strictBackend advertises SETTINGS_MAX_CONCURRENT_STREAMS n and refuses
// streams past it (as nginx does), answering the others after 100ms.
func strictBackend(t *testing.T, n int) string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, len(http2.ClientPreface))
				io.ReadFull(c, buf)
				fr := http2.NewFramer(c, c)
				var wmu sync.Mutex
				fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(n)})
				active := 0
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							wmu.Lock()
							fr.WriteSettingsAck()
							wmu.Unlock()
						}
					case *http2.HeadersFrame:
						wmu.Lock()
						if active >= n {
							fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
							wmu.Unlock()
							continue
						}
						active++
						wmu.Unlock()
						id := f.StreamID
						time.AfterFunc(100*time.Millisecond, func() {
							wmu.Lock()
							defer wmu.Unlock()
							active--
							fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: true, EndHeaders: true, BlockFragment: []byte{0x88}}) // :status 200
						})
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestColdBurstRefusals: a burst on a new connection, before the
// backend's SETTINGS tell its stream limit, gets streams refused past that
// limit (as nginx refuses them). A request without a body is tried once
// more on the same backend, and what is still refused is a DialError
// marked Unprocessed: the core sends it elsewhere without ejecting the
// backend. Nothing else may fail.
func TestColdBurstRefusals(t *testing.T) {
	addr := strictBackend(t, 2)
	c := newClient(proxy.NewUpstream(config.PoolTimeouts{Connect: time.Second, Idle: 90 * time.Second}, nil))
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 10 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			resp, err := c.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				ok.Add(1)
				return
			}
			var de *proxy.DialError
			if !errors.As(err, &de) || !de.Unprocessed {
				t.Errorf("%v: want a DialError marked Unprocessed", err)
				return
			}
			refused.Add(1)
		})
	}
	wg.Wait()
	if ok.Load() < 2 {
		t.Errorf("%d of 10 requests answered, want at least the backend's 2 streams", ok.Load())
	}
	t.Logf("%d answered, %d refused (the core sends those elsewhere)", ok.Load(), refused.Load())
}

// slowAccept delays each accepted connection's handshake by 300 ms.
type slowAccept struct{ net.Listener }

func (l slowAccept) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	time.Sleep(300 * time.Millisecond)
	return c, err
}

// TestWaiterDoesNotInheritTheDiallersDeadline: requests that wait on
// another request's dial to the backend must not fail because that
// request ran out of time (a short grpc-timeout): the next waiter dials
// again, and nobody reports the backend as unreachable.
func TestWaiterDoesNotInheritTheDiallersDeadline(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.EnableHTTP2 = true
	srv.Listener = slowAccept{srv.Listener}
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	c := newClient(proxy.NewUpstream(config.PoolTimeouts{Connect: 3 * time.Second, Idle: 90 * time.Second}, &tls.Config{InsecureSkipVerify: true}))
	defer c.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		c.tls.get(ctx, addr) // fails: its deadline passes during the handshake
	})
	time.Sleep(20 * time.Millisecond)
	if _, err := c.tls.get(context.Background(), addr); err != nil {
		t.Errorf("a request waiting on another's dial failed with that request's deadline: %v", err)
	}
}

// heldReader is a body that says it is held whole.
type heldReader struct{ io.Reader }

func (heldReader) Close() error { return nil }
func (heldReader) Held() bool   { return true }

// TestCountedCloseEndsAWaitingRead: a body still streaming in is read so
// that x/net's Close ends a Read that waits on the client (its stream was
// refused); the bytes count only what was returned, and a later Read
// returns at once. A body held whole is read directly.
func TestCountedCloseEndsAWaitingRead(t *testing.T) {
	pr, pw := io.Pipe()
	b := newCounted(pr)
	go pw.Write([]byte("first"))
	p := make([]byte, 16)
	if n, err := b.Read(p); n != 5 || err != nil || string(p[:n]) != "first" {
		t.Fatalf("Read = %d %q %v, want 5 \"first\"", n, p[:n], err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(p) // waits: the client sends nothing more
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, errBodyClosed) {
			t.Errorf("the waiting Read returned %v, want errBodyClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the waiting Read")
	}
	if _, err := b.Read(p); !errors.Is(err, errBodyClosed) {
		t.Errorf("a Read after Close returned %v, want errBodyClosed", err)
	}
	if got := b.n.Load(); got != 5 {
		t.Errorf("counted %d bytes, want 5", got)
	}
	pw.Close() // ends the abandoned read's goroutine

	h := newCounted(heldReader{Reader: strings.NewReader("whole")})
	if h.closed != nil {
		t.Error("a held body is read through a goroutine")
	}
	if data, err := io.ReadAll(h); string(data) != "whole" || err != nil || h.n.Load() != 5 {
		t.Errorf("held body: %q %v, counted %d", data, err, h.n.Load())
	}
}
