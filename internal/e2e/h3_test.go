package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/metrics"
)

// This file: HTTP/3 end to end, with quic-go's client: requests, a large
// upload and a streamed response through the same core as HTTP/1.1 and
// HTTP/2, Alt-Svc on the TCP side, the access log and the metrics by
// protocol, a reload under traffic (a kept listener keeps its QUIC
// connections; new settings move them to the next generation with
// GOAWAY), and shutdown's GOAWAY.

// heldBackend is a backend whose /held answers "first\n" at once and
// "second\n" only once the test releases it, so that a test can see a
// response stream without timing anything. Every response carries an
// Alt-Svc of its own, which sluice must replace with its own.
type heldBackend struct {
	URL     string
	release chan struct{}
	started chan struct{} // one value per /held request that began
}

func startHeldBackend(t testing.TB) *heldBackend {
	t.Helper()
	hb := &heldBackend{release: make(chan struct{}), started: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", `h3=":9"; ma=60`)
		w.Header().Set("X-Backend", "held")
		if !strings.HasPrefix(r.URL.Path, "/held") {
			io.WriteString(w, "not held\n")
			return
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		hb.started <- struct{}{}
		select {
		case <-hb.release:
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Second):
		}
		io.WriteString(w, "second\n")
	}))
	t.Cleanup(srv.Close)
	hb.URL = srv.URL
	return hb
}

// h3YAML is a config with one TLS listener "public" serving HTTP/3, whose
// /held paths go to held and the rest to backend; extra is added to the
// listener.
func h3YAML(cert config.Certificate, backend, held, extra string) string {
	return fmt.Sprintf(`listeners:
  - name: public
    address: "127.0.0.1:0"
    http3: true
    tls:
      certificates:
        - {cert: %q, key: %q}
    routes:
      - {path_prefix: /held, pool: held}
      - {path_prefix: /alt, pool: held}
    pool: web%s
pools:
  - name: web
    backends:
      - address: %q
  - name: held
    backends:
      - address: %q
admin:
  address: "127.0.0.1:0"
shutdown_timeout: 10s
`, cert.Cert, cert.Key, extra, backend, held)
}

// h3Setup starts a demo backend, a held backend and sluice from a config
// file (so that Reload reads it), and returns what the tests use.
type h3Setup struct {
	s    *sluice
	ca   *testCA
	file string
	cert config.Certificate
	be   *demoBackend
	held *heldBackend
	addr string // the listener's address, TCP and UDP
}

func startH3(t *testing.T) *h3Setup {
	t.Helper()
	h := &h3Setup{be: startBackend(t, "b1"), held: startHeldBackend(t), ca: newTestCA(t, "e2e CA")}
	dir := t.TempDir()
	h.cert = h.ca.issue(t, leafOpts{names: []string{"a.test"}}).write(t, dir, "site")
	h.file = filepath.Join(dir, "sluice.yaml")
	h.write(t, "")
	cfg, err := config.Load(h.file)
	if err != nil {
		t.Fatal(err)
	}
	h.s = startSluice(t, cfg)
	h.addr = h.s.Addr("public")
	return h
}

// write writes the config file with extra listener keys.
func (h *h3Setup) write(t *testing.T, extra string) {
	t.Helper()
	writeFileAtomic(t, h.file, []byte(withEngineYAML(h3YAML(h.cert, h.be.URL(), h.held.URL, extra))))
}

// h3Client is an HTTP/3 client whose connections all go to one address;
// it counts the QUIC connections it dials.
type h3Client struct {
	*http.Client
	tr    *http3.Transport
	dials atomic.Int64
}

func newH3Client(t testing.TB, addr string, ca *testCA) *h3Client {
	c := &h3Client{}
	c.tr = &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "a.test"},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			c.dials.Add(1)
			return quic.DialAddr(ctx, addr, tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { c.tr.Close() })
	c.Client = &http.Client{Transport: c.tr, Timeout: 15 * time.Second}
	return c
}

