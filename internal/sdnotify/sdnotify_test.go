package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket as systemd does and returns a function
// that reads one datagram.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %q: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read datagram: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotify(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify") }},
		{"abstract", func(t *testing.T) string { return fmt.Sprintf("@sluice-sdnotify-test-%d", time.Now().UnixNano()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			read := listen(t, addr)
			t.Setenv("NOTIFY_SOCKET", addr)
			n, err := New()
			if err != nil || n == nil {
				t.Fatalf("New() = %v, %v; want a notifier", n, err)
			}
			if err := n.Notify(Ready); err != nil {
				t.Fatal(err)
			}
			if got, want := read(), "READY=1\n"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if err := n.MainPID(4242); err != nil {
				t.Fatal(err)
			}
			if got, want := read(), "MAINPID=4242\n"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if err := n.Status("a\nb"); err != nil {
				t.Fatal(err)
			}
			if got, want := read(), "STATUS=a b\n"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	read := listen(t, addr)
	n, _ := FromAddress(addr)
	var last uint64
	for range 2 {
		if err := n.Reloading(); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(read(), "\n"), "\n")
		if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
			t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC=…", lines)
		}
		usec, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
		if err != nil || usec == 0 || usec < last {
			t.Fatalf("MONOTONIC_USEC %q (previous %d): want a growing number of microseconds", lines[1], last)
		}
		last = usec
	}
}

func TestNilNotifierIsQuiet(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := New()
	if n != nil || err != nil {
		t.Fatalf("New() without NOTIFY_SOCKET = %v, %v; want nil, nil", n, err)
	}
	for _, f := range []func() error{func() error { return n.Notify(Ready) }, n.Reloading, func() error { return n.MainPID(1) }} {
		if err := f(); err != nil {
			t.Errorf("nil notifier: %v, want nil", err)
		}
	}
}

func TestBadAddress(t *testing.T) {
	if _, err := FromAddress("vsock:2:1234"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("vsock address: err %v, want ErrUnsupported", err)
	}
	n, _ := FromAddress(filepath.Join(t.TempDir(), "nobody-listens"))
	if err := n.Notify(Ready); err == nil {
		t.Error("notify to a socket nobody listens on: nil error, want one")
	}
	if err := n.Notify("READY"); err == nil {
		t.Error("notify with a malformed assignment: nil error, want one")
	}
}
