package config

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// tlsFiles makes, in a fresh working directory, the files the tls tests
// name: ec (ECDSA P-256) and rsa (RSA 2048) pairs valid for a year,
// expired, soon (3 days left) and future (valid from tomorrow) pairs, each
// for its own name and issued by a CA made for the test (whose certificate
// is not written), and garbage.pem, which holds no PEM.
func tlsFiles(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	now := time.Now()
	year := now.AddDate(1, 0, 0)
	ca := testenv.NewCA(t, "Test CA")
	for base, l := range map[string]testenv.Leaf{
		"ec":      {Names: []string{"a.example.com"}, NotBefore: now.Add(-time.Hour), NotAfter: year},
		"rsa":     {Names: []string{"b.example.com"}, RSA: true, NotBefore: now.Add(-time.Hour), NotAfter: year},
		"expired": {Names: []string{"old.example.com"}, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.Add(-24 * time.Hour)},
		"soon":    {Names: []string{"soon.example.com"}, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.Add(3*24*time.Hour + time.Hour)},
		"future":  {Names: []string{"new.example.com"}, NotBefore: now.Add(24 * time.Hour), NotAfter: year},
	} {
		ca.Issue(t, l).Write(t, dir, base)
	}
	testenv.WriteFileAtomic(t, filepath.Join(dir, "garbage.pem"), []byte("not PEM at all\n"))
}

// tlsListener is a valid config whose only listener has the tls block
// given (flow style), at line 4.
func tlsListener(block string) string {
	return "listeners:\n  - address: \":8443\"\n    pool: web\n    tls: " + block + "\n" + pool1
}

// TestTLSBlock checks the tls block's files and keys, each problem at the
// key or value at fault.
func TestTLSBlock(t *testing.T) {
	tlsFiles(t)
	tests := []struct {
		name  string
		block string
		want  []string
	}{
		{"ecdsa and rsa, mTLS, 1.3", "{certificates: [{cert: ec.pem, key: ec.key}, {cert: rsa.pem, key: rsa.key}], min_version: \"1.3\", client_ca: rsa.pem}", nil},
		{"min_version unquoted", "{certificates: [{cert: ec.pem, key: ec.key}], min_version: 1.2}", nil},
		{"unreadable files", "{certificates: [{cert: nope.pem, key: nope.key}]}", []string{
			`t.yaml:4:33: tls cert: stat nope.pem: no such file or directory: give the path of a readable PEM file`,
			`t.yaml:4:48: tls key: stat nope.key: no such file or directory: give the path of a readable PEM file`}},
		{"a directory", "{certificates: [{cert: ., key: ec.key}]}", []string{
			`t.yaml:4:33: tls cert: . is not a regular file: give the path of a readable PEM file`}},
		{"key of another certificate", "{certificates: [{cert: ec.pem, key: ec.key}, {cert: ec.pem, key: rsa.key}]}", []string{
			`t.yaml:4:75: tls key "rsa.key" does not go with cert "ec.pem" (tls: private key type does not match public key type): give the private key the certificate was issued for`}},
		{"key of another certificate, same type", "{certificates: [{cert: soon.pem, key: ec.key}]}", []string{
			`t.yaml:4:48: tls key "ec.key" does not go with cert "soon.pem" (tls: private key does not match public key): give the private key the certificate was issued for`}},
		{"no PEM certificate", "{certificates: [{cert: garbage.pem, key: ec.key}]}", []string{
			`t.yaml:4:33: tls cert "garbage.pem" holds no PEM certificate: give a file with a "-----BEGIN CERTIFICATE-----" block`}},
		{"no PEM key", "{certificates: [{cert: ec.pem, key: garbage.pem}]}", []string{
			`t.yaml:4:46: tls key "garbage.pem" holds no PEM private key: give the file with the "-----BEGIN ... PRIVATE KEY-----" block of cert "ec.pem"`}},
		{"cert and key swapped", "{certificates: [{cert: ec.key, key: ec.pem}]}", []string{
			`t.yaml:4:33: tls cert "ec.key" holds a private key, not a certificate: are cert and key swapped?`}},
		{"no key", "{certificates: [{cert: ec.pem}]}", []string{
			`t.yaml:4:26: tls certificate has no key: give the path of its PEM file`}},
		{"no certificates", "{min_version: \"1.3\"}", []string{
			`t.yaml:4:5: tls has no certificates: add certificates: [{cert: FILE, key: FILE}] (the first is the default)`}},
		{"bad min_version", "{certificates: [{cert: ec.pem, key: ec.key}], min_version: \"1.0\"}", []string{
			`t.yaml:4:69: tls.min_version "1.0" is not valid: use 1.2 or 1.3 (did you mean "1.2"?)`}},
		{"client_ca unreadable", "{certificates: [{cert: ec.pem, key: ec.key}], client_ca: ca.pem}", []string{
			`t.yaml:4:67: tls.client_ca: stat ca.pem: no such file or directory: give a PEM file of the CA certificates that sign client certificates`}},
		{"client_ca without PEM", "{certificates: [{cert: ec.pem, key: ec.key}], client_ca: garbage.pem}", []string{
			`t.yaml:4:67: tls.client_ca: garbage.pem holds no PEM certificate: give a PEM file of the CA certificates that sign client certificates`}},
		{"misspelt key", "{certificates: [{cert: ec.pem, key: ec.key}], min_verison: \"1.3\"}", []string{
			`t.yaml:4:56: unknown key "min_verison" in tls (did you mean "min_version"?)`}},
		{"acme, every key, alone", "{acme: {domains: [example.com], email: ops@example.com, directory: \"https://acme.test/dir\", ca_root: \"\", storage: acme}}", nil},
		{"acme beside certificates", "{certificates: [{cert: ec.pem, key: ec.key}], acme: {domains: [example.com]}}", []string{
			`t.yaml:4:56: tls.acme.storage is empty: give a directory for the account key and certificates, e.g. /var/lib/sluice/acme`}},
		{"an expired certificate is no error", "{certificates: [{cert: expired.pem, key: expired.key}]}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := tlsListener(tt.block)
			_, err := Parse("t.yaml", []byte(yaml))
			if diff := cmp.Diff(tt.want, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s\nfile:\n%s", diff, yaml)
			}
		})
	}
}

