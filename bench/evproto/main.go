// Command evproto is the prototype of issue 15: the smallest event-driven
// HTTP/1.1 reverse proxy that does per request what sluice's engine does
// with its default config, built to be measured against that engine and
// HAProxy (bench/evproto.sh) before either design is committed to. It is
// not part of the product and is wired into nothing.
//
// Design (-mode loop, the default): GOMAXPROCS event loops, each with its
// own edge-triggered epoll instance (golang.org/x/sys/unix) and its own
// SO_REUSEPORT listening socket; client and backend sockets non-blocking,
// registered once for both directions; requests parsed with sluice's strict
// parser (internal/edge) and forwarded on the loop, with no goroutine per
// connection or request; each loop owns its backend connections (a LIFO
// idle stack per backend) and uses them only for its own clients; one
// lazily re-armed timer per connection on its loop's wheel. The loops are
// sluice's own (internal/loop), which came out of this prototype. A loop
// waits in epoll_wait without telling the scheduler (-wait raw, see
// rawEpollWait); -wait runtime waits through it, as any Go program's
// blocking system call does, to measure what that costs.
//
// -mode goroutine is the control: the same parsing, head rewriting and
// pooling with one goroutine per client connection and blocking net.Conn
// I/O (sluice's engine's model, less its features), so that a difference
// can be put down to the I/O model rather than to the work done.
//
// With -h2c-listen the same loops also serve HTTP/2 over cleartext (prior
// knowledge) on a second socket: issue 10's question put to this design
// (h2.go, which says what it does and leaves out); with -h2-tls-listen,
// HTTP/2 over TLS, records on the loops and handshakes on goroutines
// (tls.go). With -core each request also goes through the per-request work
// of sluice's core, with sluice's own packages (core.go): what the product's
// features cost on a loop.
//
// What it leaves out (it answers 501 or 502 where that shows): TLS beyond
// tls.go, HTTP/2 beyond h2.go, upgrades (WebSocket, h2c), HTTP/1.0 clients, OPTIONS *, routing
// beyond one round-robin pool, health checks, retries beyond one re-send of
// a bodiless idempotent request whose reused connection failed before any
// response byte, per-phase timeouts (one timeout covers idle, head, body
// and backend, restarted by each piece of a body that moves), graceful
// shutdown, reload, metrics and access logs, Expect handling of its own (the
// backend's 100 Continue is relayed), lingering close after a refusal,
// splice, and limits on idle backend connections' age.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/proxy"
)

