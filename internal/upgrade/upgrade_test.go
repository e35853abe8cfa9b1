package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary plays the new process too: Upgrade starts it again with
// the same arguments, and helperEnv tells TestMain to be that process.
const (
	helperEnv = "SLUICE_UPGRADE_TEST_HELPER" // "serve" or "fail"
	reportEnv = "SLUICE_UPGRADE_TEST_REPORT" // a file the helper writes what it saw to
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "fail":
		fmt.Fprintln(os.Stderr, "helper: a bad config, say")
		os.Exit(1)
	case "serve":
		os.Exit(helper())
	}
}

// helper is the new process: it reports what it inherited and whether each
// socket was still non-blocking on arrival, takes the TCP listener and UDP
// socket at the addresses the test used, answers "new" on it, and tells
// the parent it is ready. It exits when its listener is closed for it (the
// test kills it) or after a minute.
func helper() int {
	u, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	var lines []string
	for k, fs := range u.inherited {
		for _, f := range fs {
			lines = append(lines, fmt.Sprintf("%s nonblock=%v", k, nonBlocking(f)))
		}
	}
	sort.Strings(lines)
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	second, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	pc, err := u.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	lines = append(lines, "tcp="+ln.Addr().String(), "tcp="+second.Addr().String(), "udp="+pc.LocalAddr().String())
	// The link beside the UDP socket: say something on it.
	if l := pc.(*udpConn).ParentLink(); l != nil {
		_, err := l.Write([]byte("hello from the new process"))
		lines = append(lines, fmt.Sprintf("link write: %v", err))
	}
	os.WriteFile(os.Getenv(reportEnv), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "new") }))
	if err := u.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	time.Sleep(time.Minute)
	return 0
}

// nonBlocking reports whether O_NONBLOCK is set on the file's description.
func nonBlocking(sc syscall.Conn) bool {
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var flags uintptr
	rc.Control(func(fd uintptr) {
		flags, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	})
	return flags&syscall.O_NONBLOCK != 0
}

func get(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestHandOver: the new process inherits the open TCP and UDP sockets (not
// one that was closed; two under one address in the order asked for),
// finds them still non-blocking, serves on the same address once ready,
// and the old listener then closes at once; a link beside the UDP socket
// joins the two processes.
func TestHandOver(t *testing.T) {
	u, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if u.HasParent() {
		t.Fatal("HasParent is true in a process nobody started through Upgrade")
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "old") }))
	addr := ln.Addr().String()
	second, err := u.Listen("tcp", "127.0.0.1:0") // the same key: order decides
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	pc, err := u.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	links := make(chan *os.File, 1)
	pc.(*udpConn).OnSuccessor(func(l *os.File) { links <- l })
	gone, err := u.Listen("tcp", "127.0.0.1:1")
	if err != nil {
		gone, err = u.Listen("tcp", "[::1]:0")
	}
	if err == nil {
		gone.Close() // closed: not handed over
	}
	if got := get(t, addr); got != "old" {
		t.Fatalf("before the upgrade: %q, want old", got)
	}

	report := filepath.Join(t.TempDir(), "report")
	t.Setenv(helperEnv, "serve")
	t.Setenv(reportEnv, report)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pid, err := u.Upgrade(ctx)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })

	b, _ := os.ReadFile(report)
	want := "listener:tcp:127.0.0.1:0 nonblock=true\nlistener:tcp:127.0.0.1:0 nonblock=true\npacket:udp:127.0.0.1:0 nonblock=true\n" +
		"tcp=" + addr + "\ntcp=" + second.Addr().String() + "\nudp=" + pc.LocalAddr().String() + "\nlink write: <nil>\n"
	if string(b) != want {
		t.Errorf("the new process reports:\n%s\nwant:\n%s", b, want)
	}
	// The old process's end of the link, given once the new one is ready.
	select {
	case l := <-links:
		msg := make([]byte, 64)
		n, err := l.Read(msg)
		l.Close()
		if string(msg[:n]) != "hello from the new process" || err != nil {
			t.Errorf("the link beside the UDP socket carried %q, %v", msg[:n], err)
		}
	default:
		t.Error("no link beside the UDP socket after the upgrade")
	}
	if !nonBlocking(ln.(syscall.Conn)) {
		t.Errorf("the old process's listener turned blocking")
	}
	closed := make(chan struct{})
	go func() { ln.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the old listener hangs")
	}
	for range 5 {
		if got := get(t, addr); got != "new" {
			t.Fatalf("after the old listener closed: %q, want new", got)
		}
	}
	if _, err := u.Upgrade(ctx); !errors.Is(err, ErrBusy) {
		t.Errorf("a second Upgrade after a hand-over: %v, want ErrBusy", err)
	}
}

// TestFailedUpgradeKeepsServing: a new process that exits before it is
// ready, or a binary that cannot run, is an error and changes nothing.
func TestFailedUpgradeKeepsServing(t *testing.T) {
	u, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "old") }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Setenv(helperEnv, "fail")
	_, err = u.Upgrade(ctx)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("Upgrade to a process that exits 1: %v, want it to say so", err)
	}
	if got := get(t, ln.Addr().String()); got != "old" {
		t.Fatalf("after a failed upgrade: %q, want old", got)
	}

	u.path = filepath.Join(t.TempDir(), "missing")
	if _, err := u.Upgrade(ctx); err == nil || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Upgrade to a missing binary: %v, want ENOENT", err)
	}
	u.path = filepath.Join(t.TempDir(), "not-executable")
	os.WriteFile(u.path, []byte("#!/bin/sh\nexit 0\n"), 0o644)
	if _, err := u.Upgrade(ctx); err == nil || !errors.Is(err, syscall.EACCES) {
		t.Errorf("Upgrade to a file that is not executable: %v, want EACCES", err)
	}
	if got := get(t, ln.Addr().String()); got != "old" {
		t.Fatalf("after failed upgrades: %q, want old", got)
	}
	if !nonBlocking(ln.(syscall.Conn)) {
		t.Errorf("the listener turned blocking")
	}
}

// The trap the package avoids, shown: a file from (*net.TCPListener).File
// turns the shared socket to blocking mode as soon as its Fd is taken,
// which exec.Cmd.ExtraFiles does.
func TestFileFdTurnsTheSocketBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Fd()
	if nonBlocking(ln.(syscall.Conn)) {
		t.Skip("File.Fd no longer switches the socket to blocking mode")
	}
	d, err := dup(ln.(syscall.Conn), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	syscall.SetNonblock(int(rawFD(ln.(syscall.Conn))), true)
	d.Fd()
	if !nonBlocking(ln.(syscall.Conn)) {
		t.Error("Fd of a file made by dup turned the socket blocking")
	}
}

// rawFD is the descriptor number of sc.
func rawFD(sc syscall.Conn) uintptr {
	rc, _ := sc.SyscallConn()
	var out uintptr
	rc.Control(func(fd uintptr) { out = fd })
	return out
}
