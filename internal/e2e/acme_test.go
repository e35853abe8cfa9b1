package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// This file: automatic certificates (tls.acme) against Debian's pebble, an
// RFC 8555 test CA, started by the test on loopback with
// pebble-challtestsrv as its DNS (every name resolves to 127.0.0.1). Pebble
// validates for real: HTTP-01 against sluice's plain-HTTP listener and
// TLS-ALPN-01 against its TLS listener (pebble's httpPort and tlsPort are
// those listeners' ports). A restart serves the stored certificate without
// asking the CA.

// pebbleCA is a running pebble with its DNS.
type pebbleCA struct {
	Directory string         // the ACME directory URL
	CARoot    string         // PEM file of the CA pebble's HTTPS is signed by
	roots     *x509.CertPool // pebble's issuing root (new at each start)
	stop      func()
}

// startPebble starts pebble-challtestsrv (DNS only) and pebble, which
// validates HTTP-01 on httpPort and TLS-ALPN-01 on tlsPort of 127.0.0.1.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebbleCA {
	t.Helper()
	pebble := needProgram(t, "pebble", "apt-get install pebble")
	challtest := needProgram(t, "pebble-challtestsrv", "apt-get install pebble")
	dir := t.TempDir()
	ca := newTestCA(t, "pebble's HTTPS CA")
	leaf := ca.issue(t, leafOpts{names: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}, notAfter: time.Now().Add(time.Hour)})
	files := leaf.write(t, dir, "pebble")
	caFile := ca.write(t, dir, "pebble-ca")
	ports := testenv.Ports(t, 4)
	acmeAddr, mgmtAddr := fmt.Sprintf("127.0.0.1:%d", ports), fmt.Sprintf("127.0.0.1:%d", ports+1)
	dnsAddr, dnsMgmt := fmt.Sprintf("127.0.0.1:%d", ports+2), fmt.Sprintf("127.0.0.1:%d", ports+3)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": acmeAddr, "managementListenAddress": mgmtAddr,
		"certificate": files.Cert, "privateKey": files.Key,
		"httpPort": httpPort, "tlsPort": tlsPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
	}})
	confFile := filepath.Join(dir, "pebble.json")
	writeFileAtomic(t, confFile, conf)

	ctx, cancel := context.WithCancel(context.Background())
	var cmds []*exec.Cmd
	start := func(name string, args ...string) {
		logs := &logBuffer{}
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = logs, logs
		// Validation without pebble's random sleeps; every order needs
		// its challenges answered (no authorization reuse); no nonce
		// rejected on purpose.
		cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0")
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		cmds = append(cmds, cmd)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- %s ---\n%s", filepath.Base(name), logs)
			}
		})
	}
	start(challtest, "-dns01", dnsAddr, "-management", dnsMgmt, "-http01", "", "-https01", "", "-tlsalpn01", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	start(pebble, "-config", confFile, "-dnsserver", dnsAddr)
	p := &pebbleCA{Directory: "https://" + acmeAddr + "/dir", CARoot: caFile}
	stopped := false
	p.stop = func() {
		if stopped {
			return
		}
		stopped = true
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			c.Wait()
		}
		cancel()
	}
	t.Cleanup(p.stop)

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	defer hc.CloseIdleConnections()
	var root []byte
	eventually(t, 15*time.Second, "pebble answers", func() bool {
		resp, err := hc.Get("https://" + mgmtAddr + "/roots/0")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		root, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200
	})
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble's /roots/0 is no PEM certificate: %q", root)
	}
	return p
}

// acmeYAML is a config with a TLS listener "public" at tlsAddr whose
// certificate comes from ACME for domains, stored in storage, and, when
// httpAddr is not "", a plain-HTTP listener "plain" there.
func acmeYAML(p *pebbleCA, tlsAddr, httpAddr, storage, backend string, domains ...string) string {
	engine, plainEngine := "", "" // the suite's, as withEngineYAML would (fixed addresses here)
	if testEngine != "" {
		plainEngine = "\n    engine: " + testEngine
		if testEngine != "loop" { // plain listeners only
			engine = plainEngine
		}
	}
	plain := ""
	if httpAddr != "" {
		plain = fmt.Sprintf("  - name: plain\n    address: %q\n    pool: web%s\n", httpAddr, plainEngine)
	}
	return fmt.Sprintf(`listeners:
  - name: public
    address: %q
    pool: web%s
    tls:
      acme:
        domains: [%s]
        email: ops@example.com
        directory: %q
        ca_root: %q
        storage: %q
%spools:
  - name: web
    backends:
      - address: %q
admin:
  address: "127.0.0.1:0"
shutdown_timeout: 5s
`, tlsAddr, engine, strings.Join(domains, ", "), p.Directory, p.CARoot, storage, plain, backend)
}