// TestHTTP3 serves GET, a 1 MiB upload and a streamed response over
// HTTP/3 through the core (X-Forwarded-Proto https, routing, the backend's
// answer as is), advertises HTTP/3 with Alt-Svc on HTTP/1.1 and HTTP/2
// responses (replacing the backend's own), and counts and logs HTTP/3
// requests as such.
func TestHTTP3(t *testing.T) {
	t.Parallel()
	h := startH3(t)
	c := newH3Client(t, h.addr, h.ca)
	_, port, _ := net.SplitHostPort(h.addr)
	wantAltSvc := `h3=":` + port + `"; ma=86400`

	t.Run("GET", func(t *testing.T) {
		r := get(t, c.Client, "https://a.test/echo")
		if r.Status != 200 || r.Header.Get("X-Backend") != "b1" {
			t.Fatalf("GET: %d from %q, want 200 from b1", r.Status, r.Header.Get("X-Backend"))
		}
		e := parseEcho(t, r.Body)
		if got := e.Headers.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("X-Forwarded-Proto = %q, want https", got)
		}
		if r.Header.Get("X-Request-Id") == "" {
			t.Errorf("no X-Request-Id on the HTTP/3 response")
		}
		if v := r.Header.Get("Alt-Svc"); v != "" {
			t.Errorf("an HTTP/3 response carries Alt-Svc %q, want none", v)
		}
	})
	t.Run("421 for an authority the certificate does not cover", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "https://a.test/", nil)
		req.Host = "b.test" // :authority; the connection's certificate is a.test's
		if r := do(t, c.Client, req); r.Status != http.StatusMisdirectedRequest {
			t.Errorf("GET with :authority b.test: %d, want 421", r.Status)
		}
	})
	t.Run("1 MiB POST", func(t *testing.T) {
		body := make([]byte, 1<<20)
		rand.Read(body)
		sum := sha256.Sum256(body)
		req, _ := http.NewRequest("POST", "https://a.test/echo", strings.NewReader(string(body)))
		// 1 MiB takes seconds under -race on a loaded machine (HTTP/2 too).
		slow := &http.Client{Transport: c.tr, Timeout: time.Minute}
		r := do(t, slow, req)
		if r.Status != 200 {
			t.Fatalf("POST: %d", r.Status)
		}
		e := parseEcho(t, r.Body)
		if got := e.Raw["body_sha256"]; e.BodyBytes != 1<<20 || got != hex.EncodeToString(sum[:]) {
			t.Errorf("the backend got %d bytes with SHA-256 %v, want %d with %x", e.BodyBytes, got, 1<<20, sum)
		}
	})
	t.Run("streaming response", func(t *testing.T) {
		resp, err := c.Get("https://a.test/held/1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		// The first chunk arrives while the backend still holds the rest.
		if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
			t.Fatalf("first chunk: %q, %v", line, err)
		}
		h.held.release <- struct{}{}
		rest, err := io.ReadAll(br)
		if string(rest) != "second\n" || err != nil {
			t.Fatalf("rest: %q, %v; want %q", rest, err, "second\n")
		}
	})
	t.Run("Alt-Svc on HTTP/1.1 and HTTP/2", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			hc := httpsClient(t, h.addr, clientTLS(h.ca, "a.test"), h2, true)
			for _, path := range []string{"/", "/alt", "/nothing-routes-here/../alt"} {
				resp, err := hc.Get("https://a.test" + path)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if got := resp.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != wantAltSvc {
					t.Errorf("%s %s: Alt-Svc %q, want only %q (the backend's replaced)", resp.Proto, path, got, wantAltSvc)
				}
			}
		}
	})
	t.Run("a reload's certificate reaches QUIC handshakes", func(t *testing.T) {
		serial := func() string {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := quic.DialAddr(ctx, h.addr, &tls.Config{RootCAs: h.ca.pool, ServerName: "a.test", NextProtos: []string{http3.NextProtoH3}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseWithError(0, "")
			return conn.ConnectionState().TLS.PeerCertificates[0].SerialNumber.Text(16)
		}
		before := serial()
		leaf := h.ca.issue(t, leafOpts{names: []string{"a.test"}})
		writeFileAtomic(t, h.cert.Key, leaf.keyPEM)
		writeFileAtomic(t, h.cert.Cert, leaf.certPEM)
		if err := h.s.srv.Reload(); err != nil {
			t.Fatal(err)
		}
		if got, want := serial(), leaf.cert.SerialNumber.Text(16); got != want {
			t.Errorf("after the reload a QUIC handshake got serial %s, want the new %s (before: %s)", got, want, before)
		}
	})
	t.Run("access log and metrics", func(t *testing.T) {
		eventually(t, 5*time.Second, "the access log shows HTTP/3.0 requests", func() bool {
			return strings.Contains(h.s.access.String(), `"proto":"HTTP/3.0"`)
		})
		rec := httptest.NewRecorder()
		metrics.NewHandler(h.s.srv).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		// Every HTTP/3 request above got 200, 421 or 404: classes 2xx and 4xx.
		n := 0
		for _, m := range regexp.MustCompile(`(?m)^sluice_listener_requests_total\{code_class="\dxx",listener="public",protocol="HTTP/3.0"\} (\d+)$`).FindAllStringSubmatch(rec.Body.String(), -1) {
			k, _ := strconv.Atoi(m[1])
			n += k
		}
		if n < 3 {
			t.Errorf("HTTP/3 requests counted: %d, want at least 3:\n%s", n, grepLines(rec.Body.String(), "sluice_listener_requests_total"))
		}
	})
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHTTP3ReloadUnderTraffic sends requests on one HTTP/3 client while
// sluice reloads: a reload that keeps the listener as it is keeps the QUIC
// connection (no new dial); one that changes its settings starts a new
// generation, whose GOAWAY moves the client to a new connection. No
// request fails either way.
func TestHTTP3ReloadUnderTraffic(t *testing.T) {
	t.Parallel()
	h := startH3(t)
	c := newH3Client(t, h.addr, h.ca)
	if r := get(t, c.Client, "https://a.test/"); r.Status != 200 {
		t.Fatalf("first request: %d", r.Status)
	}
	load := func(stop <-chan struct{}) (ok int, errs []string) {
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return ok, errs
			default:
			}
			r, err := tryGet(c.Client, "https://a.test/")
			switch {
			case err != nil:
				errs = append(errs, err.Error())
			case r.Status != 200:
				errs = append(errs, "status "+strconv.Itoa(r.Status))
			default:
				ok++
			}
		}
		return ok, errs
	}
	for _, step := range []struct {
		name      string
		extra     string
		wantDials int64
	}{
		{"same settings: the connection stays", "", 1},
		{"new settings: GOAWAY, then a new connection", "\n    timeouts: {idle: 90s}", 2},
	} {
		stop := make(chan struct{})
		type result struct {
			ok   int
			errs []string
		}
		done := make(chan result, 1)
		go func() {
			ok, errs := load(stop)
			done <- result{ok, errs}
		}()
		time.Sleep(200 * time.Millisecond)
		h.write(t, step.extra)
		if err := h.s.srv.Reload(); err != nil {
			t.Fatalf("%s: Reload: %v", step.name, err)
		}
		time.Sleep(300 * time.Millisecond)
		close(stop)
		res := <-done
		if len(res.errs) > 0 || res.ok == 0 {
			t.Errorf("%s: %d requests ok, %d failed: %q", step.name, res.ok, len(res.errs), res.errs[:min(5, len(res.errs))])
		}
		if got := c.dials.Load(); got != step.wantDials {
			t.Errorf("%s: %d QUIC connections dialled in all, want %d", step.name, got, step.wantDials)
		}
	}
}

