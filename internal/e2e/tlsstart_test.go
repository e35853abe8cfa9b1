package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// This file: the sluice binary starting with a TLS listener whose files
// are wrong: a certificate file that does not exist and a key that does
// not go with its certificate stop it (exit 1, the file named and what to
// do on stderr, for run and validate alike); an expired certificate does
// not (a warning naming it and its expiry, and it serves).

// remedy matches a message that tells the operator what to do.
var remedy = regexp.MustCompile(`(?i)\b(give|check|renew|use|create|replace|point|fix)\b`)

func TestProcessTLSStartupErrors(t *testing.T) {
	t.Parallel()
	needBinary(t)
	be := startBackend(t, "tls-start")
	ca := newTestCA(t, "start-up CA")
	dir := t.TempDir()
	good := ca.issue(t, leafOpts{names: []string{"a.test"}}).write(t, dir, "good")

	for _, tc := range []struct {
		name      string
		cert, key string
		mention   []string       // what stderr must name: the files at fault
		cause     *regexp.Regexp // and what is wrong with them
	}{
		{
			name: "certificate file does not exist",
			cert: filepath.Join(dir, "missing.pem"), key: good.Key,
			mention: []string{filepath.Join(dir, "missing.pem")},
			cause:   regexp.MustCompile(`(?i)no such file|does not exist|not found`),
		},
		{
			name: "key does not match the certificate",
			cert: good.Cert, key: func() string {
				other := ca.issue(t, leafOpts{names: []string{"b.test"}})
				p := filepath.Join(dir, "other.key")
				writeFileAtomic(t, p, other.keyPEM)
				return p
			}(),
			mention: []string{good.Cert, filepath.Join(dir, "other.key")},
			cause:   regexp.MustCompile(`(?i)does not (go with|match)|mismatch`),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, certReloadYAML(config.Certificate{Cert: tc.cert, Key: tc.key}, be.URL()))
			for _, cmd := range []string{"run", "validate"} {
				code, stdout, stderr := runProc(t, cmd, "-config", file)
				if code != 1 {
					t.Errorf("sluice %s: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", cmd, code, stdout, stderr)
				}
				for _, m := range tc.mention {
					if !strings.Contains(stderr, m) {
						t.Errorf("sluice %s: stderr does not name %s:\n%s", cmd, m, stderr)
					}
				}
				// FILE:LINE:COL of the config (DESIGN: every problem so).
				if !regexp.MustCompile(regexp.QuoteMeta(file) + `:\d+:\d+: `).MatchString(stderr) {
					t.Errorf("sluice %s: stderr has no %s:LINE:COL:\n%s", cmd, file, stderr)
				}
				if !tc.cause.MatchString(stderr) {
					t.Errorf("sluice %s: stderr does not say what is wrong (want %v):\n%s", cmd, tc.cause, stderr)
				}
				if !remedy.MatchString(stderr) {
					t.Errorf("sluice %s: stderr does not say what to do (want %v):\n%s", cmd, remedy, stderr)
				}
			}
		})
	}

	t.Run("expired certificate warns and serves", func(t *testing.T) {
		notAfter := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
		expired := ca.ca.Issue(t, testenv.Leaf{Names: []string{"a.test"},
			NotBefore: notAfter.Add(-30 * 24 * time.Hour), NotAfter: notAfter})
		certFile, keyFile := expired.Write(t, t.TempDir(), "expired")

		code, stdout, stderr := runProc(t, "validate", "-config", writeConfig(t, certReloadYAML(config.Certificate{Cert: certFile, Key: keyFile}, be.URL())))
		if code != 0 {
			t.Errorf("sluice validate: exit %d, want 0 (an expired certificate is a warning)\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}

		p, _, addr, _ := runConfig(t, certReloadYAML(config.Certificate{Cert: certFile, Key: keyFile}, be.URL()))
		line := p.waitLog(regexp.MustCompile(`(?m)^.*level=WARN.*expired.*$`), 15*time.Second)[0]
		day := notAfter.UTC().Format("2006-01-02")
		if !strings.Contains(line, certFile) || !strings.Contains(line, day) {
			t.Errorf("warning %q does not name the certificate %s and its expiry %s", line, certFile, day)
		}

		// A client on today's clock refuses it: it is the expired one.
		var invalid x509.CertificateInvalidError
		if c, err := dialTLS(addr, clientTLS(ca, "a.test")); err == nil {
			c.Close()
			t.Errorf("a handshake verified on today's clock succeeded; want the expired certificate refused")
		} else if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
			t.Errorf("handshake on today's clock: %v, want x509 expired", err)
		}
		// One that does not verify is served it, and gets the backend's
		// answer.
		base := &tls.Config{ServerName: "a.test", InsecureSkipVerify: true}
		if got, want := peerSerial(t, addr, base), expired.Cert.SerialNumber.Text(16); got != want {
			t.Errorf("served certificate serial %s, want the expired one's %s", got, want)
		}
		r := get(t, httpsClient(t, addr, base, true, true), "https://a.test/")
		if r.Status != 200 || r.Header.Get("X-Backend") != "tls-start" {
			t.Errorf("GET over TLS with the expired certificate: %d %q (X-Backend %q), want 200 from tls-start", r.Status, r.Body, r.Header.Get("X-Backend"))
		}
		p.stop(syscall.SIGTERM)
	})
}
