package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/rawio"
	"github.com/sluice-lb/sluice/internal/tlsterm"
)

// front sits between a listener generation's socket and its HTTP/1 server
// (the engine or net/http) when the listener speaks more than cleartext
// HTTP/1: it reads the PROXY protocol header (proxy_protocol), terminates
// TLS, and hands each connection to its protocol. A
// TLS connection whose client chose "h2" by ALPN, or (with h2c) a cleartext
// connection that opens with the HTTP/2 preface, is served by the HTTP/2
// server here; every other connection is returned by Accept to the HTTP/1
// server, already past its handshake. Handshakes and the preface peek run
// on a goroutine per connection, never on the accept loop.
//
// A connection accepted before Close is served even when its handshake
// ends after: Close stops accepting, but Accept goes on returning the
// connections whose handshake was under way until none is left (the
// HTTP/1 servers serve a connection accepted as they shut down), and an
// HTTP/2 one is served and then sent GOAWAY. A client whose ClientHello
// was still on its way when a reload or an upgrade replaced the listener
// is not cut off.
type front struct {
	inner net.Listener
	o     frontOptions

	conns   chan net.Conn  // HTTP/1 connections for Accept
	closed  chan struct{}  // Close was called: accept nothing new
	settled chan struct{}  // closed, and no connection left in its handshake
	dead    chan struct{}  // closeAll was called: hand over nothing more
	away    chan struct{}  // shutdown has sent GOAWAY on the HTTP/2 connections served before Close
	awayOne sync.Once      // closes away
	once    sync.Once      // closes closed
	dying   sync.Once      // closes dead
	wg      sync.WaitGroup // the accept loop and the per-connection goroutines

	mu      sync.Mutex             // guards h2s, pending, handing, looping and isSettled
	h2s     map[net.Conn]func()    // each HTTP/2 connection, and how closeAll closes it
	pending map[net.Conn]time.Time // in their handshake, with its deadline
	handing int                    // past their handshake, on their way to Accept
	looping bool                   // the accept loop runs
	// isSettled: settled is closed.
	isSettled bool
}

// frontOptions configure a front for one listener generation.
type frontOptions struct {
	// TLS terminates TLS when set; NextProtos decides whether h2 is offered.
	TLS *tls.Config
	// TLSBase, when set, is what TLS runs over: the accepted connection
	// (with raw reads and writes) wrapped so that an event loop can take
	// it over after the handshake (h1.LoopTLS).
	TLSBase func(net.Conn) net.Conn
	// H2C accepts HTTP/2 over cleartext by prior knowledge.
	H2C bool
	// HandshakeTimeout bounds the TLS handshake and the preface peek
	// (timeouts.read_header).
	HandshakeTimeout time.Duration
	// H2 serves the HTTP/2 connections.
	H2 h2Serving
	// Handshake is told each TLS handshake's result.
	Handshake func(ok bool)
	// ConnState is told +1 and -1 around each HTTP/2 connection.
	ConnState func(delta int64)
	// H2Guard limits what an HTTP/2 client may flood the server with
	// beyond what x/net bounds (see package h2guard).
	H2Guard *h2guard.Config
	// ProxyProtocol: every connection opens with a PROXY protocol header,
	// read within HandshakeTimeout before anything else (before TLS);
	// the connection then reports the client the header names. One
	// without a valid header is closed, and so is one from a peer Trusted
	// refuses (nil Trusted: any peer). Rejected is told each refusal.
	ProxyProtocol bool
	Trusted       func(netip.Addr) bool
	Rejected      func(proxy.Reject)
}

func newFront(inner net.Listener, o frontOptions) *front {
	if o.Handshake == nil {
		o.Handshake = func(bool) {}
	}
	if o.ConnState == nil {
		o.ConnState = func(int64) {}
	}
	if o.Rejected == nil {
		o.Rejected = func(proxy.Reject) {}
	}
	f := &front{inner: inner, o: o, conns: make(chan net.Conn), closed: make(chan struct{}),
		settled: make(chan struct{}), dead: make(chan struct{}), away: make(chan struct{}), h2s: map[net.Conn]func(){},
		pending: map[net.Conn]time.Time{}, looping: true}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.loop()
	}()
	return f
}