type config struct {
	listen   netip.AddrPort
	h2listen netip.AddrPort // HTTP/2 over cleartext, prior knowledge (h2.go); zero: none
	// HTTP/2 over TLS (tls.go); nil: none
	tlsListen netip.AddrPort
	tlsCfg    *tls.Config
	backends  []netip.AddrPort
	addrs     []string
	timeout   int64 // nanoseconds
	bufSize   int
	outSize   int
	maxIdle   int
	rawWait   bool
	lim       edge.Limits
	core      *core // -core: sluice's per-request work (core.go); nil: none
	ids       *proxy.RequestIDs
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8094", "loopback address to listen on")
	tlsListen := flag.String("h2-tls-listen", "", "loopback address to serve HTTP/2 over TLS (ALPN h2) on, -mode loop only; needs -cert and -key (empty: none)")
	certFile := flag.String("cert", "", "certificate (PEM) for -h2-tls-listen")
	keyFile := flag.String("key", "", "private key (PEM) for -h2-tls-listen")
	h2listen := flag.String("h2c-listen", "", "loopback address to serve HTTP/2 over cleartext (prior knowledge) on, -mode loop only (empty: none)")
	backends := flag.String("backends", "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003", "comma-separated backend addresses (round robin)")
	mode := flag.String("mode", "loop", "loop (event loops) or goroutine (one goroutine per connection, the control)")
	loops := flag.Int("loops", 0, "event loops (0: GOMAXPROCS)")
	timeout := flag.Duration("timeout", 60*time.Second, "the one timeout: idle keep-alive, request, response")
	bufSize := flag.Int("bufsize", 16<<10, "read buffer size per connection in use")
	maxIdle := flag.Int("max-idle", 256, "idle connections kept per backend and loop")
	coreMax := flag.Int("core-max", 0, "with -core: requests in flight per backend (the pool's max_connections; 0: no cap)")
	withCore := flag.Bool("core", false, "run each request through sluice's core (routing, pick and slot, passive health, counters: core.go), -mode loop")
	wait := flag.String("wait", "raw", "how a loop waits in epoll_wait: raw (keeping its P) or runtime (a blocking system call the scheduler knows of)")
	flag.Parse()

	cfg := &config{timeout: int64(*timeout), bufSize: *bufSize, outSize: 2**bufSize + 4096, maxIdle: *maxIdle,
		ids: proxy.NewRequestIDs()}
	var err error
	if cfg.listen, err = loopbackAddr(*listen); err != nil {
		fatal("-listen: %v", err)
	}
	if *h2listen != "" {
		if *mode != "loop" {
			fatal("-h2c-listen needs -mode loop")
		}
		if cfg.h2listen, err = loopbackAddr(*h2listen); err != nil {
			fatal("-h2c-listen: %v", err)
		}
	}
	if *tlsListen != "" {
		if *mode != "loop" {
			fatal("-h2-tls-listen needs -mode loop")
		}
		if cfg.tlsListen, err = loopbackAddr(*tlsListen); err != nil {
			fatal("-h2-tls-listen: %v", err)
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fatal("-cert, -key: %v", err)
		}
		// As sluice's TLS listeners are configured (internal/tlsterm) with
		// its defaults: TLS 1.2 and 1.3, X25519 then P-256, ALPN h2.
		cfg.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}, NextProtos: []string{"h2"}}
	}
	for _, a := range strings.Split(*backends, ",") {
		sa, err := loopbackAddr(strings.TrimSpace(a))
		if err != nil {
			fatal("-backends: %v", err)
		}
		cfg.backends = append(cfg.backends, sa)
		cfg.addrs = append(cfg.addrs, strings.TrimSpace(a))
	}
	switch *wait {
	case "raw":
		cfg.rawWait = true
	case "runtime":
	default:
		fatal("-wait must be raw or runtime")
	}
	if *withCore {
		if *mode != "loop" {
			fatal("-core needs -mode loop")
		}
		cfg.core = newCore(cfg.addrs, int64(*coreMax))
	}
	if cfg.bufSize < 4096 {
		fatal("-bufsize must be at least 4096")
	}

	var stats func() string
	stop := func() {}
	switch *mode {
	case "loop":
		n := *loops
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		g, err := loop.NewGroup(n, loop.Config{RawWait: cfg.rawWait})
		if err != nil {
			fatal("%v", err)
		}
		ls := make([]*worker, n)
		for i := range ls {
			if ls[i], err = newWorker(g.Loops[i], i, cfg); err != nil {
				fatal("loop %d: %v", i, err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		stop = func() {
			cancel()
			if err := <-done; err != nil {
				fmt.Fprintf(os.Stderr, "evproto: %v\n", err)
			}
			g.Close()
		}
		stats = func() string { // after stop: the loops have returned
			var b strings.Builder
			for _, l := range ls {
				fmt.Fprintf(&b, " loop%d: accepted=%d requests=%d dials=%d retries=%d", l.id, l.accepted, l.requests, l.dials, l.retries)
			}
			return b.String()
		}
		fmt.Fprintf(os.Stderr, "evproto: %d event loops on %s, backends %s\n", n, *listen, *backends)
	case "goroutine":
		g, err := serveGoroutines(cfg, *listen)
		if err != nil {
			fatal("%v", err)
		}
		stats = g.stats
		fmt.Fprintf(os.Stderr, "evproto: goroutine per connection on %s, backends %s\n", *listen, *backends)
	default:
		fatal("-mode must be loop or goroutine")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	stop()
	fmt.Fprintf(os.Stderr, "evproto: stopped;%s\n", stats())
}

func loopbackAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, err
	}
	if !ap.Addr().IsLoopback() {
		return ap, fmt.Errorf("%s: only loopback addresses", s)
	}
	return ap, nil
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "evproto: "+format+"\n", a...)
	os.Exit(2)
}
