package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// upgradable is the sluice binary run as `run -config FILE -pidfile FILE`
// with its output in a file, as the tests of SIGUSR2 upgrades need: the
// processes an upgrade starts write to the same file and the PID file names
// the one that serves. Cmd is the first process (this test's child).
type upgradable struct {
	*exec.Cmd
	t       *testing.T
	cfgFile string // dir/sluice.yaml
	pidFile string // dir/sluice.pid
	logFile string // dir/stderr
}

// startUpgradable writes yaml (on the suite's engine) to dir/sluice.yaml and
// runs bin with it, the PID file dir/sluice.pid and env added (startDetached:
// what still runs when the test ends is killed). The log is printed when the
// test fails.
func startUpgradable(t *testing.T, dir, bin, yaml string, env ...string) *upgradable {
	t.Helper()
	u := &upgradable{t: t, cfgFile: filepath.Join(dir, "sluice.yaml"), pidFile: filepath.Join(dir, "sluice.pid"),
		logFile: filepath.Join(dir, "stderr")}
	if err := os.WriteFile(u.cfgFile, []byte(withEngineYAML(yaml)), 0o644); err != nil {
		t.Fatal(err)
	}
	u.Cmd = startDetached(t, bin, u.logFile, env, "run", "-config", u.cfgFile, "-pidfile", u.pidFile)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- the sluice processes' log ---\n%s", u.logs())
		}
	})
	return u
}

// logs is what the processes have written so far.
func (u *upgradable) logs() string { b, _ := os.ReadFile(u.logFile); return string(b) }

// addr waits until the log names the address of listener name.
func (u *upgradable) addr(name string) string {
	u.t.Helper()
	return waitFor(u.t, u.logs, listenerLine(name))[1]
}

// waitLog waits until the log matches re.
func (u *upgradable) waitLog(re *regexp.Regexp) []string {
	u.t.Helper()
	return waitFor(u.t, u.logs, re)
}

// pid waits until the PID file names a process other than not.
func (u *upgradable) pid(not int) int {
	u.t.Helper()
	return waitPID(u.t, u.pidFile, not)
}

// firstExits waits (30s at most) for the first process to exit, and fails
// the test unless it exits 0; what names it in the failure.
func (u *upgradable) firstExits(what string) {
	u.t.Helper()
	done := make(chan error, 1)
	go func() { done <- u.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			u.t.Fatalf("%s: %v, want exit 0", what, err)
		}
	case <-time.After(30 * time.Second):
		u.t.Fatalf("%s did not exit within 30s", what)
	}
}

// helloOK reads and closes resp's body: nil for a 200 from a demo backend
// ("Hello from ..."), else what came instead.
func helloOK(resp *http.Response) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "Hello from") {
		return fmt.Errorf("status %d, body %.80q", resp.StatusCode, body)
	}
	return nil
}

// becomeSubreaper makes this test process the subreaper of its
// descendants: a process an upgrade started becomes its child when the one
// before it exits, so that its exit code can be read (waitPIDExit). It
// skips the test where prctl refuses.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Skipf("prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
}