func (f *front) loop() {
	defer func() {
		f.mu.Lock()
		f.looping = false
		f.settleLocked()
		f.mu.Unlock()
	}()
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
		deadline := time.Time{}
		if d := f.o.HandshakeTimeout; d > 0 {
			deadline = time.Now().Add(d)
		}
		f.mu.Lock()
		f.pending[c] = deadline
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.dispatch(c)
		}()
	}
}

// settleLocked closes settled once f is closed and nothing more can reach
// Accept. Called with f.mu held.
func (f *front) settleLocked() {
	select {
	case <-f.closed:
	default:
		return
	}
	if !f.looping && len(f.pending) == 0 && f.handing == 0 && !f.isSettled {
		f.isSettled = true
		close(f.settled)
	}
}

// done says that c, in its handshake, was closed.
func (f *front) done(c net.Conn) {
	f.mu.Lock()
	delete(f.pending, c)
	f.settleLocked()
	f.mu.Unlock()
}

// dispatch reads the PROXY header of raw and terminates TLS, if the
// listener has them, and sends the connection to its protocol.
func (f *front) dispatch(raw net.Conn) {
	// The handshake's deadline, set under the lock that Close takes to
	// shorten it. It bounds the PROXY header and the TLS handshake
	// together (read_header); a PROXY header is bounded even without one.
	f.mu.Lock()
	deadline := f.pending[raw]
	if f.o.ProxyProtocol && deadline.IsZero() {
		deadline = time.Now().Add(10 * time.Second)
		f.pending[raw] = deadline
	}
	raw.SetDeadline(deadline)
	f.mu.Unlock()
	c := raw
	if f.o.ProxyProtocol {
		pc, err := proxyproto.Accept(raw, f.o.Trusted, time.Time{})
		if err != nil {
			f.o.Rejected(proxy.ProxyReject(err))
			raw.Close()
			f.done(raw)
			return
		}
		c = pc
	}
	if f.o.TLS != nil {
		// Beneath TLS, reads and writes are raw system calls on the
		// socket (see rawio); the HTTP/1.1 engine makes its own over a
		// plain one.
		base := rawio.New(c, proxyproto.TCP(c))
		if f.o.TLSBase != nil {
			base = f.o.TLSBase(base)
		}
		tc := tls.Server(base, f.o.TLS)
		err := tc.Handshake()
		f.o.Handshake(err == nil)
		if err != nil {
			raw.Close()
			f.done(raw)
			return
		}
		switch tc.ConnectionState().NegotiatedProtocol {
		case "h2":
			f.serveH2(tc, raw)
			return
		case tlsterm.ALPNChallenge:
			// A CA validating TLS-ALPN-01: the handshake was the answer
			// (RFC 8737 §3); nothing is served on it.
			tc.Close()
			f.done(raw)
			return
		}
		f.hand(tc, raw)
		return
	}
	if f.o.H2C {
		if deadline.IsZero() {
			deadline = time.Now().Add(10 * time.Second) // read_header 0: still bounded
		}
		if isH2, ok := peekPreface(c, deadline); !ok {
			raw.Close()
			f.done(raw)
			return
		} else if isH2 {
			f.serveH2(rawio.New(c, proxyproto.TCP(c)), raw)
			return
		}
	}
	f.hand(c, raw)
}

// hand gives an HTTP/1 connection to Accept: the HTTP/1 server takes it
// even after Close, until Accept has said the listener is closed, which it
// does only once every handshake has ended (see front). raw is the
// accepted connection beneath c.
func (f *front) hand(c, raw net.Conn) {
	f.mu.Lock()
	delete(f.pending, raw) // Close leaves its deadline alone from now on
	f.handing++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.handing--
		f.settleLocked()
		f.mu.Unlock()
	}()
	c.SetDeadline(time.Time{})
	select {
	case f.conns <- c:
	case <-f.dead:
		c.Close()
	}
}

