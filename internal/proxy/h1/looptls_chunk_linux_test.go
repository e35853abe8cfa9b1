package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// TestLoopChunkEncodedHoldsNoBody: a response the backend ends by closing
// its connection is chunk-encoded to an HTTP/1.1 client on the loop, and
// the loop holds no more of it than one read's worth, in the clear and over
// TLS (where c.out once kept every chunk it had sealed: 4 MiB here).
func TestLoopChunkEncodedHoldsNoBody(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[useTLS], func(t *testing.T) {
			if !useTLS && overTLS {
				t.Skip("SLUICE_H1_TLS: the listener speaks TLS")
			}
			const total = 4 << 20
			release := make(chan struct{})
			body := randomBytes(total, 9)
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: x/y\r\n\r\n")
				for i := 0; i < total; i += 16 << 10 {
					if _, err := c.Write(body[i : i+16<<10]); err != nil {
						return
					}
				}
				<-release
			})
			s := defaultSetup()
			s.TLS, s.OnLoops = useTLS, true
			env := startEngine(t, s, rb.URL)
			c := dialClientTLS(t, env.addr, useTLS)
			c.write("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, total)
			if _, err := io.ReadFull(resp.Body, got); err != nil {
				t.Fatal(err)
			}
			lc := onLoop(env)
			if lc == nil {
				t.Fatal("not on a loop")
			}
			type st struct{ n, c int }
			ch := make(chan st, 1)
			lc.w.ev.Post(func() { ch <- st{len(lc.c.out), cap(lc.c.out)} })
			g := recv(t, ch, "the loop")
			t.Logf("after %d body bytes relayed: len(c.out)=%d cap=%d", total, g.n, g.c)
			close(release)
			io.Copy(io.Discard, resp.Body)
			if g.n > 1<<20 {
				t.Errorf("c.out holds %d bytes mid-response: the relayed body accumulates", g.n)
			}
		})
	}
}
