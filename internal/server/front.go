package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/h2guard"
)

// front sits between a listener generation's socket and its HTTP/1 server
// (the engine or net/http) when the listener speaks more than cleartext
// HTTP/1: it terminates TLS, and hands each connection to its protocol. A
// TLS connection whose client chose "h2" by ALPN, or (with h2c) a cleartext
// connection that opens with the HTTP/2 preface, is served by the HTTP/2
// server here; every other connection is returned by Accept to the HTTP/1
// server, already past its handshake. Handshakes and the preface peek run
// on a goroutine per connection, never on the accept loop.
type front struct {
	inner net.Listener
	o     frontOptions

	conns  chan net.Conn // HTTP/1 connections for Accept
	closed chan struct{} // Close was called
	once   sync.Once
	wg     sync.WaitGroup // the accept loop and the per-connection goroutines

	mu  sync.Mutex // guards h2s
	h2s map[net.Conn]struct{}
}

// frontOptions configure a front for one listener generation.
type frontOptions struct {
	// TLS terminates TLS when set; NextProtos decides whether h2 is offered.
	TLS *tls.Config
	// H2C accepts HTTP/2 over cleartext by prior knowledge.
	H2C bool
	// HandshakeTimeout bounds the TLS handshake and the preface peek
	// (timeouts.read_header).
	HandshakeTimeout time.Duration
	// H2 serves HTTP/2 connections with Base's handler; ConfigureServer
	// has been called on Base, so that Base.Shutdown sends GOAWAY.
	H2   *http2.Server
	Base *http.Server
	// Handshake is told each TLS handshake's result.
	Handshake func(ok bool)
	// ConnState is told +1 and -1 around each HTTP/2 connection.
	ConnState func(delta int64)
	// H2Guard limits what an HTTP/2 client may flood the server with
	// beyond what x/net bounds (see package h2guard).
	H2Guard *h2guard.Config
}

func newFront(inner net.Listener, o frontOptions) *front {
	if o.Handshake == nil {
		o.Handshake = func(bool) {}
	}
	if o.ConnState == nil {
		o.ConnState = func(int64) {}
	}
	f := &front{inner: inner, o: o, conns: make(chan net.Conn), closed: make(chan struct{}),
		h2s: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.loop()
	}()
	return f
}

func (f *front) loop() {
	for {
		c, err := f.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-f.closed:
				return
			case <-time.After(5 * time.Millisecond):
				continue
			}
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.dispatch(c)
		}()
	}
}

// dispatch terminates TLS on c, if the listener has it, and sends c to its
// protocol.
func (f *front) dispatch(c net.Conn) {
	deadline := time.Time{}
	if d := f.o.HandshakeTimeout; d > 0 {
		deadline = time.Now().Add(d)
	}
	if f.o.TLS != nil {
		tc := tls.Server(c, f.o.TLS)
		c.SetDeadline(deadline)
		err := tc.Handshake()
		f.o.Handshake(err == nil)
		if err != nil {
			c.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			f.serveH2(tc)
			return
		}
		f.hand(tc)
		return
	}
	if f.o.H2C {
		if deadline.IsZero() {
			deadline = time.Now().Add(10 * time.Second) // read_header 0: still bounded
		}
		if isH2, ok := peekPreface(c, deadline); !ok {
			c.Close()
			return
		} else if isH2 {
			f.serveH2(c)
			return
		}
	}
	f.hand(c)
}

// hand gives an HTTP/1 connection to Accept.
func (f *front) hand(c net.Conn) {
	c.SetDeadline(time.Time{})
	select {
	case f.conns <- c:
	case <-f.closed:
		c.Close()
	}
}

// serveH2 serves one HTTP/2 connection until it ends.
func (f *front) serveH2(c net.Conn) {
	c.SetDeadline(time.Time{})
	f.mu.Lock()
	select {
	case <-f.closed:
		f.mu.Unlock()
		c.Close()
		return
	default:
	}
	f.h2s[c] = struct{}{}
	f.mu.Unlock()
	f.o.ConnState(1)
	defer func() {
		f.mu.Lock()
		delete(f.h2s, c)
		f.mu.Unlock()
		f.o.ConnState(-1)
	}()
	f.o.H2.ServeConn(h2guard.New(c, f.o.H2Guard), &http2.ServeConnOpts{Handler: f.o.Base.Handler, BaseConfig: f.o.Base})
}

// serveUpgraded serves a connection that switched to HTTP/2 with
// "Upgrade: h2c" on the HTTP/1 server: r is its stream 1.
func (f *front) serveUpgraded(c net.Conn, r *http.Request, settings []byte) {
	f.mu.Lock() // orders the Add before shutdown's Wait: Close takes f.mu
	select {
	case <-f.closed:
		f.mu.Unlock()
		c.Close()
		return
	default:
	}
	f.wg.Add(1)
	defer f.wg.Done()
	f.h2s[c] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.h2s, c)
		f.mu.Unlock()
	}()
	f.o.H2.ServeConn(h2guard.New(c, f.o.H2Guard), &http2.ServeConnOpts{Handler: f.o.Base.Handler,
		BaseConfig: f.o.Base, UpgradeRequest: r, Settings: settings})
}

// h2Preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// peekPreface reports whether c opens with the HTTP/2 preface, looking at
// its first bytes without taking them (MSG_PEEK), so that an HTTP/1
// connection reaches its server untouched and keeps its splice path. ok is
// false when the client sent nothing in time or closed.
func peekPreface(c net.Conn, deadline time.Time) (isH2, ok bool) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return false, true
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false, false
	}
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	var buf [len(h2Preface)]byte
	for {
		n, rerr := 0, error(nil)
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK)
			return !errors.Is(rerr, syscall.EAGAIN)
		})
		if err != nil || rerr != nil || n == 0 {
			return false, false
		}
		if string(buf[:n]) != h2Preface[:n] {
			return false, true // anything else is HTTP/1's to judge
		}
		if n == len(h2Preface) {
			return true, true
		}
		// A prefix of the preface: wait for more. The peek returns at once
		// while those bytes are unread, so give the client a moment (the
		// deadline bounds it).
		time.Sleep(time.Millisecond)
		if time.Now().After(deadline) {
			return false, false
		}
	}
}

// Accept returns the next HTTP/1 connection, past its handshake.
func (f *front) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting (the socket generation beneath stays with the
// caller) and closes connections still in their handshake; HTTP/2
// connections are ended by shutdown or closeAll.
func (f *front) Close() error {
	f.once.Do(func() {
		f.mu.Lock()
		close(f.closed)
		f.mu.Unlock()
		f.inner.Close()
	})
	return nil
}

func (f *front) Addr() net.Addr { return f.inner.Addr() }

// shutdown sends GOAWAY on every HTTP/2 connection and waits until they and
// every goroutine of f have ended, or ctx ends (then it closes them).
func (f *front) shutdown(ctx context.Context) error {
	f.Close()
	f.o.Base.Shutdown(ctx) // GOAWAY through ConfigureServer's shutdown hook
	done := make(chan struct{})
	go func() { // ends with the last of f's goroutines, which closeAll bounds
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		f.closeAll()
		<-done
		return ctx.Err()
	}
}

// closeAll closes every HTTP/2 connection at once.
func (f *front) closeAll() {
	f.Close()
	f.mu.Lock()
	for c := range f.h2s {
		c.Close()
	}
	f.mu.Unlock()
}