func TestTLSDecoded(t *testing.T) {
	tlsFiles(t)
	c, err := Parse("t.yaml", []byte(tlsListener("{certificates: [{cert: ec.pem, key: ec.key}, {cert: rsa.pem, key: rsa.key}], client_ca: rsa.pem}")))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &TLS{
		Certificates: []Certificate{{Cert: "ec.pem", Key: "ec.key"}, {Cert: "rsa.pem", Key: "rsa.key"}},
		MinVersion:   "1.2",
		ClientCA:     "rsa.pem",
	}
	if diff := cmp.Diff(want, c.Listeners[0].TLS); diff != "" {
		t.Errorf("Listeners[0].TLS (-want +got):\n%s", diff)
	}
	if b, err := c.Listeners[0].TLS.ReadClientCA(); err != nil {
		t.Errorf("ReadClientCA() = %v", err)
	} else if pool, err := c.Listeners[0].TLS.ParseClientCA(b); pool == nil || err != nil {
		t.Errorf("ParseClientCA() = %v, %v; want a pool", pool, err)
	}
	if b, err := (TLS{}).ReadClientCA(); b != nil || err != nil {
		t.Errorf("ReadClientCA() without client_ca = %v, %v; want nil, nil", b, err)
	}
	if _, err := c.Listeners[0].TLS.ParseClientCA([]byte("garbage")); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("ParseClientCA(garbage) = %v, want an error that says so", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q, want none", w)
	}
}

// TestTLSWarnings checks a certificate out of its dates is served, with a
// warning at its cert key, and that Validate starts the list afresh.
func TestTLSWarnings(t *testing.T) {
	tlsFiles(t)
	c, err := Parse("t.yaml", []byte(tlsListener("\n      certificates:\n"+
		"        - {cert: ec.pem, key: ec.key}\n"+
		"        - {cert: expired.pem, key: expired.key}\n"+
		"        - {cert: soon.pem, key: soon.key}\n"+
		"        - {cert: future.pem, key: future.key}")))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []struct{ prefix, suffix string }{
		{`t.yaml:7:18: tls cert "expired.pem" (old.example.com) expired `, ": clients refuse it; renew it"},
		{`t.yaml:8:18: tls cert "soon.pem" (soon.example.com) expires `, ", in 3 days: renew it"},
		{`t.yaml:9:18: tls cert "future.pem" (new.example.com) is not valid before `, ": clients refuse it until then; check the clock"},
	}
	got := c.Warnings()
	if len(got) != len(want) {
		t.Fatalf("Warnings() = %q, want %d", got, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w.prefix) || !strings.HasSuffix(got[i], w.suffix) {
			t.Errorf("Warnings()[%d] = %q, want %q…%q", i, got[i], w.prefix, w.suffix)
		}
	}
	c.Listeners[0].TLS.Certificates = c.Listeners[0].TLS.Certificates[:1]
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if got := c.Warnings(); len(got) != 0 {
		t.Errorf("Warnings() after Validate without the bad certificates = %q, want none", got)
	}
}

