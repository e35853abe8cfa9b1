package h1

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestLoopShutdownServesABegunRequest: a served, idle connection whose
// client has begun its next request when Shutdown begins (its first bytes
// reached the loop, the rest is on its way) is not closed as idle: the
// request is served. In the clear the first bytes are in c.buf; over TLS
// crypto/tls holds them, part of a record, which tlsBase tells by following
// the record lengths.
func TestLoopShutdownServesABegunRequest(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[useTLS], func(t *testing.T) {
			if !useTLS && overTLS {
				t.Skip("SLUICE_H1_TLS: the listener speaks TLS")
			}
			be, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok"+r.URL.Path) })
			s := defaultSetup()
			s.TLS, s.OnLoops = useTLS, true
			env := startEngine(t, s, be.URL)
			raw, held, nc := dialHeld(t, env.addr, useTLS)
			br := bufio.NewReader(nc)
			io.WriteString(nc, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)

			held.hold(true)
			io.WriteString(nc, "GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
			rec := held.take()
			held.hold(false)
			raw.Write(rec[:8])                // the beginning of the record (or of the head)
			time.Sleep(50 * time.Millisecond) // the loop read it

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- env.engine.Shutdown(ctx) }()
			waitFor(t, "Shutdown to begin", env.engine.shutting.Load)
			time.Sleep(50 * time.Millisecond) // closeIfIdle ran on the loop
			raw.Write(rec[8:])
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("a request whose first bytes had reached the engine before Shutdown: %v", err)
			} else {
				b, _ := io.ReadAll(resp.Body)
				t.Logf("served: %d %q", resp.StatusCode, b)
			}
			recv(t, shut, "Shutdown")
		})
	}
}
