package nethttp

import (
	"context"
	"errors"
	"io"
	"net/http/httptrace"
	"sync"
	"time"
)

// continueGate holds back the client's body of an "Expect: 100-continue"
// request until the backend asks for it: net/http's server tells the
// client "100 Continue" at the first read of the body, and its Transport
// would read (and send) the body even after a final answer that keeps the
// connection open. The gate opens when the backend's 100 Continue arrives,
// or when the Transport stops waiting for it (ExpectContinueTimeout, 1 s);
// it shuts for good when a final answer arrives first, and the body is
// then never read, so the client is never invited to send it (DESIGN.md:
// the backend decides).
type continueGate struct {
	r     io.ReadCloser
	once  sync.Once
	ready chan struct{} // closed when open or shut is decided
	mu    sync.Mutex    // guards open
	open  bool
	timer *time.Timer
}

var errContinueRefused = errors.New("the backend answered before asking for the body (Expect: 100-continue)")

func newContinueGate(r io.ReadCloser) *continueGate {
	return &continueGate{r: r, ready: make(chan struct{})}
}

func (g *continueGate) decide(open bool) {
	g.once.Do(func() {
		g.mu.Lock()
		g.open = open
		g.mu.Unlock()
		close(g.ready)
	})
}

// trace returns ctx with the hook that opens the gate on the backend's 100
// Continue, and starts the 1 s after which it opens anyway (whether or not
// the Transport waited for a 100: the body must never wait forever).
func (g *continueGate) trace(ctx context.Context) context.Context {
	g.mu.Lock()
	if g.timer == nil {
		g.timer = time.AfterFunc(time.Second, func() { g.decide(true) })
	}
	g.mu.Unlock()
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got100Continue: func() { g.decide(true) },
	})
}

// shut closes the gate unless it is open already.
func (g *continueGate) shut() {
	g.decide(false)
	g.mu.Lock()
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
}

func (g *continueGate) Read(p []byte) (int, error) {
	<-g.ready
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	if !open {
		return 0, errContinueRefused
	}
	return g.r.Read(p)
}

// Close closes the body beneath.
func (g *continueGate) Close() error { return g.r.Close() }
