package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestACMEBlock checks tls.acme: each problem at its key, and the blocks
// that are valid (acme alone, beside certificates).
func TestACMEBlock(t *testing.T) {
	tlsFiles(t)
	if err := os.Mkdir("ro", 0o500); err != nil {
		t.Fatal(err)
	}
	readOnly := os.Geteuid() != 0 // root writes anywhere
	tests := []struct {
		name  string
		block string
		want  []string
	}{
		{"acme alone", `{acme: {domains: [example.com, www.example.com], email: ops@example.com, storage: acme}}`, nil},
		{"acme beside certificates, private CA", `{certificates: [{cert: ec.pem, key: ec.key}], acme: {domains: [example.com], directory: "https://127.0.0.1:14000/dir", ca_root: ec.pem, storage: a/b/c}}`, nil},
		{"no domains", `{acme: {storage: acme}}`, []string{
			`t.yaml:4:11: tls.acme.domains is empty: list the names to obtain a certificate for, e.g. ["example.com", "www.example.com"]`}},
		{"bad domains", `{acme: {domains: ["*.example.com", 192.0.2.1, "bad name", example.com, Example.com.], storage: acme}}`, []string{
			`t.yaml:4:28: tls.acme domain "*.example.com" is a wildcard, which only DNS-01 can validate and sluice answers HTTP-01 and TLS-ALPN-01: list each name, or give a wildcard certificate under tls.certificates`,
			`t.yaml:4:45: tls.acme domain "192.0.2.1" is an IP address: list DNS names (clients reach sluice by them)`,
			`t.yaml:4:56: tls.acme domain "bad name" is not a DNS name: write e.g. "example.com"`,
			`t.yaml:4:81: tls.acme domain "Example.com." is listed twice: remove one`}},
		{"bad email, http directory, missing ca_root", `{acme: {domains: [example.com], email: "ops at example", directory: "http://ca.example/dir", ca_root: nope.pem, storage: acme}}`, []string{
			`t.yaml:4:49: tls.acme.email "ops at example" is not an e-mail address: write e.g. "ops@example.com", or remove it`,
			`t.yaml:4:78: tls.acme.directory "http://ca.example/dir" is not an https:// URL: give the CA's ACME directory, e.g. "https://acme-v02.api.letsencrypt.org/directory"`,
			`t.yaml:4:112: tls.acme.ca_root: stat nope.pem: no such file or directory: give a PEM file of the CA certificates the ACME server's HTTPS is signed by`}},
		{"no storage", `{acme: {domains: [example.com]}}`, []string{
			`t.yaml:4:11: tls.acme.storage is empty: give a directory for the account key and certificates, e.g. /var/lib/sluice/acme`}},
		{"storage is a file", `{acme: {domains: [example.com], storage: ec.pem}}`, []string{
			`t.yaml:4:51: tls.acme.storage: ` + mustAbs(t, "ec.pem") + ` is not a directory: give a directory for the account key and certificates`}},
	}
	if readOnly {
		tests = append(tests, struct {
			name  string
			block string
			want  []string
		}{"storage under a read-only directory", `{acme: {domains: [example.com], storage: ro/acme}}`, []string{
			`t.yaml:4:51: tls.acme.storage: ` + mustAbs(t, "ro/acme") + ` does not exist and ` + mustAbs(t, "ro") + ` is not writable to create it (permission denied): create it for the user sluice runs as`}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tlsListener(tt.block)))
			if diff := cmp.Diff(tt.want, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s", diff)
			}
			if err == nil && c.Listeners[0].TLS.ACME.Directory == "" {
				t.Errorf("directory left empty, want the default")
			}
		})
	}
}

// TestHTTP3NeedsTLS checks http3 is refused on a cleartext listener.
func TestHTTP3NeedsTLS(t *testing.T) {
	tlsFiles(t)
	yaml := "listeners:\n  - address: \":8080\"\n    pool: web\n    http3: true\n" + pool1
	_, err := Parse("t.yaml", []byte(yaml))
	want := []string{`t.yaml:4:12: http3 needs tls (HTTP/3 runs over QUIC, which is always encrypted): add a tls block, or remove http3`}
	if diff := cmp.Diff(want, lines(err)); diff != "" {
		t.Errorf("Parse errors (-want +got):\n%s", diff)
	}
	if _, err := Parse("t.yaml", []byte(tlsListener("{certificates: [{cert: ec.pem, key: ec.key}]}\n    http3: true"))); err != nil {
		t.Errorf("http3 on a tls listener: %v", err)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
