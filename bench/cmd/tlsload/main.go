// Command tlsload measures new TLS connections: each of -c workers, for -d,
// opens a TCP connection to a loopback https:// URL, does a TLS handshake,
// sends one "GET PATH HTTP/1.1" with "Connection: close", reads the whole
// response and closes the connection, then starts again. Without -resume no
// session is ever resumed (no ClientSessionCache), so every request costs the
// server a full handshake: key exchange plus a signature with its
// certificate's key. It is used by bench/tls.sh for the "new TLS handshakes
// per proxy CPU-second" scenario, because wrk resumes TLS sessions when it
// reconnects (it keeps the SSL session across SSL_clear).
//
// With -keepalive each worker keeps one connection instead (reconnecting
// after an error) and sends its requests on it, one at a time; with -rate R
// as well, the workers together offer R requests per second, each on a fixed
// schedule (worker i every c/R seconds, the workers' schedules staggered),
// and a request's latency is measured from the moment the schedule meant it
// to be sent, so a server that falls behind is charged for the whole wait
// (wrk2's correction for coordinated omission). That is bench/tls.sh's
// fixed-rate HTTPS scenario: latencies at an equal load below saturation.
//
// At the end it prints one line in the format of the shared harness's wrk
// reporter (report.lua), latencies in microseconds from the start of the dial
// to the end of the response:
//
//	BENCHLINE requests=N duration_us=D p50_us=.. p90_us=.. p99_us=.. max_us=.. mean_us=.. err_connect=.. err_read=.. err_write=.. err_status=.. err_timeout=.. bytes=..
//
// plus a human summary (handshakes, resumed, TLS version, suite, ALPN) on
// stderr. Everything is bounded: -d, per-connection -timeout.
package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type worker struct {
	lat                                   []time.Duration
	ok, errConnect, errRead, errWrite     int64
	errStatus, errTimeout, bytes, resumed int64
	version, suite                        uint16
	alpn                                  string
}

func main() {
	rawURL := flag.String("url", "https://127.0.0.1:8490/", "loopback https:// URL")
	conns := flag.Int("c", 50, "concurrent connections (workers)")
	dur := flag.Duration("d", 10*time.Second, "how long to run")
	timeout := flag.Duration("timeout", 5*time.Second, "per-connection deadline (dial, handshake, request, response)")
	resume := flag.Bool("resume", false, "resume TLS sessions (a client session cache per worker)")
	curves := flag.String("curves", "X25519,P-256", "key exchange groups offered, in order (X25519, P-256, P-384): OpenSSL's defaults, so that Go and OpenSSL servers agree on one")
	alpn := flag.String("alpn", "http/1.1", "ALPN protocols offered (comma list; empty = none)")
	keepalive := flag.Bool("keepalive", false, "one connection per worker, many requests on it (no handshake per request)")
	rate := flag.Float64("rate", 0, "with -keepalive: requests per second offered by all workers together, each on a fixed schedule, latency from the scheduled time (0: as fast as each worker can)")
	flag.Parse()

	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "https" || u.Port() == "" {
		fail("-url must be https://IP:PORT/PATH, got %q", *rawURL)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		fail("-url must name a loopback IP, got %q", u.Host)
	}
	if *conns < 1 || *dur <= 0 || *timeout <= 0 {
		fail("-c, -d and -timeout must be positive")
	}
	if *rate < 0 || *rate > 0 && !*keepalive {
		fail("-rate must be positive, and goes with -keepalive")
	}
	var groups []tls.CurveID
	for _, g := range strings.Split(*curves, ",") {
		switch strings.TrimSpace(g) {
		case "X25519":
			groups = append(groups, tls.X25519)
		case "P-256":
			groups = append(groups, tls.CurveP256)
		case "P-384":
			groups = append(groups, tls.CurveP384)
		default:
			fail("unknown group %q in -curves", g)
		}
	}
	var protos []string
	if *alpn != "" {
		protos = strings.Split(*alpn, ",")
	}
	path := u.RequestURI()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: tlsload\r\nConnection: close\r\n\r\n")
	if *keepalive {
		req = []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: tlsload\r\n\r\n")
	}
	// every: each worker's interval between requests at -rate (0: none).
	var every time.Duration
	if *rate > 0 {
		every = time.Duration(float64(*conns) / *rate * float64(time.Second))
	}

	ws := make([]*worker, *conns)
	var wg sync.WaitGroup
	var stop atomic.Bool
	start := time.Now()
	end := start.Add(*dur)
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 4096)}
		ws[i] = w
		conf := &tls.Config{
			// The load generator does not verify the chain (as wrk and h2load
			// do not); the server's CertificateVerify signature is still checked
			// against the certificate's key by crypto/tls.
			InsecureSkipVerify: true,
			CurvePreferences:   groups,
			NextProtos:         protos,
		}
		if *resume {
			conf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReaderSize(nil, 4096)
			if *keepalive {
				// Worker i's schedule starts i/c of an interval in.
				w.keep(u.Host, conf, req, br, *timeout, start.Add(every*time.Duration(i)/time.Duration(*conns)), every, end, &stop)
				return
			}
			for !stop.Load() && time.Now().Before(end) {
				w.one(u.Host, conf, req, br, *timeout, end)
			}
		}()
	}
	time.Sleep(time.Until(end))
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	var t worker
	for _, w := range ws {
		all = append(all, w.lat...)
		t.ok += w.ok
		t.errConnect += w.errConnect
		t.errRead += w.errRead
		t.errWrite += w.errWrite
		t.errStatus += w.errStatus
		t.errTimeout += w.errTimeout
		t.bytes += w.bytes
		t.resumed += w.resumed
		if w.version != 0 {
			t.version, t.suite, t.alpn = w.version, w.suite, w.alpn
		}
	}
	slices.Sort(all)
	pct := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p/100*float64(len(all))+0.5) - 1
		i = max(0, min(i, len(all)-1))
		return all[i].Microseconds()
	}
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	var mean, maxd int64
	if len(all) > 0 {
		mean = (sum / time.Duration(len(all))).Microseconds()
		maxd = all[len(all)-1].Microseconds()
	}
	// "requests" counts responses received (any status), as wrk does.
	requests := t.ok + t.errStatus
	fmt.Fprintf(os.Stderr, "tlsload %s c=%d %s: %d responses (%d non-2xx), %.0f conn/s, %d resumed, %s %s alpn=%q; errors connect %d read %d write %d timeout %d\n",
		*rawURL, *conns, elapsed.Round(time.Millisecond), requests, t.errStatus, float64(requests)/elapsed.Seconds(), t.resumed,
		tls.VersionName(t.version), tls.CipherSuiteName(t.suite), t.alpn, t.errConnect, t.errRead, t.errWrite, t.errTimeout)
	fmt.Printf("BENCHLINE requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d bytes=%d\n",
		requests, elapsed.Microseconds(), pct(50), pct(90), pct(99), maxd, mean, t.errConnect, t.errRead, t.errWrite, t.errStatus, t.errTimeout, t.bytes)
}

