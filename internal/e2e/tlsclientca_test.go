package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// TestTLSMutualCARotation: the client_ca file is a certificate file like
// the others. When it is replaced (a CA rotated) and sluice reloads with
// the config text unchanged (as SIGHUP does), or its file watch sees the
// change, new handshakes over HTTP/1.1, HTTP/2 and HTTP/3 take client
// certificates from the new CA and refuse the old CA's, a keep-alive
// connection opened before keeps working, and nothing from a refused
// client reaches the backend.
func TestTLSMutualCARotation(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"reload", "watch"} {
		t.Run(how, func(t *testing.T) {
			cb := startCountingBackend(t)
			ca := newTestCA(t, "server CA")
			oldCA, newCA := newTestCA(t, "client CA 2025"), newTestCA(t, "client CA 2026")
			dir := t.TempDir()
			site := ca.issue(t, leafOpts{names: []string{"a.test"}}).write(t, dir, "a")
			caFile := oldCA.write(t, dir, "clients")
			yaml := strings.Replace(certReloadYAML(site, cb.URL), "    tls:\n",
				fmt.Sprintf("    http3: true\n    tls:\n      client_ca: %q\n", caFile), 1)
			file := filepath.Join(dir, "sluice.yaml")
			writeFileAtomic(t, file, []byte(withEngineYAML(yaml)))
			cfg, err := config.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			s := startSluice(t, cfg)
			addr := s.Addr("public")

			oldCert := oldCA.issue(t, leafOpts{client: true}).pair
			newCert := newCA.issue(t, leafOpts{client: true}).pair
			// accepted makes one request on a new connection with cert,
			// over proto, and reports whether it was answered.
			accepted := func(cert tls.Certificate, proto string) bool {
				t.Helper()
				var c *http.Client
				switch proto {
				case "HTTP/3":
					h3 := newH3Client(t, addr, ca)
					h3.tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
					c = h3.Client
				default:
					cc := clientTLS(ca, "a.test")
					cc.Certificates = []tls.Certificate{cert}
					c = httpsClient(t, addr, cc, proto == "HTTP/2", false)
				}
				r, err := tryGet(c, "https://a.test/")
				if err == nil && r.Status != 200 {
					t.Fatalf("%s: %d %q", proto, r.Status, r.Body)
				}
				return err == nil
			}
			protos := []string{"HTTP/1.1", "HTTP/2", "HTTP/3"}
			for _, p := range protos {
				if !accepted(oldCert, p) || accepted(newCert, p) {
					t.Fatalf("before the rotation, over %s: want the old CA's client accepted and the new CA's refused", p)
				}
			}
			cc := clientTLS(ca, "")
			cc.Certificates = []tls.Certificate{oldCert}
			kept := httpsClient(t, addr, cc, true, true)
			if r := get(t, kept, "https://a.test/"); r.Status != 200 {
				t.Fatalf("before the rotation: %d", r.Status)
			}

			writeFileAtomic(t, caFile, newCA.pem)
			if how == "reload" {
				if err := s.srv.Reload(); err != nil {
					t.Fatalf("Reload: %v", err)
				}
			} else {
				// The watch polls every 2 s.
				eventually(t, 8*time.Second, "the watch takes the new client_ca", func() bool {
					return accepted(newCert, "HTTP/1.1")
				})
			}
			before := cb.Requests.Load()
			for _, p := range protos {
				if accepted(oldCert, p) {
					t.Errorf("after the rotation, over %s: the old CA's client was answered, want it refused", p)
				}
			}
			if n := cb.Requests.Load() - before; n != 0 {
				t.Errorf("the backend served %d requests from clients of the old CA after the rotation", n)
			}
			for _, p := range protos {
				if !accepted(newCert, p) {
					t.Errorf("after the rotation, over %s: the new CA's client was refused", p)
				}
			}
			r, err := tryGet(kept, "https://a.test/")
			if err != nil || r.Status != 200 {
				t.Errorf("the connection opened before the rotation: %v %d, want it still served", err, r.Status)
			}
		})
	}
}
