// Command idleclients opens N keep-alive client connections to one loopback
// HTTP address, sends one "GET / HTTP/1.1" request on each, reads the
// response, and then holds every connection open, idle, for a fixed time.
// It is used by bench/run.sh to measure a proxy's memory with many idle
// clients. Everything is bounded: per-connection deadlines, a global timeout,
// and the hold time.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "loopback host:port to connect to")
	n := flag.Int("n", 10000, "number of connections")
	hold := flag.Duration("hold", 10*time.Second, "how long to keep the connections open once established")
	conc := flag.Int("c", 200, "connections being set up at once")
	timeout := flag.Duration("timeout", 5*time.Second, "per-connection dial + request timeout")
	path := flag.String("path", "/", "request path")
	overTLS := flag.Bool("tls", false, "speak TLS (HTTP/1.1 by ALPN; the server's certificate is not checked: a loopback benchmark)")
	h2 := flag.Bool("h2", false, "speak HTTP/2: over TLS by ALPN with -tls, else h2c with prior knowledge")
	srcs := flag.Int("srcs", 1, "source addresses to spread the connections over: 127.0.0.1 … 127.0.0.N (each holds at most one ephemeral port range)")
	flag.Parse()

	host, _, err := net.SplitHostPort(*addr)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "idleclients: -addr must be a loopback ip:port, got %q\n", *addr)
		os.Exit(2)
	}
	if *n < 1 || *conc < 1 || *srcs < 1 || *srcs > 254 {
		fmt.Fprintln(os.Stderr, "idleclients: -n and -c must be >= 1, -srcs 1..254")
		os.Exit(2)
	}
	raiseNoFile(uint64(*n) + 64)

	var (
		mu      sync.Mutex
		conns   = make([]net.Conn, 0, *n)
		ok      atomic.Int64
		failed  atomic.Int64
		lastErr atomic.Value
		wg      sync.WaitGroup
		sem     = make(chan struct{}, *conc)
	)
	req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *addr + "\r\nUser-Agent: sluice-bench-idleclients\r\n\r\n")
	start := time.Now()
	for i := 0; i < *n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := open(*addr, srcAddr(i, *srcs), req, *timeout, *overTLS, *h2, *path)
			if err != nil {
				failed.Add(1)
				lastErr.Store(err.Error())
				return
			}
			ok.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	setup := time.Since(start)
	le, _ := lastErr.Load().(string)
	fmt.Printf("idleclients addr=%s requested=%d ok=%d failed=%d setup=%s last_error=%q\n",
		*addr, *n, ok.Load(), failed.Load(), setup.Round(time.Millisecond), le)

	time.Sleep(*hold)

	// Count connections the server closed while they were held idle.
	var alive int
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		_, err := c.Read(b[:])
		if ne, isNet := err.(net.Error); isNet && ne.Timeout() {
			alive++
		}
		c.Close()
	}
	fmt.Printf("idleclients held=%s alive_at_end=%d\n", *hold, alive)
}

// srcAddr is the local address of connection i: 127.0.0.(1 + i mod srcs),
// any port; nil (the kernel's choice) with one source address.
func srcAddr(i, srcs int) *net.TCPAddr {
	if srcs == 1 {
		return nil
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%srcs))}
}

// open dials addr from src, sends req and reads one full response, leaving
// the connection open for keep-alive.
func open(addr string, src *net.TCPAddr, req []byte, timeout time.Duration, overTLS, h2 bool, path string) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if src != nil {
		d.LocalAddr = src
		// The port is chosen at connect(2), for the whole 4-tuple, not
		// at bind(2): each source address has the full port range.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if h2 {
		return openH2(c, addr, path, overTLS)
	}
	if overTLS {
		c = tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	}
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.Close || br.Buffered() > 0 {
		c.Close()
		return nil, fmt.Errorf("server did not keep the connection alive")
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// openH2 makes one HTTP/2 request on c and leaves the connection open,
// idle. Its client's reader goroutine keeps reading it: the hold's end
// sees the connection alive while the client has not seen it close.
func openH2(c net.Conn, addr, path string, overTLS bool) (net.Conn, error) {
	scheme := "http"
	if overTLS {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
			c.Close()
			return nil, fmt.Errorf("no h2 by ALPN (%v)", err)
		}
		c, scheme = tc, "https"
	}
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	req, _ := http.NewRequest("GET", scheme+"://"+addr+path, nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return h2Held{c, cc}, nil
}

// h2Held is an idle HTTP/2 connection: alive while its client conn can
// take a request (its reader goroutine owns reads).
type h2Held struct {
	net.Conn
	cc *http2.ClientConn
}

func (h h2Held) Read([]byte) (int, error) {
	if h.cc.CanTakeNewRequest() {
		return 0, os.ErrDeadlineExceeded
	}
	return 0, io.EOF
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT.
const ipBindAddressNoPort = 24

// raiseNoFile lifts the soft RLIMIT_NOFILE towards want (at most the hard limit).
func raiseNoFile(want uint64) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return
	}
	if r.Cur >= want {
		return
	}
	r.Cur = min(want, r.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		fmt.Fprintln(os.Stderr, "idleclients: setrlimit:", err)
	}
	if r.Cur < want {
		fmt.Fprintf(os.Stderr, "idleclients: RLIMIT_NOFILE hard limit %d < %d wanted\n", r.Max, want)
	}
}
