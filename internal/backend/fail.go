package backend

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
)

// handleDrop reads the request body, then closes the connection without a
// word: the client sees the connection end (a FIN) with no response. Over
// HTTP/2, where a connection carries other streams, the stream is reset
// instead.
func (s *Server) handleDrop(w http.ResponseWriter, r *http.Request) {
	// Reading the body first makes the close a clean FIN: closing a socket
	// with unread data makes the kernel send a reset.
	_, _ = io.Copy(io.Discard, r.Body)
	s.stats.drops.Add(1)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// handleReset reads the request body fully, so the request has certainly
// been delivered, then resets the connection (SO_LINGER 0 and close: a TCP
// RST). Over HTTP/2 the stream is reset instead.
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.stats.resets.Add(1)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