var (
	obtainedLine = regexp.MustCompile(`kind=certificate_obtained reason="listener \\"public\\": certificate for ([^"]*?) obtained`)
	loadedLine   = regexp.MustCompile(`acme: certificate loaded from storage" listener=public name=(\S+)`)
)

// servedCert handshakes with addr for name and returns the certificate
// served, verified against roots.
func servedCert(t *testing.T, addr, name string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := dialTLS(addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS handshake for %s: %v", name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestACMEPebble obtains certificates from pebble: by TLS-ALPN-01 on a
// sluice with only a TLS listener, by HTTP-01 on one that also has a
// plain-HTTP listener; the certificate serves HTTPS, verified up to
// pebble's root, and is stored under storage (0700). A restart with pebble
// gone serves the stored certificate at once, without a new order.
func TestACMEPebble(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "b1")
	ports := testenv.Ports(t, 2)
	tlsAddr, httpAddr := fmt.Sprintf("127.0.0.1:%d", ports), fmt.Sprintf("127.0.0.1:%d", ports+1)
	ca := startPebble(t, ports+1, ports)
	dir := t.TempDir()

	fetch := func(t *testing.T, name string) {
		t.Helper()
		hc := httpsClient(t, tlsAddr, &tls.Config{RootCAs: ca.roots}, true, false)
		if r := get(t, hc, "https://"+name+"/"); r.Status != 200 || r.Header.Get("X-Backend") != "b1" {
			t.Fatalf("GET https://%s/: %d from %q", name, r.Status, r.Header.Get("X-Backend"))
		}
	}

	t.Run("TLS-ALPN-01", func(t *testing.T) {
		p, _, _, _ := runConfig(t, acmeYAML(ca, tlsAddr, "", filepath.Join(dir, "alpn"), be.URL(), "alpn.example.com"))
		p.waitLog(obtainedLine, 60*time.Second)
		cert := servedCert(t, tlsAddr, "alpn.example.com", ca.roots)
		if cert.DNSNames[0] != "alpn.example.com" {
			t.Errorf("served %v", cert.DNSNames)
		}
		fetch(t, "alpn.example.com")
		p.stop(syscall.SIGTERM)
	})

	storage := filepath.Join(dir, "http")
	var serial string
	t.Run("HTTP-01", func(t *testing.T) {
		p, _, _, _ := runConfig(t, acmeYAML(ca, tlsAddr, httpAddr, storage, be.URL(), "a.example.com", "b.example.com"))
		m := p.waitLog(obtainedLine, 60*time.Second)
		if m[1] != "a.example.com, b.example.com" {
			t.Errorf("obtained for %q", m[1])
		}
		for _, name := range []string{"a.example.com", "b.example.com"} {
			cert := servedCert(t, tlsAddr, name, ca.roots)
			serial = cert.SerialNumber.Text(16)
			fetch(t, name)
		}
		// HTTP-01 was used: pebble asked the plain listener, which had no
		// route for the path and answered it itself.
		if !regexp.MustCompile(`"path":"/.well-known/acme-challenge/[A-Za-z0-9_-]+".*"status":200`).MatchString(p.Stdout.String()) {
			t.Errorf("no HTTP-01 request in the access log:\n%s", p.Stdout)
		}
		fi, err := os.Stat(storage)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("storage %s: %v, mode %v; want a 0700 directory", storage, err, fi.Mode().Perm())
		}
		p.stop(syscall.SIGTERM)
	})
	if serial == "" {
		t.FailNow()
	}

	t.Run("restart reuses the stored certificate", func(t *testing.T) {
		ca.stop() // an order now would fail
		p, _, _, admin := runConfig(t, acmeYAML(ca, tlsAddr, httpAddr, storage, be.URL(), "a.example.com", "b.example.com"))
		if m := p.waitLog(loadedLine, 10*time.Second); m[1] != "a.example.com" {
			t.Errorf("loaded %q", m[1])
		}
		if got := servedCert(t, tlsAddr, "b.example.com", ca.roots).SerialNumber.Text(16); got != serial {
			t.Errorf("serial %s after the restart, want the stored %s", got, serial)
		}
		fetch(t, "a.example.com")
		r, err := tryGet(newClient(t), "http://"+admin+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`sluice_acme_certificates_obtained_total{listener="public"} 0`, `sluice_acme_errors_total{listener="public"} 0`} {
			if !strings.Contains(r.Body, want) {
				t.Errorf("/metrics lacks %q:\n%s", want, grepLines(r.Body, "sluice_acme"))
			}
		}
		if strings.Contains(p.Stderr.String(), "certificate_error") {
			t.Errorf("the restart tried the CA:\n%s", p.Stderr)
		}
	})
}
