package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is the sluice binary running as a child process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	Stdout *logBuffer
	Stderr *logBuffer
	done   chan struct{} // closed when the process has exited
	code   int           // exit code, valid after done; -1 when killed by a signal
}

func needBinary(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("no sluice binary: %v", buildErr)
	}
}

// startProc runs the sluice binary with args. It is killed, if still
// running, when the test ends; its output is printed when the test fails.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	needBinary(t)
	p := &proc{t: t, Stdout: &logBuffer{}, Stderr: &logBuffer{}, done: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- sluice %s ---\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.Stdout, p.Stderr)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	p.cmd = exec.CommandContext(ctx, binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.Stdout, p.Stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start sluice: %v", err)
	}
	go func() {
		defer close(p.done)
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		cancel()
	})
	return p
}

// runProc runs the binary to completion (bounded) and returns its exit
// code and output.
func runProc(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := startProc(t, args...)
	return p.wait(30 * time.Second), p.Stdout.String(), p.Stderr.String()
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("sluice did not exit within %v", timeout)
		return 0
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends sig and fails the test unless the process then exits 0
// (within 20s).
func (p *proc) stop(sig os.Signal) {
	p.t.Helper()
	p.signal(sig)
	if code := p.wait(20 * time.Second); code != 0 {
		p.t.Fatalf("sluice exited %d after %v, want 0", code, sig)
	}
}

// waitLog waits until stderr has a line matching re and returns its
// submatches; it fails when the process exits first.
func (p *proc) waitLog(re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	m, exited := p.waitLogOrExit(re, timeout)
	if exited {
		p.t.Fatalf("sluice exited (code %d) before logging %v", p.code, re)
	}
	if m == nil {
		p.t.Fatalf("sluice did not log %v within %v", re, timeout)
	}
	return m
}

// waitLogOrExit waits until stderr has a line matching re (returning its
// submatches), the process exits, or timeout passes.
func (p *proc) waitLogOrExit(re *regexp.Regexp, timeout time.Duration) (match []string, exited bool) {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.Stderr.String()); m != nil {
			return m, false
		}
		select {
		case <-p.done:
			if m := re.FindStringSubmatch(p.Stderr.String()); m != nil {
				return m, false
			}
			return nil, true
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, false
		}
	}
}

var (
	adminLine = regexp.MustCompile(`msg="admin listening" address=(\S+)`)
)

// listenerLine matches the log line of the listener named name.
func listenerLine(name string) *regexp.Regexp {
	return regexp.MustCompile(`msg=listening listener=` + regexp.QuoteMeta(name) + ` address=(\S+)`)
}

// runConfig writes yaml to a file and runs `sluice run -config FILE`; it
// returns the process, the file, the address of listener "public" and the
// admin address.
func runConfig(t *testing.T, yaml string) (p *proc, file, addr, admin string) {
	t.Helper()
	file = writeConfig(t, yaml)
	p = startProc(t, "run", "-config", file)
	admin = p.waitLog(adminLine, 15*time.Second)[1]
	addr = p.waitLog(listenerLine("public"), 15*time.Second)[1]
	return p, file, addr, admin
}

// writeConfig writes yaml (with the suite's engine) to a new file and
// returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(file, []byte(withEngineYAML(yaml)), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// singlePoolYAML is a config with listener "public" on 127.0.0.1:0 in front
// of one pool "web" over backends, admin on 127.0.0.1:0.
func singlePoolYAML(backends ...*demoBackend) string {
	urls := make([]string, len(backends))
	for i, be := range backends {
		urls[i] = be.URL()
	}
	return singlePoolYAMLAt(10*time.Second, urls...)
}

// singlePoolYAMLAt is singlePoolYAML for backends at urls, with the given
// shutdown_timeout.
func singlePoolYAMLAt(shutdownTimeout time.Duration, urls ...string) string {
	var b strings.Builder
	b.WriteString("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n")
	b.WriteString("pools:\n  - name: web\n    backends:\n")
	for _, u := range urls {
		fmt.Fprintf(&b, "      - address: %q\n", u)
	}
	fmt.Fprintf(&b, "admin:\n  address: \"127.0.0.1:0\"\nshutdown_timeout: %s\n", shutdownTimeout)
	return b.String()
}

func TestProcessUploads100MiBWithBoundedMemory(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "sink")
	p, _, addr, _ := runConfig(t, singlePoolYAML(be))
	c := newClient(t)
	c.Timeout = 2 * time.Minute
	const size = 100 << 20
	for _, tc := range []struct {
		name   string
		length int64
	}{
		{"content-length", size},
		{"chunked", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/echo", io.NopCloser(io.LimitReader(pattern{}, size)))
			req.ContentLength = tc.length
			r := do(t, c, req)
			if r.Status != 200 {
				t.Fatalf("status %d, want 200; body %.200q", r.Status, r.Body)
			}
			e := parseEcho(t, r.Body)
			if e.BodyBytes != size {
				t.Fatalf("backend got body_bytes %d, want %d", e.BodyBytes, size)
			}
			// Streamed as it came: a chunked upload stays chunked.
			if cl, _ := e.Raw["content_length"].(float64); int64(cl) != tc.length {
				t.Errorf("backend saw content_length %v, want %d", e.Raw["content_length"], tc.length)
			}
		})
	}
	hwm := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("sluice peak RSS after two 100 MiB uploads: %d KiB", hwm>>10)
	if hwm > 100<<20 {
		t.Fatalf("sluice peak RSS %d MiB, want under 100 MiB (bodies must stream, not buffer)", hwm>>20)
	}
}

