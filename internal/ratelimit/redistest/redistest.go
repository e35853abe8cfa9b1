// Package redistest runs a real redis-server for tests: on a free loopback
// port, in a temporary directory, with nothing saved to disk. Tests that
// use it skip when redis-server is not on PATH, except under CI=true, where
// .ci/run installs Debian's redis-server package and its absence fails.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// Server is one redis-server process that a test can stop and start again
// on the same address.
type Server struct {
	// Addr is 127.0.0.1:PORT.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not on PATH under CI=true: .ci/run must install Debian's redis-server package")
		}
		t.Skip("redis-server is not on PATH: install Debian's redis-server package (apt-get install redis-server) to run this test")
	}
	// Stopped and started again on the same port: see testenv.Ports.
	addr := "127.0.0.1:" + strconv.Itoa(testenv.Ports(t, 1))
	s := &Server{Addr: addr, t: t, bin: bin, dir: t.TempDir()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, on the same address, empty.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command(s.bin, "--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(s.Addr) == nil {
			return
		}
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("redis-server on %s exited at start:\n%s", s.Addr, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("redis-server on %s did not answer PING within 10s:\n%s", s.Addr, out)
		}
	}
}

// Stop kills the server (SIGKILL: as a crash, nothing is saved) and waits
// for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("redis-server on %s did not exit within 10s of SIGKILL", s.Addr)
	}
	s.cmd = nil
}

// ping sends PING and reads +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Keys returns the keys the server holds (KEYS *), for tests that check
// what was written.
func (s *Server) Keys() []string {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		s.t.Fatalf("redis %s: %v", s.Addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("KEYS *\r\n")); err != nil {
		s.t.Fatalf("redis %s: %v", s.Addr, err)
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "*") {
		s.t.Fatalf("redis %s: KEYS answered %q, %v", s.Addr, head, err)
	}
	var n int
	fmt.Sscanf(head, "*%d", &n)
	keys := make([]string, 0, n)
	for range n {
		var size int
		line, err := r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("redis %s: %v", s.Addr, err)
		}
		fmt.Sscanf(line, "$%d", &size)
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			s.t.Fatalf("redis %s: %v", s.Addr, err)
		}
		keys = append(keys, string(buf[:size]))
	}
	return keys
}