// serveH2 serves one HTTP/2 connection until it ends (or, on an event
// loop, until the loop has it). One whose handshake
// ended after Close is served too, and told GOAWAY once its first request
// has arrived (or after freshGrace): shutdown's GOAWAY went out before it
// was served. raw is the accepted connection beneath c.
func (f *front) serveH2(c, raw net.Conn) {
	f.mu.Lock()
	select {
	case <-f.dead:
		delete(f.pending, raw)
		f.settleLocked()
		f.mu.Unlock()
		c.Close()
		return
	default:
	}
	late := false
	select {
	case <-f.closed:
		late = true
	default:
	}
	f.h2s[c] = func() { c.Close() }
	delete(f.pending, raw) // Close leaves its deadline alone from now on
	f.settleLocked()
	f.mu.Unlock()
	c.SetDeadline(time.Time{})
	f.o.ConnState(1)
	var stopLate func()
	ended := func() {
		if stopLate != nil {
			stopLate()
		}
		f.mu.Lock()
		delete(f.h2s, c)
		f.mu.Unlock()
		f.o.ConnState(-1)
		f.wg.Done()
	}
	handler := f.o.H2.handler()
	if late {
		// Shutdown's GOAWAY goes to every connection the HTTP/2 server
		// has at that moment: wait until it has gone (or closeAll, or
		// freshGrace) before this one is served, so that it does not get
		// that GOAWAY before its first request.
		t := time.NewTimer(freshGrace)
		select {
		case <-f.away:
		case <-f.dead:
		case <-t.C:
		}
		t.Stop()
		// goAway sends GOAWAY on every connection of the HTTP/2 server
		// that has not had one, this one included once it is served,
		// which it is when a request arrives.
		var once sync.Once
		goAway := func() { once.Do(f.o.H2.goAway) }
		timer := time.AfterFunc(freshGrace, goAway)
		stopLate = func() {
			// A timer that fired runs goAway on a goroutine of its own:
			// wait for it (once.Do returns when it has), so that it is
			// over when f's goroutines are.
			if !timer.Stop() {
				goAway()
			}
		}
		next := handler
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			goAway()
			next.ServeHTTP(w, r)
		})
	}
	// The connection counts in f.wg until ended, which runs here or, for
	// one served on an event loop (with no goroutine of its own while
	// idle), once the loop is done with it.
	f.wg.Add(1)
	if !f.o.H2.serve(c, f.o.H2Guard, handler, nil, nil, f.closer(c), ended) {
		ended()
	}
}

// closer returns what lets the HTTP/2 server take c off Go's poller (onto
// an event loop) and say how closeAll closes it from then on: take runs
// under f.mu, so that closeAll meets c either before it was taken or
// after, with the closer take returned (nil: not taken). False, and take
// not run, when closeAll has run (c is closed).
func (f *front) closer(c net.Conn) func(take func() func()) bool {
	return func(take func() func()) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		select {
		case <-f.dead:
			return false
		default:
		}
		if cl := take(); cl != nil {
			f.h2s[c] = cl
		}
		return true
	}
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
	f.h2s[c] = func() { c.Close() }
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.h2s, c)
		f.mu.Unlock()
	}()
	f.o.H2.serve(c, f.o.H2Guard, f.o.H2.handler(), r, settings, nil, nil)
}

// h2Preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// peekPreface reports whether c opens with the HTTP/2 preface, looking at
// its first bytes without taking them (MSG_PEEK), so that an HTTP/1
// connection reaches its server untouched and keeps its splice path. ok is
// false when the client sent nothing in time or closed.
func peekPreface(c net.Conn, deadline time.Time) (isH2, ok bool) {
	tc := proxyproto.TCP(c)
	if tc == nil {
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

// Accept returns the next HTTP/1 connection, past its handshake; after
// Close, those whose handshake was under way, then net.ErrClosed.
func (f *front) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.settled:
		return nil, net.ErrClosed
	}
}

// Close stops accepting (the socket generation beneath stays with the
// caller). Connections in their handshake finish it (a handshake without
// a deadline gets freshGrace) and are served; HTTP/2 connections are ended
// by shutdown or closeAll.
func (f *front) Close() error {
	f.once.Do(func() {
		f.mu.Lock()
		close(f.closed)
		limit := time.Now().Add(freshGrace)
		for c, d := range f.pending {
			if d.IsZero() || d.After(limit) {
				f.pending[c] = limit
				c.SetDeadline(limit)
			}
		}
		f.settleLocked()
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
	f.o.H2.goAway()
	f.awayOne.Do(func() { close(f.away) })
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

// closeAll closes every HTTP/2 connection and every one in its handshake
// at once.
func (f *front) closeAll() {
	f.Close()
	f.dying.Do(func() { close(f.dead) })
	f.mu.Lock()
	for _, closeIt := range f.h2s {
		closeIt()
	}
	for c := range f.pending {
		c.Close()
	}
	f.mu.Unlock()
}