// keep sends requests on one connection (a new one after an error) until
// end: back to back when every is 0, else the n-th at first+n×every, or at
// once when it is already late, its latency counted from first+n×every.
func (w *worker) keep(addr string, conf *tls.Config, req []byte, br *bufio.Reader, timeout time.Duration, first time.Time, every time.Duration, end time.Time, stop *atomic.Bool) {
	var c *tls.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	next := first
	for !stop.Load() {
		var t0 time.Time // the scheduled time, at -rate
		if every > 0 {
			if next.After(end) {
				return
			}
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			t0, next = next, next.Add(every)
		}
		if !time.Now().Before(end) {
			return
		}
		if c == nil {
			if c = w.connect(addr, conf, br, time.Now().Add(timeout), end); c == nil {
				continue
			}
		}
		c.SetDeadline(time.Now().Add(timeout))
		if t0.IsZero() {
			t0 = time.Now()
		}
		ok := w.exchange(c, req, br, t0, end)
		if !ok {
			c.Close()
			c = nil
		}
	}
}

// exchange sends req on c and reads its response, counting it (latency from
// t0); it reports whether c can carry another request.
func (w *worker) exchange(c *tls.Conn, req []byte, br *bufio.Reader, t0, end time.Time) bool {
	if _, err := c.Write(req); err != nil {
		w.count(err, &w.errWrite)
		return false
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if time.Now().Before(end) {
			w.count(err, &w.errRead)
		}
		return false
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		if time.Now().Before(end) {
			w.count(err, &w.errRead)
		}
		return false
	}
	w.lat = append(w.lat, time.Since(t0))
	w.bytes += n
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		w.errStatus++
	} else {
		w.ok++
	}
	return !resp.Close
}

// one makes one connection and one request on it, its latency counted
// from the dial.
func (w *worker) one(addr string, conf *tls.Config, req []byte, br *bufio.Reader, timeout time.Duration, end time.Time) {
	t0 := time.Now()
	c := w.connect(addr, conf, br, t0.Add(timeout), end)
	if c == nil {
		return
	}
	defer c.Close()
	w.exchange(c, req, br, t0, end)
}

// connect dials addr and does the TLS handshake, all by deadline, with br
// reading from the connection; it counts a failure (one cut short by the
// end of the run is none) and returns nil then.
func (w *worker) connect(addr string, conf *tls.Config, br *bufio.Reader, deadline, end time.Time) *tls.Conn {
	d := net.Dialer{Deadline: deadline}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		w.count(err, &w.errConnect)
		time.Sleep(10 * time.Millisecond) // do not spin on a refused port
		return nil
	}
	raw.SetDeadline(deadline)
	c := tls.Client(raw, conf)
	if err := c.Handshake(); err != nil {
		c.Close()
		if time.Now().Before(end) {
			w.count(err, &w.errConnect)
		}
		return nil
	}
	br.Reset(c)
	cs := c.ConnectionState()
	w.version, w.suite, w.alpn = cs.Version, cs.CipherSuite, cs.NegotiatedProtocol
	if cs.DidResume {
		w.resumed++
	}
	return c
}

func (w *worker) count(err error, n *int64) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		w.errTimeout++
		return
	}
	*n++
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "tlsload: "+format+"\n", a...)
	os.Exit(2)
}