// pattern is an endless reader of bytes that need no memory.
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return len(p), nil
}

// peakRSS reads VmHWM of a process, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	m := regexp.MustCompile(`(?m)^VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

var reloadGauge = regexp.MustCompile(`(?m)^sluice_config_last_reload_successful (\S+)$`)

// reloadOK reads sluice_config_last_reload_successful from admin /metrics
// ("" when unavailable).
func reloadOK(c *http.Client, admin string) string {
	r, err := tryGet(c, "http://"+admin+"/metrics")
	if err != nil || r.Status != 200 {
		return ""
	}
	if m := reloadGauge.FindStringSubmatch(r.Body); m != nil {
		return m[1]
	}
	return ""
}

func TestProcessSIGHUPWithABrokenFileKeepsServing(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, "a", "b")
	base := "listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: a\n%s" +
		"pools:\n  - name: a\n    backends:\n      - address: %q\n  - name: b\n    backends:\n      - address: %q\n" +
		"admin:\n  address: \"127.0.0.1:0\"\n"
	v1 := fmt.Sprintf(base, "", bs[0].URL(), bs[1].URL())
	v2 := fmt.Sprintf(base, "    routes:\n      - {path_prefix: \"/\", pool: b}\n", bs[0].URL(), bs[1].URL())
	p, file, addr, admin := runConfig(t, v1)
	c := newClient(t)
	url := "http://" + addr + "/"
	waitBackends(t, c, url, "a")
	if got := reloadOK(c, admin); got != "1" {
		t.Fatalf("before any reload sluice_config_last_reload_successful is %q, want 1", got)
	}

	if err := os.WriteFile(file, []byte("listeners: [\n  {name: public, address: : :\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "sluice_config_last_reload_successful becomes 0 after a broken reload", func() bool {
		return reloadOK(c, admin) == "0"
	})
	for i := range 5 {
		r := get(t, c, url)
		if r.Status != 200 || r.Header.Get("X-Backend") != "a" {
			t.Fatalf("request %d after the broken reload: status %d from %q, want 200 from a", i, r.Status, r.Header.Get("X-Backend"))
		}
	}

	if err := os.WriteFile(file, []byte(withEngineYAML(v2)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the new route sends / to pool b", func() bool {
		r, err := tryGet(c, url)
		return err == nil && r.Status == 200 && r.Header.Get("X-Backend") == "b"
	})
	if got := reloadOK(c, admin); got != "1" {
		t.Fatalf("after a good reload sluice_config_last_reload_successful is %q, want 1", got)
	}
	p.stop(syscall.SIGTERM)
}

// inFlight sums in_flight over every backend of every pool in admin's
// GET /api/v1/pools (-1 when it cannot be read).
func inFlight(c *http.Client, admin string) int {
	r, err := tryGet(c, "http://"+admin+"/api/v1/pools")
	if err != nil || r.Status != 200 {
		return -1
	}
	var doc struct {
		Pools []struct {
			Backends []struct {
				InFlight *int `json:"in_flight"`
			} `json:"backends"`
		} `json:"pools"`
	}
	if json.Unmarshal([]byte(r.Body), &doc) != nil {
		return -1
	}
	total := 0
	for _, p := range doc.Pools {
		for _, b := range p.Backends {
			if b.InFlight == nil {
				return -1
			}
			total += *b.InFlight
		}
	}
	return total
}

