package server

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sluice-lb/sluice/internal/metrics"
)

// HTTP/3 is served the way HTTP/2 is: quic-go's http3.Server in front of
// the net/http codec's handler, so routing, limits, forwarding fields,
// retries, the access log and the counters are the core's. Its socket
// (quicSocket) lives across generations like the TCP one; each generation
// runs its own http3.Server, whose Shutdown sends GOAWAY to the
// connections it serves.

// HTTP/3 limits towards clients, as HTTP/2's: streams at once per
// connection (limits.max_concurrent_streams), and flow-control windows (a stream starts at 512 KiB and
// may grow to 1 MiB, a connection to 4 MiB), so that one connection holds
// at most 4 MiB of a client's unread data. Unidirectional streams: the
// control and two QPACK streams, with room to spare.
const (
	h3MaxUniStreams = 16
	// h3AltSvcMaxAge is how long a client may remember the Alt-Svc
	// (one day, as Caddy and nginx advertise).
	h3AltSvcMaxAge = 24 * time.Hour
)

// listenPacket binds the UDP socket of a listener through
// Options.ListenPacket.
func (s *Server) listenPacket(name, address string) (net.PacketConn, error) {
	listen := s.opts.ListenPacket
	if listen == nil {
		listen = net.ListenPacket
	}
	pc, err := listen("udp", address)
	if err != nil {
		return nil, &ListenError{Listener: name, Address: address, Err: fmt.Errorf("udp (http3): %w", err)}
	}
	return pc, nil
}

// prepareQUIC binds the UDP socket of a listener with http3 that has
// none yet: the TCP socket's host and port (its port, when the config
// asks for port 0).
func (l *listener) prepareQUIC(s *Server) error {
	if !l.cfg.HTTP3 || l.quic != nil {
		return nil
	}
	host, _, _ := net.SplitHostPort(l.cfg.Address)
	_, port, _ := net.SplitHostPort(l.sock.Addr().String())
	pc, err := s.listenPacket(l.cfg.Name, net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	q, err := newQUICSocket(pc, l.active, s.quicRetryAbove)
	if err != nil {
		pc.Close()
		return fmt.Errorf("listener %q: http3: %w", l.cfg.Name, err)
	}
	q.logger = s.logger.With("listener", l.cfg.Name)
	l.quic = q
	return nil
}

// altSvc is the Alt-Svc value that advertises l's HTTP/3 ("": none).
func (l *listener) altSvc() string {
	if l.quic == nil || !l.cfg.HTTP3 {
		return ""
	}
	_, port, _ := net.SplitHostPort(l.quic.Addr().String())
	return `h3=":` + port + `"; ma=` + strconv.Itoa(int(h3AltSvcMaxAge/time.Second))
}

// serveH3 starts this generation's HTTP/3 server on l's QUIC socket.
func (l *listener) serveH3(s *Server) {
	lim, t := l.cfg.Limits, l.cfg.Timeouts
	l.quic.use(l.tls, &quic.Config{
		HandshakeIdleTimeout:           l.h3Handshake(),
		MaxIdleTimeout:                 t.Idle, // 0: quic-go's 30 s
		MaxIncomingStreams:             int64(lim.MaxConcurrentStreams),
		MaxIncomingUniStreams:          h3MaxUniStreams,
		InitialStreamReceiveWindow:     h2StreamWindow / 2,
		MaxStreamReceiveWindow:         h2StreamWindow,
		InitialConnectionReceiveWindow: h2StreamWindow,
		MaxConnectionReceiveWindow:     h2ConnWindow,
		Allow0RTT:                      false, // replayable early data: never
	}, lim.MaxConnections)
	l.h3 = &http3.Server{
		Handler:        l.streamHandler(s),
		MaxHeaderBytes: lim.MaxHeaderBytes,
		IdleTimeout:    t.Idle,
	}
	l.h3gen = l.quic.generation()
	l.h3done = make(chan struct{})
	go func() {
		defer close(l.h3done)
		l.h3.ServeListener(l.h3gen) // until Shutdown or Close
	}()
}

// h3Handshake is how long a QUIC handshake may take: timeouts.read_header,
// at most 10 s.
func (l *listener) h3Handshake() time.Duration {
	if h := l.cfg.Timeouts.ReadHeader; h > 0 && h <= 10*time.Second {
		return h
	}
	return 10 * time.Second
}

// shutdownH3 sends GOAWAY on this generation's HTTP/3 connections, waits
// for their requests until ctx ends (then closes them), and, when the
// socket goes too (the listener leaves, or drops http3), closes it.
func (l *listener) shutdownH3(ctx context.Context, closeSocket bool) {
	if closeSocket {
		// After an upgrade the handshakes begun here finish here (the new
		// process gets every new connection), and their connections get
		// GOAWAY with the others.
		l.quic.finishHandshakes(ctx, l.h3Handshake())
		l.quic.stopAccepting()
	}
	l.h3gen.Close()
	if err := l.h3.Shutdown(ctx); err != nil {
		l.h3.Close()
	}
	<-l.h3done
	if closeSocket {
		l.quic.Close()
	}
}

// protocols is what l reports to the metrics about its HTTP/3 and ACME.
func (l *listener) protocols() metrics.Protocols {
	var p metrics.Protocols
	if q := l.quic; q != nil {
		p.QUIC, p.QUICHandshakes, p.QUICRetries = true, q.handshakes.Load(), q.retries.Load()
	}
	if lt := l.tlsState; lt != nil && lt.acme != nil {
		p.ACME, p.ACMEObtained, p.ACMEFailed = true, lt.acme.Obtained(), lt.acme.Failures()
	}
	return p
}
