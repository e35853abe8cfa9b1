package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestProcessUpgradeUnderLoad: clients on keep-alive and on fresh
// connections through two successive SIGUSR2 upgrades of the real binary:
// no request fails, the PID file follows the serving process, each old
// process exits 0; under systemd each new process says MAINPID= and
// READY=1 and the old one nothing more. Then a new binary that exits 1 and
// a config made invalid each leave the serving process as it was.
func TestProcessUpgradeUnderLoad(t *testing.T) {
	needBinary(t)
	// Descendants whose parent exits (the process an upgrade started, when
	// the one before it is gone) become this test's children, so that
	// their exit codes can be read.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Skipf("prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	copyFile(t, binary, bin, 0o755) // replaced on disk below: not the suite's
	bs := startBackends(t, "u1", "u2")
	cfgFile := filepath.Join(dir, "sluice.yaml")
	yaml := withEngineYAML(fmt.Sprintf("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n"+
		"pools:\n  - name: web\n    backends:\n      - address: %q\n      - address: %q\n"+
		"admin:\n  address: \"127.0.0.1:0\"\naccess_log: {format: off}\nshutdown_timeout: 10s\n", bs[0].URL(), bs[1].URL()))
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(dir, "sluice.pid")
	sd := listenNotify(t, filepath.Join(dir, "notify"))

	logFile := filepath.Join(dir, "stderr")
	p := startDetached(t, bin, logFile, []string{"NOTIFY_SOCKET=" + sd.path}, "run", "-config", cfgFile, "-pidfile", pidfile)
	logs := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- the sluice processes' log ---\n%s", logs())
		}
	})
	addr := waitFor(t, logs, listenerLine("public"))[1]
	pid1 := waitPID(t, pidfile, 0)
	if pid1 != p.Process.Pid {
		t.Fatalf("pid file holds %d, want %d", pid1, p.Process.Pid)
	}
	url := "http://" + addr + "/"
	c := newClient(t)
	waitBackends(t, c, url, "u1", "u2")

	// The load: keep-alive clients (net/http retries a request whose idle
	// connection the old process closed as it was sent, as every HTTP/1.1
	// client must) and clients opening a connection per request (nothing
	// to retry: a refused or reset connection fails).
	ctx, stopLoad := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for i := range 6 {
		tr := &http.Transport{Proxy: nil, DisableKeepAlives: i%2 == 1, MaxIdleConnsPerHost: 4}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 20000 && ctx.Err() == nil; n++ {
				err := getOK(client, url)
				if err == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
					failMu.Unlock()
				}
				time.Sleep(2 * time.Millisecond) // a bounded load
			}
		}()
	}
	loadStopped := false
	stop := func() {
		if !loadStopped {
			loadStopped = true
			stopLoad()
			wg.Wait()
		}
	}
	defer stop()
	time.Sleep(300 * time.Millisecond)

	// Upgrade 1: pid1 (this test's child) hands over to pid2.
	p.Process.Signal(syscall.SIGUSR2)
	pid2 := waitPID(t, pidfile, pid1)
	waitDone := make(chan error, 1)
	go func() { waitDone <- p.Wait() }()
	select {
	case err := <-waitDone:
		if err != nil {
			t.Fatalf("the first process after the upgrade: %v, want exit 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first process did not exit within 30s of the upgrade")
	}
	time.Sleep(300 * time.Millisecond)

	// Upgrade 2: pid2 (now this test's child, its parent gone) to pid3.
	if err := syscall.Kill(pid2, syscall.SIGUSR2); err != nil {
		t.Fatalf("signal pid %d: %v", pid2, err)
	}
	pid3 := waitPID(t, pidfile, pid2)
	if code := waitPIDExit(t, pid2, 30*time.Second); code != 0 {
		t.Fatalf("the second process exited with %d after the upgrade, want 0", code)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	t.Logf("%d requests through two upgrades (pids %d → %d → %d), %d failed", ok.Load(), pid1, pid2, pid3, failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed during the upgrades, want none:\n%s", failed.Load(), ok.Load()+failed.Load(),
			strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests succeeded: the load did not run", ok.Load())
	}

	// systemd: READY=1 from pid1; MAINPID= and READY=1 from each new
	// process; nothing more from an old one.
	sd.expect(t, pid1, []string{"READY=1"})
	sd.expect(t, pid2, []string{"MAINPID=" + strconv.Itoa(pid2) + "\nREADY=1"})

	// A new binary that cannot start leaves pid3 serving.
	broken := filepath.Join(dir, "sluice.broken")
	os.WriteFile(broken, []byte("#!/bin/sh\necho 'not a sluice' >&2\nexit 1\n"), 0o755)
	if err := os.Rename(broken, bin); err != nil {
		t.Fatal(err)
	}
	upgradeFails(t, pid3, logs, pidfile, c, url, 1)
	// So does a config made invalid, with the good binary back.
	copyFile(t, binary, bin+".new", 0o755)
	os.Rename(bin+".new", bin)
	os.WriteFile(cfgFile, []byte("listeners:\n\t- name: public\n"), 0o644)
	upgradeFails(t, pid3, logs, pidfile, c, url, 2)
	if !strings.Contains(logs(), "tabs are not allowed") {
		t.Errorf("the new process's reason (the bad config) is not in the log")
	}

	if err := syscall.Kill(pid3, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitPIDExit(t, pid3, 30*time.Second); code != 0 {
		t.Fatalf("the last process exited with %d after SIGTERM, want 0", code)
	}
	// pid3 took over, then claimed the main PID back after each failed
	// upgrade (the new process might have claimed it before failing).
	mainPID3 := "MAINPID=" + strconv.Itoa(pid3) + "\nREADY=1"
	sd.expect(t, pid3, []string{mainPID3, mainPID3, mainPID3, "STOPPING=1"})
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("the pid file is still there after the last process exited: %v", err)
	}
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
const prSetChildSubreaper = 36

// upgradeFails sends SIGUSR2 to pid and checks that the upgrade fails (the
// n-th failure in the log) while pid keeps serving and keeps the PID file.
func upgradeFails(t *testing.T, pid int, logs func() string, pidfile string, c *http.Client, url string, n int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	failedLine := regexp.MustCompile(`msg="upgrade failed; this process keeps serving" error="[^"]*exited before it was ready: exit status 1"`)
	eventually(t, 30*time.Second, "the log says the upgrade failed", func() bool {
		return len(failedLine.FindAllString(logs(), -1)) >= n
	})
	for range 20 {
		if err := getOK(c, url); err != nil {
			t.Fatalf("after a failed upgrade: %v", err)
		}
	}
	if got := waitPID(t, pidfile, 0); got != pid {
		t.Fatalf("pid file holds %d after a failed upgrade, want %d", got, pid)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("pid %d is gone after a failed upgrade: %v", pid, err)
	}
}

func getOK(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
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

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// startDetached runs bin with its output in logFile (a file, not a pipe:
// the processes an upgrade starts write to it after this one exits) and
// env added; the processes still running when the test ends are killed.
func startDetached(t *testing.T, bin, logFile string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sluice: %v", err)
	}
	pids := []int{cmd.Process.Pid}
	t.Cleanup(func() {
		// Whatever the PID file names last, and the first process.
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(logFile), "sluice.pid"))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids = append(pids, pid)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return cmd
}

// waitFor waits until the log matches re.
func waitFor(t *testing.T, logs func() string, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	eventually(t, 15*time.Second, "the log matches "+re.String(), func() bool {
		m = re.FindStringSubmatch(logs())
		return m != nil
	})
	return m
}

// waitPID waits until the PID file holds a PID other than not.
func waitPID(t *testing.T, pidfile string, not int) int {
	t.Helper()
	var pid int
	eventually(t, 30*time.Second, fmt.Sprintf("the pid file holds a pid other than %d", not), func() bool {
		b, err := os.ReadFile(pidfile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid != not
	})
	return pid
}

// waitPIDExit waits for a child of this process (one it adopted as a
// subreaper) to exit and returns its exit code (-1 for a signal).
func waitPIDExit(t *testing.T, pid int, timeout time.Duration) int {
	t.Helper()
	type result struct {
		ws  syscall.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		for errors.Is(err, syscall.EINTR) {
			_, err = syscall.Wait4(pid, &ws, 0, nil)
		}
		done <- result{ws, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("wait for pid %d: %v", pid, r.err)
		}
		if r.ws.Signaled() {
			return -1
		}
		return r.ws.ExitStatus()
	case <-time.After(timeout):
		t.Fatalf("pid %d did not exit within %v", pid, timeout)
		return 0
	}
}

// notifySocket is a NOTIFY_SOCKET that records each datagram with its
// sender's PID (SCM_CREDENTIALS), as systemd reads them.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs map[int][]string // by sender PID
}

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	})
	if serr != nil {
		t.Skipf("SO_PASSCRED: %v", serr)
	}
	n := &notifySocket{path: path, msgs: map[int][]string{}}
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			k, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			pid := -1
			if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) > 0 {
				if cred, err := syscall.ParseUnixCredentials(&cms[0]); err == nil {
					pid = int(cred.Pid)
				}
			}
			n.mu.Lock()
			n.msgs[pid] = append(n.msgs[pid], string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// expect checks that pid sent exactly the datagrams that start with want,
// in order (a STATUS= line may follow each).
func (n *notifySocket) expect(t *testing.T, pid int, want []string) {
	t.Helper()
	var got []string
	eventually(t, 5*time.Second, fmt.Sprintf("%d notifications from pid %d", len(want), pid), func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		got = append([]string(nil), n.msgs[pid]...)
		return len(got) >= len(want)
	})
	time.Sleep(100 * time.Millisecond)
	n.mu.Lock()
	got = append([]string(nil), n.msgs[pid]...)
	n.mu.Unlock()
	if len(got) != len(want) {
		t.Errorf("pid %d sent %q, want %d notifications starting %q", pid, got, len(want), want)
		return
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]+"\n") {
			t.Errorf("pid %d's notification %d is %q, want it to start %q", pid, i, got[i], want[i])
		}
	}
}
