package tlsterm

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// writePair writes an issued certificate's files as dir/base.pem and
// dir/base.key, each replaced at once (rename), as a certificate renewal
// tool does.
func writePair(t testing.TB, dir, base string, is *testenv.Issued) config.Certificate {
	t.Helper()
	cert, key := is.Write(t, dir, base)
	return config.Certificate{Cert: cert, Key: key}
}

// server is a TLS echo server on loopback.
type server struct {
	addr       string
	counters   Counters
	handshakes chan serverConn // each handshake's result, as the server saw it
}

type serverConn struct {
	state tls.ConnectionState
	err   error
}

// serve starts a TLS echo server with conf; the test's cleanup stops it
// and waits for its goroutines.
func serve(t *testing.T, conf *tls.Config) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(), handshakes: make(chan serverConn, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[raw] = true
			mu.Unlock()
			wg.Go(func() {
				defer raw.Close()
				conn := tls.Server(raw, conf)
				err := s.counters.Handshake(ctx, conn)
				s.handshakes <- serverConn{conn.ConnectionState(), err}
				if err == nil {
					io.Copy(conn, conn)
				}
			})
		}
	})
	return s
}

// dial opens a TLS connection to s; the test's cleanup closes it.
func dial(t *testing.T, s *server, conf *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{Config: conf, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*tls.Conn), nil
}

// result waits for the server's side of the next handshake.
func (s *server) result(t *testing.T) serverConn {
	t.Helper()
	select {
	case r := <-s.handshakes:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no handshake")
		return serverConn{}
	}
}

// echo checks the connection still carries data both ways.
func echo(t *testing.T, c *tls.Conn, msg string) error {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: got " + string(buf))
	}
	return nil
}

// servedSerial returns the serial of the certificate the server showed.
func servedSerial(c *tls.Conn) string {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// serialOf returns the serial of an issued certificate, as servedSerial.
func serialOf(is *testenv.Issued) string { return is.Cert.SerialNumber.String() }
