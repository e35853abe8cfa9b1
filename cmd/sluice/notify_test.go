package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// TestSystemdNotify runs `sluice run` with a unixgram NOTIFY_SOCKET, as
// systemd would, and reads READY=1, then RELOADING=1 with MONOTONIC_USEC
// and READY=1 around a SIGHUP reload, then STOPPING=1 at shutdown.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := writeFile(t, "sluice.yaml", validYAML+"admin: {address: \"127.0.0.1:0\"}\naccess_log: {format: off}\n")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, []string{"run", "-config", cfg}, &bytes.Buffer{}, &stderr) }()

	read := func(want ...string) string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %q: %v; sluice's log:\n%s", want, err, stderr.String())
		}
		msg := string(buf[:n])
		for _, w := range want {
			if !regexp.MustCompile(`(?m)^` + w + `$`).MatchString(msg) {
				t.Fatalf("notification %q, want a line %q", msg, w)
			}
		}
		return msg
	}
	read("READY=1")
	for range 2 {
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		msg := read("RELOADING=1", `MONOTONIC_USEC=\d+`)
		if strings.Contains(msg, "READY=1") {
			t.Fatalf("RELOADING and READY in one notification: %q", msg)
		}
		read("READY=1")
	}
	cancel()
	read("STOPPING=1")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d after shutdown, want 0; log:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sluice did not return after shutdown")
	}
}

// TestPIDFile: -pidfile holds the process ID while sluice serves and is
// gone after a clean exit.
func TestPIDFile(t *testing.T) {
	cfg := writeFile(t, "sluice.yaml", validYAML+"admin: {address: \"127.0.0.1:0\"}\naccess_log: {format: off}\n")
	pidfile := filepath.Join(t.TempDir(), "sluice.pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "-config", cfg, "-pidfile", pidfile}, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	want := fmt.Sprintf("%d\n", os.Getpid())
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(pidfile)
		if string(b) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid file holds %q, want %q", b, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pid file still there after exit: %v", err)
	}
}

// TestJournalLogs: under journald (JOURNAL_STREAM names stderr) the text
// log has no time= of its own and each line starts with its syslog
// priority; elsewhere it is the usual slog text.
func TestJournalLogs(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	st := fi.Sys().(*syscall.Stat_t)
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	if !underJournal(f, stream) {
		t.Fatalf("underJournal(file, %q) = false, want true", stream)
	}
	if underJournal(f, "1:2") || underJournal(&bytes.Buffer{}, stream) || underJournal(f, "") {
		t.Fatal("underJournal is true for another stream, a non-file or no JOURNAL_STREAM")
	}

	var b bytes.Buffer
	log := newLogger(config.Log{Level: "info", Format: "text"}, &b, true)
	log.With("listener", "public").Info("listening", "address", ":8080")
	log.Warn("config reload failed")
	log.Error("boom")
	log.Debug("not shown")
	want := "<6>level=INFO msg=listening listener=public address=:8080\n" +
		"<4>level=WARN msg=\"config reload failed\"\n" +
		"<3>level=ERROR msg=boom\n"
	if b.String() != want {
		t.Errorf("journal text log:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	newLogger(config.Log{Level: "info", Format: "json"}, &b, true).Info("x")
	if !strings.HasPrefix(b.String(), `<6>{"time":`) {
		t.Errorf("journal JSON log %q, want a priority prefix and its time kept", b.String())
	}

	b.Reset()
	newLogger(config.Log{Level: "info", Format: "text"}, &b, false).Info("x")
	if !strings.HasPrefix(b.String(), "time=") {
		t.Errorf("log outside the journal %q, want time= first", b.String())
	}
}
