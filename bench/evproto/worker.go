package main

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/sys/unix"
)

// worker is the prototype's part of one event loop (internal/loop): its
// own SO_REUSEPORT listening sockets, the client connections the kernel
// hands it, and the upstream connections those clients use. Nothing in it
// is shared with another loop, so it takes no lock.
type worker struct {
	id   int
	cfg  *config
	ev   *loop.Loop
	idle [][]*upconn // per backend: idle connections, most recent last
	rr   int
	bufs loop.Bufs // read buffers (cfg.bufSize)
	outs loop.Bufs // output buffers (cfg.outSize)
	xs   []*exchange
	sts  []*h2stream // free HTTP/2 streams (h2stream.go)

	requests, accepted, dials, retries uint64
}

func newWorker(ev *loop.Loop, id int, cfg *config) (*worker, error) {
	l := &worker{id: id, cfg: cfg, ev: ev, idle: make([][]*upconn, len(cfg.backends)),
		bufs: loop.Bufs{Size: cfg.bufSize}, outs: loop.Bufs{Size: cfg.outSize}}
	listen := func(ap netip.AddrPort, h func(fd int) loop.Handler) error {
		fd, err := loop.Listen(ap, true)
		if err != nil {
			return err
		}
		return ev.AddListener(fd, h(fd), false)
	}
	if err := listen(cfg.listen, func(fd int) loop.Handler { return h1Listener{l, fd} }); err != nil {
		return nil, err
	}
	if cfg.h2listen.IsValid() {
		if err := listen(cfg.h2listen, func(fd int) loop.Handler { return h2Listener{l, fd} }); err != nil {
			return nil, err
		}
	}
	if cfg.tlsCfg != nil {
		if err := listen(cfg.tlsListen, func(fd int) loop.Handler { return tlsListener{l, fd, cfg.tlsCfg} }); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// accept accepts a connection on listening socket lfd; false when none is
// waiting.
func (l *worker) accept(lfd int) (int, netip.Addr, bool) {
	fd, peer, err := loop.Accept(lfd)
	if err != nil {
		if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
			fmt.Fprintf(os.Stderr, "evproto: loop %d: accept: %v\n", l.id, err)
		}
		return -1, netip.Addr{}, false
	}
	return fd, peer.Addr(), true
}

// h1Listener accepts HTTP/1.1 connections on -listen.
type h1Listener struct {
	l   *worker
	lfd int
}

func (h h1Listener) Event(loop.Events) {
	l := h.l
	for {
		fd, peer, ok := l.accept(h.lfd)
		if !ok {
			return
		}
		c := &client{l: l, fd: fd, deadline: l.ev.Now() + l.cfg.timeout, peer: peer}
		c.Wr = true
		if err := l.ev.Add(fd, c); err != nil {
			l.ev.CloseFD(fd)
			continue
		}
		l.accepted++
		l.ev.SetTimer(&c.timer, c, c.deadline)
	}
}

func (h1Listener) Fail() {}
