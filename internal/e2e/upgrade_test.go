package e2e

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/coder/websocket"
)

// TestProcessUpgradeUnderLoad: clients on keep-alive and on fresh
// connections through two SIGUSR2 upgrades of the real binary in quick
// succession, the second while the first old process still drains (a
// WebSocket holds it): no request fails, the PID file follows the serving
// process, a SIGUSR2 that reaches the draining process is refused without
// harm, each old process exits 0 once its WebSocket closes; under systemd
// each new process says MAINPID= and READY=1 and the old one nothing more.
// Then a new binary that exits 1 and a config made invalid each leave the
// serving process as it was.
func TestProcessUpgradeUnderLoad(t *testing.T) {
	needBinary(t)
	becomeSubreaper(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	copyFile(t, binary, bin, 0o755) // replaced on disk below: not the suite's
	bs := startBackends(t, "u1", "u2")
	sd := listenNotify(t, filepath.Join(dir, "notify"))
	p := startUpgradable(t, dir, bin, fmt.Sprintf("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n"+
		"pools:\n  - name: web\n    backends:\n      - address: %q\n      - address: %q\n"+
		"admin:\n  address: \"127.0.0.1:0\"\naccess_log: {format: off}\nshutdown_timeout: 90s\n", bs[0].URL(), bs[1].URL()),
		"NOTIFY_SOCKET="+sd.path)
	cfgFile, pidfile, logs := p.cfgFile, p.pidFile, p.logs
	addr := p.addr("public")
	pid1 := p.pid(0)
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
	// A WebSocket on each old process keeps it draining until the test
	// closes it. shutdown_timeout (90s) must outlast the whole double
	// upgrade on a loaded machine, or the old process rightly closes the
	// WebSocket at its end; the test never waits for it.
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	dialWS := func() *websocket.Conn {
		t.Helper()
		ws, _, err := websocket.Dial(wctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPClient: newClient(t)})
		if err != nil {
			t.Fatalf("WebSocket through sluice: %v", err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		if err := wsEcho(wctx, ws, "hello"); err != nil {
			t.Fatal(err)
		}
		return ws
	}
	held1 := dialWS()
	time.Sleep(300 * time.Millisecond)

	// Upgrade 1: pid1 (this test's child) hands over to pid2 and drains.
	p.Process.Signal(syscall.SIGUSR2)
	pid2 := waitPID(t, pidfile, pid1)
	waitStopsListening(t, pid1, addr)
	// A SIGUSR2 that reaches the draining process (an operator who read
	// the PID file a moment too early) is refused: it neither upgrades nor
	// kills it.
	if err := syscall.Kill(pid1, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, logs, regexp.MustCompile(`msg="upgrade refused: this process has handed over and is draining; signal the process that serves \(the PID file names it\)" new_pid=`+strconv.Itoa(pid2)))
	held2 := dialWS() // on pid2: pid1 no longer listens
	time.Sleep(300 * time.Millisecond)

	// Upgrade 2, at once, while pid1 still drains: pid2 hands over to pid3.
	if err := syscall.Kill(pid1, 0); err != nil {
		t.Fatalf("pid %d (draining, held by a WebSocket) is gone before the second upgrade: %v", pid1, err)
	}
	if err := syscall.Kill(pid2, syscall.SIGUSR2); err != nil {
		t.Fatalf("signal pid %d: %v", pid2, err)
	}
	pid3 := waitPID(t, pidfile, pid2)
	waitStopsListening(t, pid2, addr)
	time.Sleep(300 * time.Millisecond)
	stop()

	// Each old process exits 0 once its WebSocket is closed; pid1 first,
	// so that pid2 is this test's child (a subreaper's) when it exits.
	if err := wsEcho(wctx, held1, "still served by pid1"); err != nil {
		t.Errorf("the WebSocket of the first process after two upgrades: %v", err)
	}
	held1.Close(websocket.StatusNormalClosure, "")
	p.firstExits("the first process after the upgrades")
	if err := wsEcho(wctx, held2, "still served by pid2"); err != nil {
		t.Errorf("the WebSocket of the second process after its upgrade: %v", err)
	}
	held2.Close(websocket.StatusNormalClosure, "")
	if code := waitPIDExit(t, pid2, 30*time.Second); code != 0 {
		t.Fatalf("the second process exited with %d after the upgrade, want 0", code)
	}
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

// waitStopsListening waits until process pid no longer holds the listening
// socket of addr (127.0.0.1:PORT): from then on, new connections reach
// only the processes that still hold it.
func waitStopsListening(t *testing.T, pid int, addr string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	local := fmt.Sprintf("0100007F:%04X", n)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("reading sockets: %v", err)
	}
	inode := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" { // LISTEN
			inode = f[9]
		}
	}
	if inode == "" {
		t.Fatalf("no listening socket for %s in /proc/net/tcp", addr)
	}
	eventually(t, 30*time.Second, fmt.Sprintf("pid %d stops listening on %s", pid, addr), func() bool {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); l == "socket:["+inode+"]" {
				return false
			}
		}
		return true
	})
}

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
	return helloOK(resp)
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