// TestHTTP3GOAWAY ends an HTTP/3 listener while a response is streaming,
// by shutdown and by a reload that removes the listener: the client gets
// GOAWAY (a new request on the connection is refused by the client
// itself), the response in flight ends complete, and the connection then
// closes with H3_NO_ERROR.
func TestHTTP3GOAWAY(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"shutdown", "reload removes the listener"} {
		t.Run(how, func(t *testing.T) {
			h := startH3(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := quic.DialAddr(ctx, h.addr, &tls.Config{RootCAs: h.ca.pool, ServerName: "a.test", NextProtos: []string{http3.NextProtoH3}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseWithError(0, "")
			cc := (&http3.Transport{}).NewClientConn(conn)
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://a.test/held/goaway", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
				t.Fatalf("first chunk: %q, %v", line, err)
			}
			stopped := make(chan struct{})
			if how == "shutdown" {
				go func() {
					defer close(stopped)
					h.s.Stop()
				}()
			} else {
				yaml := strings.Replace(h3YAML(h.cert, h.be.URL(), h.held.URL, ""), "  - name: public\n    address: \"127.0.0.1:0\"\n    http3: true\n",
					"  - name: other\n    address: \"127.0.0.1:0\"\n", 1)
				yaml = strings.Replace(yaml, "    tls:\n      certificates:\n", "    tls:\n      min_version: \"1.3\"\n      certificates:\n", 1)
				writeFileAtomic(t, h.file, []byte(withEngineYAML(yaml)))
				if err := h.s.srv.Reload(); err != nil {
					t.Fatalf("Reload: %v", err)
				}
				if h.s.srv.Addr("public") != nil {
					t.Fatal("listener public still there after the reload")
				}
				close(stopped)
			}
			var last error
			eventually(t, 10*time.Second, "the client refuses new requests after GOAWAY", func() bool {
				req, _ := http.NewRequestWithContext(ctx, "GET", "https://a.test/", nil)
				r, err := cc.RoundTrip(req)
				if err == nil {
					r.Body.Close()
					return false
				}
				last = err
				return strings.Contains(err.Error(), "graceful shutdown")
			})
			t.Logf("a request after GOAWAY: %v", last)
			h.held.release <- struct{}{}
			rest, err := io.ReadAll(br)
			if string(rest) != "second\n" || err != nil {
				t.Fatalf("the response in flight: rest %q, %v; want %q", rest, err, "second\n")
			}
			select {
			case <-conn.Context().Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection was not closed after its last response")
			}
			// After GOAWAY the client closes the connection itself once its
			// last response ended (RFC 9114 §5.2), or sluice does: without
			// an error either way.
			var ae *quic.ApplicationError
			if cause := context.Cause(conn.Context()); !errors.As(cause, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
				t.Errorf("the connection closed with %v, want H3_NO_ERROR", cause)
			}
			<-stopped
		})
	}
}
