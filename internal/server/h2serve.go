package server

// The HTTP/2 server of a listener: sluice's own (package h2), on the event
// loops where the listener has them (h2loop_linux.go), or with engine std
// golang.org/x/net/http2's.

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
	"github.com/sluice-lb/sluice/internal/proxy/h2"
	"golang.org/x/net/http2"
)

// h2Serving serves a listener's HTTP/2 connections: sluice's own server
// (package h2), or with engine std golang.org/x/net/http2's.
type h2Serving interface {
	// serve serves c with h until the connection ends, with the flood
	// guard g configures; upgrade is the HTTP/1.1 request that switched
	// it to h2c, with its HTTP2-Settings payload, or nil. hold, when not
	// nil, lets it take c onto an event loop (front.closer), where it is
	// served with no goroutine waiting for it: then serve returns true at
	// once and calls ended when the connection is over.
	serve(c net.Conn, g *h2guard.Config, h http.Handler, upgrade *http.Request, settings []byte,
		hold func(take func() func()) bool, ended func()) bool
	// goAway sends GOAWAY on every connection served so far.
	goAway()
	// handler is the listener's handler for HTTP/2 streams.
	handler() http.Handler
}

// h2Server is the HTTP/2 server of l: the net/http codec's handler behind
// sluice's HTTP/2 server (package h2), or with engine std behind
// golang.org/x/net/http2, with bounded streams, windows and header lists.
func (l *listener) h2Server(s *Server) h2Serving {
	lim := l.cfg.Limits
	t := l.cfg.Timeouts
	if l.cfg.Engine != "std" {
		var loops *h1.Loops
		if l.cfg.Engine == "loop" {
			loops = s.eventLoops()
		}
		own := &ownH2{h: l.streamHandler(s), loops: loops, srv: &h2.Server{
			MaxConcurrentStreams: uint32(lim.MaxConcurrentStreams),
			StreamWindow:         h2StreamWindow,
			ConnWindow:           h2ConnWindow,
			MaxHeaderListSize:    uint32(lim.MaxHeaderBytes),
			PrefaceTimeout:       t.ReadHeader,
			IdleTimeout:          t.Idle,
			WriteTimeout:         t.Write,
			CountError:           func(string) { l.h2Errors.Add(1) },
			Logger:               s.logger,
		}}
		if loops != nil {
			own.forwardOnLoops()
		}
		return own
	}
	base := &http.Server{
		Handler:           l.streamHandler(s),
		ReadHeaderTimeout: t.ReadHeader,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    lim.MaxHeaderBytes, // SETTINGS_MAX_HEADER_LIST_SIZE
		ErrorLog:          slogLogger(s),
	}
	srv := &http2.Server{
		MaxConcurrentStreams:         uint32(lim.MaxConcurrentStreams),
		MaxUploadBufferPerStream:     h2StreamWindow,
		MaxUploadBufferPerConnection: h2ConnWindow,
		MaxReadFrameSize:             1 << 14,
		IdleTimeout:                  t.Idle,
		MaxDecoderHeaderTableSize:    4096,
		MaxEncoderHeaderTableSize:    4096,
		CountError:                   func(string) { l.h2Errors.Add(1) },
	}
	if err := http2.ConfigureServer(base, srv); err != nil {
		panic(err) // only a TLSConfig on base can make it fail, and base has none
	}
	return &stdH2{srv: srv, base: base}
}

// ownH2 is sluice's HTTP/2 server, on the event loops when the listener
// has them (a connection that switched with "Upgrade: h2c" stays on its
// goroutine).
type ownH2 struct {
	srv   *h2.Server
	h     http.Handler
	loops *h1.Loops
	// engine is the listener's HTTP/1.1 engine, which forwards on the
	// loops the streams they can forward (h2loop_linux.go); set once it
	// is made, after the front may have begun to serve (nil until then:
	// the streams go to the connections' workers).
	engine atomic.Pointer[h1.Engine]
}

func (o *ownH2) serve(c net.Conn, g *h2guard.Config, h http.Handler, upgrade *http.Request, settings []byte,
	hold func(take func() func()) bool, ended func()) bool {
	if upgrade == nil && o.loops != nil && hold != nil {
		if served, detached := o.serveLoop(c, g, h, hold, ended); served {
			return detached
		}
	}
	o.srv.ServeConn(h2guard.New(c, g), h2.ServeConnOpts{Handler: h, UpgradeRequest: upgrade, Settings: settings})
	return false
}
func (o *ownH2) goAway()               { o.srv.Shutdown() }
func (o *ownH2) handler() http.Handler { return o.h }

// stdH2 is x/net's HTTP/2 server; ConfigureServer has been called on base,
// so that base.Shutdown sends GOAWAY.
type stdH2 struct {
	srv  *http2.Server
	base *http.Server
}

func (x *stdH2) serve(c net.Conn, g *h2guard.Config, h http.Handler, upgrade *http.Request, settings []byte,
	_ func(func() func()) bool, _ func()) bool {
	x.srv.ServeConn(h2guard.New(c, g), &http2.ServeConnOpts{Handler: h, BaseConfig: x.base, UpgradeRequest: upgrade, Settings: settings})
	return false
}
func (x *stdH2) goAway()               { x.base.Shutdown(context.Background()) }
func (x *stdH2) handler() http.Handler { return x.base.Handler }
