package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestGentleShutdownServesFreshConnections: a connection accepted before
// Shutdown whose request arrives after it began gets its answer. Bare
// net/http reads that request and closes the connection unanswered.
func TestGentleShutdownServesFreshConnections(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gentle bool
	}{{"net/http", false}, {"gentle", true}} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := &closeNotifier{Listener: inner, closed: make(chan struct{})}
			accepted := make(chan struct{}, 1)
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				ConnState: func(_ net.Conn, st http.ConnState) {
					if st == http.StateNew {
						accepted <- struct{}{}
					}
				},
			}
			var hs httpServer = srv
			if tc.gentle {
				hs = gentle(srv)
			}
			served := make(chan struct{})
			go func() { defer close(served); hs.Serve(ln) }()

			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			<-accepted
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				shut <- hs.Shutdown(ctx)
			}()
			<-ln.closed // Shutdown has begun (both close the listener first)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			answered := err == nil && resp.StatusCode == 200
			if answered != tc.gentle {
				t.Errorf("request on a fresh connection during Shutdown: answered %v (err %v), want %v", answered, err, tc.gentle)
			}
			c.Close()
			if err := <-shut; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			<-served
		})
	}
}

// closeNotifier is a listener that tells when it is closed.
type closeNotifier struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifier) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
