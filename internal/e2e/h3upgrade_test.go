package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestProcessUpgradeHTTP3 upgrades a sluice serving HTTP/3 with SIGUSR2
// while HTTP/3 clients keep opening new QUIC connections and one
// connection has an upload in flight. The config names backend b1 for the
// old process and b2 for the new one (the new process reads the file
// again), so every response tells which process served it. No request
// fails; a connection opened once the old process has handed over is the
// new process's although the old one still reads the socket (it forwards
// them: its log says how many datagrams, none dropped); the upload sends
// the second half of its body after the hand-over and not one of its
// packets is lost (each reaches the old process, whose connection it is);
// the old process exits 0 once the upload is answered.
func TestProcessUpgradeHTTP3(t *testing.T) {
	t.Parallel()
	needBinary(t)
	dir := t.TempDir()
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	held := startHeldBackend(t)
	ca := newTestCA(t, "e2e CA")
	cert := ca.issue(t, leafOpts{names: []string{"a.test"}}).write(t, dir, "site")
	p := startUpgradable(t, dir, binary, h3YAML(cert, b1.URL(), held.URL, ""))
	cfgFile, pidfile, logs := p.cfgFile, p.pidFile, p.logs
	addr := p.addr("public")
	pid1 := p.pid(0)
	tlsConf := &tls.Config{RootCAs: ca.pool, ServerName: "a.test"}
	if got, err := h3Fresh(addr, tlsConf, nil); err != nil || got != "b1" {
		t.Fatalf("before the upgrade: %q, %v; want a response from b1", got, err)
	}

	admin := waitFor(t, logs, regexp.MustCompile(`msg="admin listening" address=(\S+)`))[1]

	// Through the upgrade the old process holds a response (its backend
	// waits for the test) and an upload to /echo whose body is half sent;
	// both are under way on its connections (in flight to the backends)
	// before the upgrade.
	hold := newH3Client(t, addr, ca)
	holdResp, err := hold.Get("https://a.test/held/upgrade")
	if err != nil {
		t.Fatal(err)
	}
	defer holdResp.Body.Close()
	<-held.started
	var upConn atomic.Pointer[quic.Conn]
	upTr := &http3.Transport{TLSClientConfig: tlsConf,
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			c, err := quic.DialAddr(ctx, addr, tc, qc)
			if err == nil {
				upConn.Store(c)
			}
			return c, err
		}}
	defer upTr.Close()
	body, bodyW := io.Pipe()
	defer bodyW.Close()
	req, _ := http.NewRequest("POST", "https://a.test/echo", body)
	type result struct {
		resp *http.Response
		err  error
	}
	upc := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Transport: upTr, Timeout: time.Minute}).Do(req)
		upc <- result{resp, err}
	}()
	// Past the 64 KiB that sluice keeps to replay a body: it streams.
	chunk := strings.Repeat("u", 80<<10)
	if _, err := io.WriteString(bodyW, chunk); err != nil {
		t.Fatal(err)
	}
	ac := newClient(t)
	eventually(t, 30*time.Second, "the upload in flight to its backend", func() bool { return inFlight(ac, admin) >= 2 })

	// The load: new QUIC connections, one request each, and one client
	// that keeps its connection; each request notes whether it began
	// before the upgrade (0), during it (1) or after the hand-over (2),
	// and a fresh one also the phase once its connection was up. Its
	// handshake is the old process's if it began before the hand-over
	// (phase 0 or 1 at the dial) and the new one's if it began after
	// (2); a handshake that the loaded machine draws out may span the
	// phases, so a connection up in phase 0 must reach b1 and one dialled
	// in phase 2 must reach b2.
	var phase atomic.Int32
	type outcome struct {
		phase   int32 // at the request's start (the dial's, when fresh)
		up      int32 // once its connection was up
		fresh   bool  // on a new connection
		backend string
		err     error
	}
	var mu sync.Mutex
	var outcomes []outcome
	note := func(ph, up int32, fresh bool, be string, err error) {
		mu.Lock()
		outcomes = append(outcomes, outcome{ph, up, fresh, be, err})
		mu.Unlock()
	}
	countAfter := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range outcomes {
			if o.phase == 2 {
				n++
			}
		}
		return n
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 300; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.Load()
				var up atomic.Int32 // the dial may run on the transport's goroutine
				up.Store(ph)
				be, err := h3Fresh(addr, tlsConf, func() { up.Store(phase.Load()) })
				note(ph, up.Load(), true, be, err)
			}
		}()
	}
	keep := &http3.Transport{TLSClientConfig: tlsConf,
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tc, qc)
		}}
	defer keep.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &http.Client{Transport: keep, Timeout: 15 * time.Second}
		for n := 0; n < 1000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			ph := phase.Load()
			be, err := h3Get(c)
			note(ph, ph, false, be, err)
			time.Sleep(5 * time.Millisecond) // a bounded load
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(300 * time.Millisecond)

	// The upgrade, the config now naming b2.
	writeFileAtomic(t, cfgFile, []byte(withEngineYAML(h3YAML(cert, b2.URL(), held.URL, ""))))
	phase.Store(1)
	p.Process.Signal(syscall.SIGUSR2)
	pid2 := waitPID(t, pidfile, pid1)
	waitFor(t, logs, regexp.MustCompile(`draining after the hand-over`))
	phase.Store(2)
	// The old process drains (the upload holds it) while new connections
	// come: each must reach the new process.
	eventually(t, 60*time.Second, "40 requests begun after the hand-over", func() bool { return countAfter() >= 40 })
	if _, err := io.WriteString(bodyW, chunk[:32<<10]); err != nil {
		t.Fatalf("the upload's second half, after the hand-over: %v", err)
	}
	bodyW.Close()
	up := <-upc
	if up.err != nil {
		t.Fatalf("the upload across the hand-over: %v", up.err)
	}
	upBody, err := io.ReadAll(up.resp.Body)
	up.resp.Body.Close()
	if err != nil || up.resp.StatusCode != 200 || up.resp.Header.Get("X-Backend") != "b1" {
		t.Fatalf("the upload across the hand-over: %d from %q, %v; want 200 from b1 (the old process)", up.resp.StatusCode, up.resp.Header.Get("X-Backend"), err)
	}
	if e := parseEcho(t, string(upBody)); e.BodyBytes != 112<<10 {
		t.Errorf("the upload's backend got %d bytes, want %d", e.BodyBytes, 112<<10)
	}
	held.release <- struct{}{}
	if rest, err := io.ReadAll(holdResp.Body); string(rest) != "first\nsecond\n" || err != nil {
		t.Errorf("the response the old process held through the upgrade: %q, %v", rest, err)
	}
	if c := upConn.Load(); c == nil {
		t.Error("the upload's connection was not recorded")
	} else if st := c.ConnectionStats(); st.PacketsLost != 0 {
		t.Errorf("the upload's connection lost %d of %d packets across the hand-over, want none (its datagrams must reach the old process)",
			st.PacketsLost, st.PacketsSent)
	}
	close(stop)
	wg.Wait()

	// The tally: nothing failed; a request on a connection up before the
	// upgrade got b1, one on a new connection dialled after the hand-over
	// b2 (the kept connection is the old process's until its GOAWAY:
	// either).
	var failed []string
	count := map[string]int{}
	for _, o := range outcomes {
		key := fmt.Sprintf("phase %d (up %d) fresh=%v %s", o.phase, o.up, o.fresh, o.backend)
		switch {
		case o.err != nil:
			failed = append(failed, fmt.Sprintf("phase %d fresh=%v: %v", o.phase, o.fresh, o.err))
			continue
		case o.up == 0 && o.backend != "b1", o.phase == 2 && o.fresh && o.backend != "b2", o.backend != "b1" && o.backend != "b2":
			failed = append(failed, "a request begun in "+key)
		}
		count[key]++
	}
	t.Logf("HTTP/3 requests through the upgrade (pid %d → %d): %v", pid1, pid2, count)
	if len(failed) > 0 {
		t.Errorf("%d of %d HTTP/3 requests failed or reached the wrong process:\n%s", len(failed), len(outcomes),
			strings.Join(failed[:min(len(failed), 20)], "\n"))
	}

	if err := p.Wait(); err != nil {
		t.Fatalf("the old process after the upgrade: %v, want exit 0", err)
	}
	m := regexp.MustCompile(`datagrams not this process's went to the new process during the drain" listener=public forwarded=(\d+) dropped=(\d+)`).FindStringSubmatch(logs())
	if m == nil {
		t.Fatal("the old process did not log what it forwarded to the new one")
	}
	if fwd, _ := strconv.Atoi(m[1]); fwd == 0 || m[2] != "0" {
		t.Errorf("the old process forwarded %s datagrams and dropped %s, want some and none", m[1], m[2])
	}
	if got, err := h3Fresh(addr, tlsConf, nil); err != nil || got != "b2" {
		t.Errorf("after the old process exited: %q, %v; want a response from b2", got, err)
	}
}

// h3Fresh sends one GET on a new QUIC connection and returns the backend
// that answered; up, when not nil, is called once the connection's
// handshake is done.
func h3Fresh(addr string, tlsConf *tls.Config, up func()) (string, error) {
	tr := &http3.Transport{TLSClientConfig: tlsConf,
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			c, err := quic.DialAddr(ctx, addr, tc, qc)
			if err == nil && up != nil {
				up()
			}
			return c, err
		}}
	defer tr.Close()
	return h3Get(&http.Client{Transport: tr, Timeout: 15 * time.Second})
}

// h3Get sends one GET over HTTP/3 and returns the backend that answered
// 200.
func h3Get(c *http.Client) (string, error) {
	resp, err := c.Get("https://a.test/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 3 {
		return "", fmt.Errorf("%s %d, want HTTP/3 200", resp.Proto, resp.StatusCode)
	}
	return resp.Header.Get("X-Backend"), nil
}
