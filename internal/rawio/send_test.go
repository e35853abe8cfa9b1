package rawio

import (
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// expectNothing fails unless nothing arrives at the peer for a while.
func expectNothing(t *testing.T, peer interface {
	SetReadDeadline(time.Time) error
	Read([]byte) (int, error)
}) {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	b := make([]byte, 64)
	if n, err := peer.Read(b); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the peer got %q, %v; want nothing", b[:n], err)
	}
	peer.SetReadDeadline(time.Time{})
}

func TestSendSendsAndReads(t *testing.T) {
	for _, check := range []bool{true, false} {
		c, peer := pair(t)
		go func() {
			b := make([]byte, 8)
			if _, err := io.ReadFull(peer, b); err != nil || string(b) != "GET / x\n" {
				peer.Close()
				return
			}
			time.Sleep(20 * time.Millisecond) // the answer comes late: Send waits for it
			peer.Write([]byte("answer"))
		}()
		rb := make([]byte, 64)
		written, n, stray, err := c.Send([][]byte{[]byte("GET / "), []byte("x\n")}, rb, check)
		if err != nil || stray || written != 8 || string(rb[:n]) != "answer" {
			t.Fatalf("Send (check %v): written %d, read %q, stray %v, %v", check, written, rb[:n], stray, err)
		}
	}
}

// TestSendUncheckedWrites: without check, bytes already there do not stop
// the write; they are read as the answer's first.
func TestSendUncheckedWrites(t *testing.T) {
	c, peer := pair(t)
	peer.Write([]byte("early "))
	time.Sleep(20 * time.Millisecond)
	go func() {
		io.ReadFull(peer, make([]byte, 4))
		peer.Write([]byte("answer"))
	}()
	rb := make([]byte, 64)
	written, n, stray, err := c.Send([][]byte{[]byte("ping")}, rb, false)
	if err != nil || stray || written != 4 {
		t.Fatalf("Send without check: written %d, stray %v, %v", written, stray, err)
	}
	got := string(rb[:n])
	for len(got) < len("early answer") {
		m, err := c.Read(rb)
		if err != nil {
			t.Fatal(err)
		}
		got += string(rb[:m])
	}
	if got != "early answer" {
		t.Fatalf("read %q", got)
	}
}

func TestSendStray(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(peer interface{ Write([]byte) (int, error) }, close func())
	}{
		{"bytes", func(p interface{ Write([]byte) (int, error) }, _ func()) { p.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")) }},
		{"eof", func(_ interface{ Write([]byte) (int, error) }, close func()) { close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			tc.do(peer, func() { peer.CloseWrite() })
			arrived(t, c)
			written, n, stray, err := c.Send([][]byte{[]byte("GET / HTTP/1.1\r\n\r\n")}, make([]byte, 64), true)
			if !stray || written != 0 || n != 0 || err != nil {
				t.Fatalf("Send on a connection that is not silent: written %d, n %d, stray %v, %v; want stray and nothing written", written, n, stray, err)
			}
			if tc.name == "bytes" {
				expectNothing(t, peer)
			}
		})
	}
}

// TestSendStopsWhenFull: a request larger than the socket takes at
// once is written in part; the caller writes the rest.
func TestSendStopsWhenFull(t *testing.T) {
	c, peer := pair(t)
	big := make([]byte, 32<<20)
	got := make(chan int64, 1)
	sent := make(chan struct{})
	go func() {
		<-sent // the peer reads nothing until Send has stopped
		n, _ := io.Copy(io.Discard, peer)
		got <- n
	}()
	written, n, stray, err := c.Send([][]byte{[]byte("head"), big}, make([]byte, 64), true)
	close(sent)
	if err != nil || stray || n != 0 || written <= 0 || written >= int64(len(big))+4 {
		t.Fatalf("Send of 32 MiB: written %d, n %d, stray %v, %v; want part written", written, n, stray, err)
	}
	rest := big[written-4:]
	if _, err := c.Write(rest); err != nil {
		t.Fatal(err)
	}
	c.TCP().CloseWrite()
	if g := <-got; g != int64(len(big))+4 {
		t.Fatalf("the peer got %d bytes, want %d", g, len(big)+4)
	}
}

// TestSendReadFails: a failed read after a complete write is left
// to the caller's next read, which meets it.
func TestSendReadFails(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	written, n, stray, err := c.Send([][]byte{[]byte("ping")}, make([]byte, 64), true)
	if err != nil || stray || n != 0 || written != 4 {
		t.Fatalf("Send past the read deadline: written %d, n %d, stray %v, %v", written, n, stray, err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the next read: %v, want the deadline", err)
	}
	c.SetReadDeadline(time.Time{})
	go func() {
		io.ReadFull(peer, make([]byte, 8))
		peer.CloseWrite()
	}()
	written, n, stray, err = c.Send([][]byte{[]byte("ping")}, make([]byte, 64), true)
	if err != nil || stray || n != 0 || written != 4 {
		t.Fatalf("Send answered by an EOF: written %d, n %d, stray %v, %v", written, n, stray, err)
	}
	if _, err := c.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("the next read: %v, want EOF", err)
	}
}

func TestSendAllocatesNothing(t *testing.T) {
	c, peer := pair(t)
	go io.Copy(peer, peer) // echo
	bufs := [][]byte{[]byte("0123"), []byte("4567")}
	rb := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		_, n, _, _ := c.Send(bufs, rb, true)
		for n < 8 {
			m, err := c.Read(rb[n:])
			if err != nil {
				break
			}
			n += m
		}
	})
	if allocs > 0 {
		t.Fatalf("%v allocations per Send, want 0", allocs)
	}
}

// arrived waits until what the peer sent (bytes or an EOF) has reached c's
// socket, without taking it.
func arrived(t *testing.T, c *Conn) {
	t.Helper()
	rc, err := c.TCP().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		ready := false
		rc.Control(func(fd uintptr) {
			var b [1]byte
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			ready = n > 0 || (n == 0 && err == nil)
		})
		if ready {
			return
		}
	}
	t.Fatal("the peer's bytes never arrived")
}
