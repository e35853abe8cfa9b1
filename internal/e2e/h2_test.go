package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2cClient returns an HTTP/2 client that speaks h2c (prior knowledge).
func h2cClient(t testing.TB) *http.Client {
	tr := &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestH2CPriorKnowledge: a listener with h2c serves HTTP/2 clients by prior
// knowledge, many streams on one connection, through the same core
// (routing, forwarding fields), and HTTP/1.1 clients on the same port.
func TestH2CPriorKnowledge(t *testing.T) {
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	s := startSluice(t, cfg)
	c := h2cClient(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(fmt.Sprintf("%s/echo?i=%d", s.URL("public"), i))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("request %d: %s %d %q", i, resp.Proto, resp.StatusCode, body)
				return
			}
			e := parseEcho(t, string(body))
			if got := e.Headers.Get("X-Forwarded-Proto"); got != "http" {
				errs <- fmt.Errorf("request %d: X-Forwarded-Proto %q, want http", i, got)
			}
			if q := fmt.Sprint(e.Raw["query"]); !strings.Contains(q, fmt.Sprintf("i:[%d]", i)) {
				errs <- fmt.Errorf("request %d: backend saw query %v", i, e.Raw["query"])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// HTTP/1.1 on the same listener.
	if r := get(t, newClient(t), s.URL("public")+"/"); r.Status != 200 || !strings.HasPrefix(r.Body, "Hello from b1") {
		t.Errorf("HTTP/1.1 on the h2c listener: %d %q", r.Status, r.Body)
	}
}
