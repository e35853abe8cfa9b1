package h1

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
	"golang.org/x/sys/unix"
)

// A socket's queue holds what waits for the client, not everything a slow
// client was sent since the queue was last empty: what was written is
// dropped as more is queued.
func TestSocketQueueHoldsWhatWaits(t *testing.T) {
	ls, err := NewLoops(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	client, c := testenv.TCPPair(t)
	client.(*net.TCPConn).SetReadBuffer(16 << 10)
	s := ls.TakeSocket(c)
	if s == nil {
		t.Fatal("the loops did not take the connection")
	}
	defer s.Close()
	unix.SetsockoptInt(s.FD(), unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10)
	chunk := bytes.Repeat([]byte{'x'}, 32<<10)
	const total = 8 << 20
	got := make(chan int, 1)
	go func() {
		n, _ := io.Copy(io.Discard, io.LimitReader(client, total))
		got <- int(n)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for queued := 0; queued < total; {
		// Keep about 64 KiB waiting, as a handler under back-pressure does.
		for s.Queued() < 64<<10 && queued < total {
			if err := s.Queue(chunk); err != nil {
				t.Fatal(err)
			}
			queued += len(chunk)
		}
		if _, err := s.Send(); err != nil {
			t.Fatal(err)
		}
		if held := len(s.out); held > s.Queued()+sockBufSize+len(chunk) {
			t.Fatalf("the queue holds %d bytes for %d waiting", held, s.Queued())
		}
		if time.Now().After(deadline) {
			t.Fatal("the client did not take 8 MiB in 20 s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	for s.Queued() > 0 {
		if _, err := s.Send(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	if n := <-got; n != total {
		t.Fatalf("the client got %d bytes of %d", n, total)
	}
}