func TestCertWarning(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	leaf := func(notBefore, notAfter time.Time, dns ...string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "cn.example.com"}, DNSNames: dns, NotBefore: notBefore, NotAfter: notAfter}
	}
	tests := []struct {
		name string
		leaf *x509.Certificate
		want string
	}{
		{"valid", leaf(now.AddDate(0, -1, 0), now.AddDate(0, 2, 0), "a.example.com"), ""},
		{"8 days left", leaf(now.AddDate(0, -1, 0), now.Add(8*24*time.Hour), "a.example.com"), ""},
		{"7 days left", leaf(now.AddDate(0, -1, 0), now.Add(7*24*time.Hour), "a.example.com", "b.example.com"),
			`tls cert "a.pem" (a.example.com) expires 2030-06-08 12:00 UTC, in 7 days: renew it`},
		{"a day and a half", leaf(now.AddDate(0, -1, 0), now.Add(36*time.Hour), "a.example.com"),
			`tls cert "a.pem" (a.example.com) expires 2030-06-03 00:00 UTC, in 1 day: renew it`},
		{"hours, name from CN", leaf(now.AddDate(0, -1, 0), now.Add(5*time.Hour+30*time.Minute)),
			`tls cert "a.pem" (cn.example.com) expires 2030-06-01 17:30 UTC, in 5h30m: renew it`},
		{"expired", leaf(now.AddDate(-1, 0, 0), now.Add(-time.Second), "a.example.com"),
			`tls cert "a.pem" (a.example.com) expired 2030-06-01 11:59 UTC: clients refuse it; renew it`},
		{"not yet valid", leaf(now.Add(time.Hour), now.AddDate(1, 0, 0), "a.example.com"),
			`tls cert "a.pem" (a.example.com) is not valid before 2030-06-01 13:00 UTC: clients refuse it until then; check the clock`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CertWarning("a.pem", tt.leaf, now); got != tt.want {
				t.Errorf("CertWarning() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestKeyPairErrors checks KeyPair and ReadFiles say which file is at
// fault, for package tlsterm's reloads.
func TestKeyPairErrors(t *testing.T) {
	tlsFiles(t)
	tests := []struct {
		c         Certificate
		wantField string
	}{
		{Certificate{Cert: "nope.pem", Key: "ec.key"}, "cert"},
		{Certificate{Cert: "ec.pem", Key: "nope.key"}, "key"},
		{Certificate{Cert: "garbage.pem", Key: "ec.key"}, "cert"},
		{Certificate{Cert: "ec.pem", Key: "rsa.key"}, "key"},
		{Certificate{Cert: "ec.pem", Key: "ec.key"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.c.Cert+"+"+tt.c.Key, func(t *testing.T) {
			certPEM, keyPEM, err := tt.c.ReadFiles()
			if err == nil {
				var pair tls.Certificate
				pair, err = tt.c.KeyPair(certPEM, keyPEM)
				if err == nil && pair.Leaf == nil {
					t.Errorf("KeyPair() has no Leaf")
				}
			}
			var got string
			var ce *CertError
			if errors.As(err, &ce) {
				got = ce.Field
			} else if err != nil {
				t.Fatalf("error %v is not a *CertError", err)
			}
			if got != tt.wantField {
				t.Errorf("error %v is about %q, want %q", err, got, tt.wantField)
			}
		})
	}
}

// TestGRPCHealthCheck checks a grpc check decodes with its service and
// without the http keys' defaults.
func TestGRPCHealthCheck(t *testing.T) {
	c, err := Parse("t.yaml", []byte(listener1+"pools:\n  - name: web\n    upstream_http2: true\n"+
		"    backends: [{address: \"http://127.0.0.1:8081\"}]\n"+
		"    health_check: {type: grpc, service: shop.v1.Cart, host: cart.internal}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &HealthCheck{Type: "grpc", Service: "shop.v1.Cart", Host: "cart.internal",
		Interval: 10 * time.Second, Timeout: 2 * time.Second, HealthyThreshold: 2, UnhealthyThreshold: 3}
	if diff := cmp.Diff(want, c.Pools[0].HealthCheck); diff != "" {
		t.Errorf("HealthCheck (-want +got):\n%s", diff)
	}
}
