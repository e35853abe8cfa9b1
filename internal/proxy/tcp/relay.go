package tcp

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// relay moves bytes both ways between a client and a backend until both
// directions have ended. Each direction that runs between two sockets is a
// loop of (*net.TCPConn).ReadFrom over an io.LimitedReader of the other
// socket, which Go turns into splice(2): the bytes go socket → pipe →
// socket in the kernel, never through user space. A direction with TLS on
// the client's side (termination) copies through a pooled buffer.
//
// When one side ends its sending (EOF), the other side's sending half is
// shut (half-close: FIN, or TLS close_notify then FIN) and the other
// direction goes on until it ends too. An error on either side ends both.
//
// The idle timeout closes a connection on which no byte moved either way
// for that long. A read deadline wakes a direction that waits; before
// giving up it asks the kernel when each socket last received data
// (TCP_INFO), so a direction that waits while the other streams, or a
// splice that moves bytes without returning, never counts as idle.
type relay struct {
	client, backend net.Conn
	// The sockets beneath (nil where none, e.g. a client over TLS
	// without a TCP socket beneath, which tests may make).
	clientTCP, backendTCP *net.TCPConn
	idle                  time.Duration // 0: none

	// toBackend and toClient count bytes as they move (the backend's
	// counters, read by metrics); in and out are this connection's.
	toBackend, toClient *atomic.Uint64
	in, out             atomic.Int64

	once sync.Once
	end  atomic.Value // string: why the relay ended (see End*)
}

// Why a relayed connection ended, as the access log says it.
const (
	EndClient   = "client"   // the client closed first, the backend then
	EndBackend  = "backend"  // the backend closed first, the client then
	EndIdle     = "idle"     // no byte moved either way for the idle timeout
	EndError    = "error"    // a read or write failed (reset, broken pipe)
	EndShutdown = "shutdown" // sluice closed it: shutdown_timeout ran out
)

// spliceChunk is how much one ReadFrom moves before the loop looks at its
// counters again: live byte metrics on long transfers, at no cost to the
// splice itself (Go's splice moves up to 1 MiB per pipe round).
const spliceChunk = 4 << 20

var relayBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// run relays until both directions end and returns why the connection
// ended (the first reason set).
func (r *relay) run() string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.direction(r.client, r.backend, r.toClient, &r.out, EndBackend)
	}()
	r.direction(r.backend, r.client, r.toBackend, &r.in, EndClient)
	<-done
	r.client.Close()
	r.backend.Close()
	end, _ := r.end.Load().(string)
	return end
}

// abort ends both directions at once.
func (r *relay) abort(why string) {
	r.end.CompareAndSwap(nil, why)
	r.once.Do(func() {
		r.client.Close()
		r.backend.Close()
	})
}

// direction copies src to dst until src ends, then half-closes dst.
// counter and total count its bytes; eof is the end reason when src ends
// first.
func (r *relay) direction(dst, src net.Conn, counter *atomic.Uint64, total *atomic.Int64, eof string) {
	dstTCP, srcTCP := proxyproto.TCP(dst), proxyproto.TCP(src)
	splice := dstTCP != nil && srcTCP != nil
	var buf *[]byte
	if !splice {
		buf = relayBufs.Get().(*[]byte)
		defer relayBufs.Put(buf)
	}
	if r.idle > 0 {
		src.SetReadDeadline(time.Now().Add(r.idle))
	}
	for {
		var n int64
		var err error
		ended := false
		if splice {
			lr := io.LimitedReader{R: srcTCP, N: spliceChunk}
			n, err = dstTCP.ReadFrom(&lr)
			ended = err == nil && lr.N > 0 // ReadFrom returns nil at EOF
		} else {
			m, rerr := src.Read(*buf)
			if m > 0 {
				_, err = dst.Write((*buf)[:m])
			}
			n = int64(m)
			if err == nil {
				err = rerr
			}
			if errors.Is(err, io.EOF) {
				ended, err = true, nil
			}
		}
		if n > 0 {
			counter.Add(uint64(n))
			total.Add(n)
		}
		if ended {
			r.end.CompareAndSwap(nil, eof)
			closeWrite(dst)
			return
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && r.idle > 0 {
			if quiet := r.quiet(); quiet < r.idle {
				src.SetReadDeadline(time.Now().Add(r.idle - quiet))
				continue
			}
			r.abort(EndIdle)
			return
		}
		r.abort(EndError)
		return
	}
}

// quiet returns how long ago either socket last received data: the
// shorter of the kernel's two answers (0 when it cannot tell, so that a
// connection is never taken for idle by mistake; the next deadline asks
// again).
func (r *relay) quiet() time.Duration {
	c, okc := lastReceived(r.clientTCP)
	b, okb := lastReceived(r.backendTCP)
	switch {
	case okc && okb:
		return min(c, b)
	case okc:
		return c
	case okb:
		return b
	}
	return 0
}

// closeWrite shuts the sending half of c: TLS close_notify first when c is
// TLS, then FIN on the socket.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.CloseWrite()
		c = tc.NetConn()
	}
	if t := proxyproto.TCP(c); t != nil {
		t.CloseWrite()
	}
}
