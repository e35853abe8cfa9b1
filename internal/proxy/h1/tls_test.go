package h1

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/rawio"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// tlsListener terminates TLS on the connections of a listener as a TLS
// listener's front does (internal/server, front.go): the handshake on a
// goroutine per connection, over LoopTLS and raw reads and writes, then
// the connection to Accept.
type tlsListener struct {
	net.Listener
	cfg   *tls.Config
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	mu    sync.Mutex
	hs    map[net.Conn]struct{} // in their handshake: Close closes them
}

// serverTLS is the server side of the tests' TLS: a certificate for
// 127.0.0.1 from a CA made for the test binary. clientTLS trusts it.
var serverTLS, clientTLS = func() (func(testing.TB) *tls.Config, func(testing.TB) *tls.Config) {
	var once sync.Once
	var srv, cli *tls.Config
	make := func(tb testing.TB) {
		once.Do(func() {
			ca := testenv.NewCA(tb, "h1 tests")
			is := ca.Issue(tb, testenv.Leaf{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
			srv = &tls.Config{Certificates: []tls.Certificate{is.Pair}, NextProtos: []string{"http/1.1"}}
			cli = &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
		})
	}
	return func(tb testing.TB) *tls.Config { make(tb); return srv }, func(tb testing.TB) *tls.Config { make(tb); return cli }
}()

func newTLSListener(tb testing.TB, ln net.Listener) net.Listener {
	l := &tlsListener{Listener: ln, cfg: serverTLS(tb), conns: make(chan net.Conn), done: make(chan struct{}),
		hs: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.loop()
	tb.Cleanup(func() { l.Close(); l.wg.Wait() })
	return l
}

func (l *tlsListener) loop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.once.Do(func() { close(l.done) })
			return
		}
		l.mu.Lock()
		l.hs[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(LoopTLS(rawio.New(c, proxyproto.TCP(c))), l.cfg)
			err := tc.Handshake()
			l.mu.Lock()
			delete(l.hs, c)
			l.mu.Unlock()
			if err != nil {
				c.Close()
				return
			}
			c.SetDeadline(time.Time{})
			select {
			case l.conns <- tc:
			case <-l.done:
				tc.Close()
			}
		}()
	}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	l.mu.Lock()
	for c := range l.hs {
		c.Close()
	}
	l.mu.Unlock()
	return err
}

// dialEngine connects to the engine at addr: over TLS (its handshake
// done) when tls is set.
func dialEngine(tb testing.TB, addr string, overTLS bool) net.Conn {
	tb.Helper()
	return dialEngineWith(tb, &net.Dialer{Timeout: 5 * time.Second}, addr, overTLS)
}

// dialEngineWith is dialEngine with d.
func dialEngineWith(tb testing.TB, d *net.Dialer, addr string, overTLS bool) net.Conn {
	tb.Helper()
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	if !overTLS {
		return nc
	}
	tc := tls.Client(nc, clientTLS(tb))
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		tb.Fatalf("TLS handshake with the engine: %v", err)
	}
	return tc
}

// tcpOf is the TCP socket beneath a test's client connection.
func tcpOf(nc net.Conn) *net.TCPConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	return nc.(*net.TCPConn)
}