func TestProcessSIGTERMLetsARequestInFlightFinish(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "slow")
	p, _, addr, admin := runConfig(t, singlePoolYAML(be))
	c := newClient(t)
	type result struct {
		r   reply
		err error
	}
	res := make(chan result, 1)
	go func() {
		r, err := tryGet(c, "http://"+addr+"/delay/2s")
		res <- result{r, err}
	}()
	eventually(t, 10*time.Second, "admin /api/v1/pools shows the request in flight", func() bool {
		return inFlight(c, admin) == 1
	})
	if r, err := tryGet(c, "http://"+admin+"/readyz"); err != nil || r.Status != 200 {
		t.Fatalf("before SIGTERM /readyz: status %d, err %v; want 200", r.Status, err)
	}
	p.signal(syscall.SIGTERM)
	// /readyz turns 503 at once, while the request is still in flight.
	var got result
	finished := false
	eventually(t, 10*time.Second, "/readyz answers 503 while the request is in flight", func() bool {
		select {
		case got = <-res:
			finished = true
			return true
		default:
		}
		r, err := tryGet(c, "http://"+admin+"/readyz")
		return err == nil && r.Status == http.StatusServiceUnavailable
	})
	if finished {
		t.Errorf("the request finished before /readyz was seen answering 503")
	} else {
		select {
		case got = <-res:
		case <-time.After(15 * time.Second):
			t.Fatal("request in flight during SIGTERM did not finish within 15s")
		}
	}
	if got.err != nil {
		t.Fatalf("request in flight during SIGTERM: %v", got.err)
	}
	if got.r.Status != 200 {
		t.Fatalf("request in flight during SIGTERM: status %d, want 200; body %q", got.r.Status, got.r.Body)
	}
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestProcessCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.yaml")
	os.WriteFile(valid, []byte("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n"+
		"pools:\n  - name: web\n    backends:\n      - address: \"http://127.0.0.1:8081\"\n"), 0o644)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte(
		"listeners:\n"+ // 1
			"  - name: public\n"+ // 2
			"    address: \"127.0.0.1:0\"\n"+ // 3
			"    pool: nosuchpool\n"+ // 4: reference to a missing pool
			"    bogus_key: 1\n"+ // 5: unknown key
			"pools:\n"+ // 6
			"  - name: web\n"+ // 7
			"    backends:\n"+ // 8
			"      - address: \"not a url\"\n"), 0o644) // 9: bad address

	t.Run("validate a valid file", func(t *testing.T) {
		code, _, stderr := runProc(t, "validate", "-config", valid)
		if code != 0 {
			t.Fatalf("exit code %d, want 0; stderr %q", code, stderr)
		}
	})
	t.Run("validate a broken file", func(t *testing.T) {
		code, _, stderr := runProc(t, "validate", "-config", broken)
		if code != 1 {
			t.Fatalf("exit code %d, want 1", code)
		}
		problem := regexp.MustCompile(`^` + regexp.QuoteMeta(broken) + `:(\d+):(\d+): \S`)
		lines := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
			if m := problem.FindStringSubmatch(l); m != nil {
				lines[m[1]] = true
			}
		}
		for _, want := range []string{"4", "5", "9"} {
			if !lines[want] {
				t.Errorf("no problem reported as %s:%s:COL: …; stderr:\n%s", broken, want, stderr)
			}
		}
	})
	t.Run("version", func(t *testing.T) {
		code, stdout, _ := runProc(t, "version")
		if code != 0 || !strings.Contains(stdout, "sluice") {
			t.Fatalf("exit code %d, stdout %q; want 0 and a line naming sluice", code, stdout)
		}
	})
	t.Run("unknown command", func(t *testing.T) {
		if code, _, _ := runProc(t, "frobnicate"); code != 2 {
			t.Fatalf("exit code %d, want 2", code)
		}
	})
	t.Run("bad flag", func(t *testing.T) {
		if code, _, _ := runProc(t, "run", "-no-such-flag"); code != 2 {
			t.Fatalf("exit code %d, want 2", code)
		}
	})
	for _, cmd := range []string{"run", "validate", "backend", "demo", "version"} {
		t.Run(cmd+" -h", func(t *testing.T) {
			if code, stdout, stderr := runProc(t, cmd, "-h"); code != 0 || stdout+stderr == "" {
				t.Fatalf("exit code %d with output %q, want 0 and a usage text", code, stdout+stderr)
			}
		})
	}
	t.Run("backend", func(t *testing.T) {
		p := startProc(t, "backend", "-listen", "127.0.0.1:0", "-name", "solo")
		addr := p.waitLog(regexp.MustCompile(`msg="backend listening" address=(\S+)`), 15*time.Second)[1]
		r := get(t, newClient(t), "http://"+addr+"/")
		if r.Status != 200 || r.Header.Get("X-Backend") != "solo" || !strings.HasPrefix(r.Body, "Hello from solo") {
			t.Fatalf("status %d, X-Backend %q, body %q; want 200 from solo", r.Status, r.Header.Get("X-Backend"), r.Body)
		}
		p.stop(syscall.SIGTERM)
	})
}

func TestProcessDemo(t *testing.T) {
	t.Parallel()
	// -backend-port 0: the system picks each backend's port, so no other
	// test can take one between its choice and its use.
	p := startProc(t, "demo", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-backend-port", "0")
	addr := p.waitLog(listenerLine("demo"), 15*time.Second)[1]
	c := newClient(t)
	seen := map[string]bool{}
	eventually(t, 15*time.Second, "the three demo backends all answer through the balancer", func() bool {
		r, err := tryGet(c, "http://"+addr+"/")
		if err == nil && r.Status == 200 && strings.HasPrefix(r.Body, "Hello from") {
			seen[r.Header.Get("X-Backend")] = true
		}
		return len(seen) == 3
	})
	p.stop(syscall.SIGINT)
}

func TestProcessQuickForm(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, "q1", "q2")
	p := startProc(t, "run", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0",
		"-backend", bs[0].URL(), "-backend", bs[1].URL(), "-health-path", "/health", "-health-interval", "500ms")
	addr := p.waitLog(listenerLine("default"), 15*time.Second)[1]
	waitBackends(t, newClient(t), "http://"+addr+"/", "q1", "q2")
	p.stop(syscall.SIGTERM)
}
