package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

func TestDiff(t *testing.T) {
	old := writeFile(t, "old.yaml", richYAML)
	next := writeFile(t, "new.yaml", `listeners:
  - name: public
    address: ":8081"
    pool: web
    timeouts: {idle: 60s}
    routes:
      - {path_prefix: /, headers: {X-Canary: "1"}, pool: web}
      - {host: api.example.com, path_prefix: /v2, pool: api}
  - name: new
    address: "127.0.0.1:7001"
    pool: web
pools:
  - name: web
    balance: least_requests
    backends:
      - {address: "http://127.0.0.1:8081", weight: 2}
      - {address: "http://127.0.0.1:8083"}
    health_check: {path: /health, interval: 5s}
    timeouts: {connect: 1s}
  - name: api
    balance: consistent_hash
    hash_key: header:X-User
    backends:
      - {address: "http://127.0.0.1:9001"}
shutdown_timeout: 10s
log: {level: debug}
`)
	code, stdout, stderr := sluice(t, "diff", "-config", next, old)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	for _, want := range []string{
		`~ listener "public"`,
		`address: ":8080" → ":8081"`,
		"timeouts.idle: 2m0s → 1m0s",
		"- route {host: api.example.com, path_prefix: /v1, pool: api}",
		"+ route {host: api.example.com, path_prefix: /v2, pool: api}",
		`+ listener "new" on 127.0.0.1:7001`,
		`- listener "old" on 127.0.0.1:7000`,
		`~ pool "web"`,
		`balance: "round_robin" → "least_requests"`,
		"timeouts.connect: 3s → 1s",
		"~ backend http://127.0.0.1:8081: weight 1 → 2",
		"+ backend http://127.0.0.1:8083 (weight 1)",
		"- backend http://127.0.0.1:8082",
		`- pool "legacy"`,
		"shutdown_timeout: 30s → 10s",
		`log.level: "info" → "debug"`,
		// what a reload would do
		`move listener "public" from :8080 to :8081: connections open on :8080 drain (up to 10s)`,
		`bind listener "new"`,
		`close listener "old" on 127.0.0.1:7000: it stops accepting, its open connections drain`,
		`drain backend http://127.0.0.1:8082 of pool "web"`,
		`open new connections to the backends of pool "web"`,
		`remove pool "legacy"`,
		"not apply log",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, `pool "api"`) {
		t.Errorf("diff reports the unchanged pool api:\n%s", stdout)
	}
}

func TestDiffRestartsOnTimeoutsAndKeepsRoutesInPlace(t *testing.T) {
	base := "listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n%s" +
		"pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n  - name: api\n    backends: [{address: \"http://127.0.0.1:8082\"}]\n"
	plain := writeFile(t, "plain.yaml", strings.Replace(base, "%s", "", 1))
	routed := writeFile(t, "routed.yaml", strings.Replace(base, "%s", "    routes: [{path_prefix: /api, pool: api}]\n", 1))
	limited := writeFile(t, "limited.yaml", strings.Replace(base, "%s", "    limits: {max_headers: 50}\n", 1))

	_, out, _ := sluice(t, "diff", "-config", routed, plain)
	if !strings.Contains(out, "+ route {path_prefix: /api, pool: api}") || !strings.Contains(out, "apply every change in place") {
		t.Errorf("a new route: diff\n%s\nwant the route and no drain", out)
	}
	_, out, _ = sluice(t, "diff", "-config", limited, plain)
	if !strings.Contains(out, "limits.max_headers: 100 → 50") || !strings.Contains(out, `restart listener "public" on the same socket`) {
		t.Errorf("new limits: diff\n%s\nwant the limit and a restart of the listener", out)
	}
}

// TestDiffKeepsTCPConnections: a tcp listener that stays tcp changes in
// place: its open connections stay.
func TestDiffKeepsTCPConnections(t *testing.T) {
	base := "listeners:\n  - name: l4\n    address: \"127.0.0.1:0\"\n    pool: db\n%s" +
		"pools:\n  - name: db\n    backends: [{address: \"tcp://127.0.0.1:5432\"}]\n"
	tcp := writeFile(t, "tcp.yaml", strings.Replace(base, "%s", "    protocol: tcp\n", 1))
	idle := writeFile(t, "idle.yaml", strings.Replace(base, "%s", "    protocol: tcp\n    timeouts: {idle: 1h}\n    proxy_protocol: true\n", 1))
	_, out, _ := sluice(t, "diff", "-config", idle, tcp)
	if !strings.Contains(out, "timeouts.idle: 2m0s → 1h0m0s") || !strings.Contains(out, "apply every change in place") {
		t.Errorf("new timeouts on a tcp listener: diff\n%s\nwant the change applied in place", out)
	}
}

// TestDiffAgainstTheRunningInstance: without OLD, diff asks the sluice
// serving at the file's admin.address (with its token) for its config;
// the secrets it leaves out are not reported as changes.
func TestDiffAgainstTheRunningInstance(t *testing.T) {
	adminAddr := "127.0.0.1:" + strconv.Itoa(testenv.Ports(t, 1))
	token := writeFile(t, "token", "s3cret\n")
	base := "listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n" +
		"pools:\n  - name: web\n    sticky: {secret: %s}\n    backends:\n      - address: \"http://127.0.0.1:8081\"\n%s" +
		"admin: {address: %q, token_file: %q}\naccess_log: {format: off}\n"
	running := writeFile(t, "running.yaml", fmt.Sprintf(base, "one", "", adminAddr, token))
	next := writeFile(t, "next.yaml", fmt.Sprintf(base, "two", "      - address: \"http://127.0.0.1:8082\"\n", adminAddr, token))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, []string{"run", "-config", running}, &bytes.Buffer{}, &stderr) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("run exited %d; log:\n%s", code, stderr.String())
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", adminAddr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin API never answered at %s", adminAddr)
		}
		time.Sleep(20 * time.Millisecond)
	}

	code, stdout, errs := sluice(t, "diff", "-config", next)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errs)
	}
	for _, want := range []string{"--- http://" + adminAddr + "/api/v1/config", "+ backend http://127.0.0.1:8082 (weight 1)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "secret") {
		t.Errorf("diff reports the sticky secret:\n%s", stdout)
	}
	code, stdout, _ = sluice(t, "diff", "-config", running)
	if code != 0 || !strings.Contains(stdout, "no changes") {
		t.Errorf("diff of the running file itself: exit %d, stdout %q; want 0 and no changes", code, stdout)
	}

	// Without the token the admin API refuses, and diff says what to do.
	os.WriteFile(token, []byte("wrong\n"), 0o600)
	code, _, errs = sluice(t, "diff", "-config", next)
	if code != 1 || !strings.Contains(errs, "401") || !strings.Contains(errs, "admin.token_file") {
		t.Errorf("with a wrong token: exit %d, stderr %q; want 1 and a word on admin.token_file", code, errs)
	}
}
