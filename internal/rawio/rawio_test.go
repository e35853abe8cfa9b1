package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// pair returns a raw Conn over a loopback TCP connection and its peer.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	if !supported {
		t.Skip("rawio: raw system calls are used on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-acc
	if peer == nil {
		t.Fatal("accept failed")
	}
	tc := nc.(*net.TCPConn)
	c, ok := New(tc, tc).(*Conn)
	if !ok {
		t.Fatal("New did not wrap a TCP connection")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer.(*net.TCPConn)
}

func TestReadWriteEOF(t *testing.T) {
	c, peer := pair(t)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(peer, b); err != nil || string(b) != "ping" {
		t.Fatalf("peer read %q, %v", b, err)
	}
	// The read waits in the poller until the peer writes.
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write([]byte("pong"))
		peer.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "pong" {
		t.Fatalf("read %q, %v; want pong and EOF", got, err)
	}
	if n, err := c.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
}

func TestReadDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read across Close: %v, want net.ErrClosed", err)
	}
}

// TestWriteBuffersWaitsAndKeepsOrder writes more than the socket buffers
// hold, in more pieces than one writev takes, to a peer that reads slowly:
// every byte arrives, in order.
func TestWriteBuffersWaitsAndKeepsOrder(t *testing.T) {
	c, peer := pair(t)
	var want bytes.Buffer
	var bufs [][]byte
	for i := range 20 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 500_000+i*7)
		bufs = append(bufs, b)
		want.Write(b)
	}
	got := make(chan []byte, 1)
	go func() {
		// Late: the writer fills the socket's buffers and waits first.
		time.Sleep(50 * time.Millisecond)
		all, _ := io.ReadAll(peer)
		got <- all
	}()
	n, err := c.WriteBuffers(bufs)
	if err != nil || n != int64(want.Len()) {
		t.Fatalf("WriteBuffers: %d, %v; want %d", n, err, want.Len())
	}
	if _, err := c.Write([]byte("end")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("end")
	c.TCP().CloseWrite()
	if g := <-got; !bytes.Equal(g, want.Bytes()) {
		t.Fatalf("peer got %d bytes, want %d in order", len(g), want.Len())
	}
	for i, b := range bufs {
		if len(b) != 500_000+i*7 {
			t.Fatal("WriteBuffers changed its argument")
		}
	}
}

func TestWriteDeadlineAndReset(t *testing.T) {
	c, peer := pair(t)
	// Nobody reads: the write waits until its deadline.
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Write(make([]byte, 64<<20))
	// How much went out before the deadline depends on the machine's
	// load (nothing, when the deadline passed before the first write).
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 64<<20 {
		t.Fatalf("write past the deadline: %d, %v; want less than all written and os.ErrDeadlineExceeded", n, err)
	}
	c.SetWriteDeadline(time.Time{})
	peer.SetLinger(0)
	peer.Close() // a reset
	for range 2000 {
		if _, err = c.Write([]byte("x")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("write after the peer's reset: %v, want a write error", err)
	}
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	c, peer := pair(t)
	go func() { // echo
		io.Copy(peer, peer)
		peer.CloseWrite()
	}()
	const per, writers = 200, 4
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte{byte('0' + w), '\n'}
			for range per {
				if _, err := c.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	counts := make([]int, writers)
	var mu sync.Mutex
	total := 0
	var rg sync.WaitGroup
	for range 2 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			b := make([]byte, 64)
			for {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(b)
				mu.Lock()
				for _, x := range b[:n] {
					if x != '\n' {
						counts[x-'0']++
					}
				}
				total += n
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	c.TCP().CloseWrite()
	rg.Wait()
	for w, n := range counts {
		if n != per {
			t.Fatalf("writer %d: %d echoed, want %d", w, n, per)
		}
	}
}

func TestNoAllocations(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("rawio: Linux only")
	}
	c, peer := pair(t)
	msg := []byte("0123456789")
	b := make([]byte, 64)
	bufs := [][]byte{msg, msg}
	pb := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		c.Write(msg)
		c.WriteBuffers(bufs)
		io.ReadFull(peer, pb[:30])
		peer.Write(msg)
		c.Read(b)
	})
	if allocs > 0 {
		t.Fatalf("%v allocations per Write, WriteBuffers and Read; want 0", allocs)
	}
}

func TestNewLeavesOthersAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if New(a, nil) != a {
		t.Fatal("New wrapped a connection without a socket")
	}
	c, _ := pair(t)
	if New(c, c.TCP()) != net.Conn(c) {
		t.Fatal("New wrapped a Conn twice")
	}
	if c.NetConn() != net.Conn(c.TCP()) {
		t.Fatal("NetConn is not the wrapped connection")
	}
}

func TestGetPut(t *testing.T) {
	c, peer := pair(t)
	g := Get(c.Conn, c.TCP())
	gc, ok := g.(*Conn)
	if !ok || gc == c {
		t.Fatal("Get did not make a Conn of its own")
	}
	if _, err := g.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(peer, b); err != nil || string(b) != "hi" {
		t.Fatalf("peer read %q, %v", b, err)
	}
	Put(g)
	if gc.Conn != nil || gc.tcp != nil || gc.rc != nil {
		t.Fatal("Put kept the connection")
	}
	Put(c) // from New: left alone
	if c.Conn == nil {
		t.Fatal("Put emptied a Conn that New made")
	}
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	if Get(a, nil) != a {
		t.Fatal("Get wrapped a connection without a socket")
	}
}

// writeLog records each Write it is given, as a *tls.Conn would make a
// record of each.
type writeLog struct{ writes [][]byte }

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestWriteBuffersGathersForOtherWriters(t *testing.T) {
	head := bytes.Repeat([]byte("h"), 200)
	small := bytes.Repeat([]byte("b"), 8<<10)
	large := bytes.Repeat([]byte("L"), gatherMax)
	for _, tc := range []struct {
		name   string
		bufs   [][]byte
		writes int
	}{
		{"head and body in one record", [][]byte{head, small}, 1},
		{"chunk size, data, CRLF", [][]byte{[]byte("2000\r\n"), small, []byte("\r\n")}, 1},
		{"one buffer", [][]byte{small}, 1},
		{"more than a record: one write per buffer", [][]byte{head, large}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w writeLog
			var want []byte
			for _, b := range tc.bufs {
				want = append(want, b...)
			}
			n, err := WriteBuffers(&w, append([][]byte(nil), tc.bufs...))
			if err != nil || n != int64(len(want)) {
				t.Fatalf("WriteBuffers = %d, %v; want %d, nil", n, err, len(want))
			}
			if len(w.writes) != tc.writes {
				t.Fatalf("%d writes, want %d", len(w.writes), tc.writes)
			}
			if got := bytes.Join(w.writes, nil); !bytes.Equal(got, want) {
				t.Fatalf("wrote %d bytes that differ from the buffers' %d", len(got), len(want))
			}
		})
	}
}
