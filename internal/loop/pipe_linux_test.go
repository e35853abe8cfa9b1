package loop

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns two ends of a loopback TCP connection: a descriptor of
// the accepted end (non-blocking, owned by the test) and the dialled net.Conn.
func tcpPair(t *testing.T) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := ac.(*net.TCPConn).File()
	ac.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	unix.SetNonblock(fd, true)
	t.Cleanup(func() { f.Close() })
	return fd, nc
}

// TestPipeMovesBytes: Fill and Drain move a body between two sockets
// whole and in order, report EAGAIN on an empty socket and 0 at its end;
// Put keeps an empty pipe and closes one that still holds bytes.
func TestPipeMovesBytes(t *testing.T) {
	inFD, src := tcpPair(t)
	outFD, dst := tcpPair(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
	got := make(chan []byte, 1)
	go func() {
		dst.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(dst)
		got <- b
	}()
	go func() {
		src.Write(body)
		src.(*net.TCPConn).CloseWrite()
	}()
	var ps Pipes
	p := ps.Get()
	if p == nil {
		t.Fatal("no pipe")
	}
	moved, eagain := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p.N > 0 {
			if _, e := p.Drain(outFD); e != 0 && e != unix.EAGAIN {
				t.Fatalf("drain: %v", e)
			}
			continue
		}
		n, e := p.Fill(inFD, 1<<20)
		if e == unix.EAGAIN {
			eagain++
			time.Sleep(time.Millisecond)
			continue
		}
		if e != 0 {
			t.Fatalf("fill: %v", e)
		}
		if n == 0 {
			break // the end
		}
		moved += n
	}
	unix.Shutdown(outFD, unix.SHUT_WR)
	if b := <-got; !bytes.Equal(b, body) {
		t.Fatalf("moved %d bytes, the reader got %d, want %d the same", moved, len(b), len(body))
	}
	t.Logf("%d bytes moved; %d fills found the socket empty", moved, eagain)

	fds := func() int { des, _ := os.ReadDir("/proc/self/fd"); return len(des) }
	ps.Put(p)
	if ps.free[0] != p {
		t.Fatal("an empty pipe was not kept")
	}
	full := ps.Get()
	src2FD, src2 := tcpPair(t)
	src2.Write([]byte("left behind"))
	for i := 0; full.N == 0 && i < 5000; i++ {
		if _, e := full.Fill(src2FD, 100); e == unix.EAGAIN {
			time.Sleep(time.Millisecond)
		}
	}
	before := fds()
	ps.Put(full)
	if len(ps.free) != 0 || fds() != before-2 {
		t.Fatalf("a pipe holding %d bytes: kept %d, descriptors %d (was %d); want it closed", full.N, len(ps.free), fds(), before)
	}
	ps.Put(ps.Get())
	ps.Close()
	if len(ps.free) != 0 {
		t.Fatal("Close kept pipes")
	}
}
