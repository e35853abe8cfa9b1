package health

import (
	"bufio"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// TestChecksSendProxyHeader: with send_proxy_protocol, tcp and http checks
// begin with a PROXY header that names no client (v1 UNKNOWN, v2 LOCAL), so
// a backend that requires the header passes them; without it such a
// backend fails them.
func TestChecksSendProxyHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan proxyproto.Header, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				h, err := proxyproto.Read(c)
				if err != nil {
					return // no header: refused, as HAProxy's accept-proxy does
				}
				got <- h
				r := bufio.NewReader(c)
				if req, err := http.ReadRequest(r); err == nil {
					req.Body.Close()
					c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				}
			}()
		}
	}()
	addr := ln.Addr().String()
	b := pool.NewBackend("http://"+addr, &url.URL{Scheme: "http", Host: addr}, 1)
	for _, typ := range []string{"tcp", "http"} {
		for _, v := range []int{1, 2} {
			hc := &config.HealthCheck{Type: typ, Path: "/health", Timeout: time.Second, ExpectMin: 200, ExpectMax: 399}
			if err := newProber(hc, Options{ProxyHeader: v})(t.Context(), b); err != nil {
				t.Errorf("%s check with a v%d header: %v", typ, v, err)
				continue
			}
			select {
			case h := <-got:
				if h.Version != v || !h.Local {
					t.Errorf("%s check sent %+v, want a v%d header naming no client", typ, h, v)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s check: the backend saw no header", typ)
			}
		}
	}
	hc := &config.HealthCheck{Type: "http", Path: "/health", Timeout: time.Second, ExpectMin: 200, ExpectMax: 399}
	if err := newProber(hc, Options{})(t.Context(), b); err == nil {
		t.Errorf("an http check without a header passed a backend that requires one")
	}
}
