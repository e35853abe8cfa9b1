package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

const richYAML = `listeners:
  - name: public
    address: ":8080"
    pool: web
    routes:
      - {host: api.example.com, path_prefix: /v1, pool: api}
      - {path_prefix: /, headers: {X-Canary: "1"}, pool: web}
  - name: old
    address: "127.0.0.1:7000"
    pool: web
pools:
  - name: web
    backends:
      - {address: "http://127.0.0.1:8081"}
      - {address: "http://127.0.0.1:8082", weight: 3}
    health_check: {path: /health, interval: 5s}
  - name: api
    balance: consistent_hash
    hash_key: header:X-User
    backends:
      - {address: "http://127.0.0.1:9001"}
  - name: legacy
    backends: [{address: "http://127.0.0.1:9100"}]
`

func TestValidateSummary(t *testing.T) {
	path := writeFile(t, "rich.yaml", richYAML)
	code, stdout, stderr := sluice(t, "validate", "-v", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	for _, want := range []string{
		"2 listeners, 3 pools, 4 backends",
		"public", ":8080", "2 routes, else pool web",
		"api.example.com/v1* → pool api",
		"/* [X-Canary: 1] → pool web",
		"consistent_hash on header:X-User",
		"checks GET /health every 5s (rise 2, fall 3)",
		"http://127.0.0.1:8082 ×3",
		"legacy", "no listener or route uses it",
		"admin", "127.0.0.1:9090 (no token)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	if n := strings.Count(stdout, "\n"); n > 40 {
		t.Errorf("summary is %d lines, want one screen (40 at most):\n%s", n, stdout)
	}
	_, quiet, _ := sluice(t, "validate", "-config", path)
	if strings.Count(quiet, "\n") != 1 {
		t.Errorf("without -v validate printed %q, want one line", quiet)
	}
}

// TestValidateWarnsOfExpiredCertificate: a certificate past its NotAfter is
// served (a warning, exit 0), and validate says so.
func TestValidateWarnsOfExpiredCertificate(t *testing.T) {
	certFile, keyFile := testenv.NewCA(t, "Test CA").Issue(t, testenv.Leaf{Names: []string{"old.example.com"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).Write(t, t.TempDir(), "c")
	cfg := strings.Replace(validYAML, "    pool: web\n", fmt.Sprintf("    pool: web\n    tls: {certificates: [{cert: %q, key: %q}]}\n",
		certFile, keyFile), 1)
	code, stdout, stderr := sluice(t, "validate", "-v", "-config", writeFile(t, "tls.yaml", cfg))
	if code != 0 || !strings.Contains(stderr, "warning: ") || !strings.Contains(stdout, "https (1 certificate)") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant 0, a warning and an https listener", code, stdout, stderr)
	}
}
