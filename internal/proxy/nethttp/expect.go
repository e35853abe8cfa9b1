package nethttp

import (
	"context"
	"errors"
	"net/http/httptrace"
	"sync"
	"time"
)

// continueGate holds back the client's body of an "Expect: 100-continue"
// request during one attempt, until that attempt's backend asks for it:
// net/http's server tells the client "100 Continue" at the first read of
// the body, and its Transport would read (and send) the body even after a
// final answer that keeps the connection open. The gate opens when the
// backend's 100 Continue arrives, or after expectWait (the Transport's
// ExpectContinueTimeout: a backend may never send one); it shuts when a
// final answer arrives first, and the body is then not read, so the client
// is not invited to send it (DESIGN.md: the backend decides). A retry
// gets a gate of its own while the client has not been invited (see
// trackedBody.attempt).
type continueGate struct {
	once  sync.Once
	ready chan struct{} // closed once open is decided
	open  bool          // written before ready closes
	timer *time.Timer
}

var errContinueRefused = errors.New("the backend answered before asking for the body (Expect: 100-continue)")

// expectWait is how long the body waits for the backend's 100 Continue.
const expectWait = time.Second

func newContinueGate() *continueGate {
	g := &continueGate{ready: make(chan struct{})}
	g.timer = time.AfterFunc(expectWait, func() { g.decide(true) })
	return g
}

func (g *continueGate) decide(open bool) {
	g.once.Do(func() {
		g.open = open
		close(g.ready)
	})
}

// trace returns ctx with the hook that opens the gate on the backend's 100
// Continue.
func (g *continueGate) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got100Continue: func() { g.decide(true) },
	})
}

// shut closes the gate unless it is open already: the attempt's final
// answer came.
func (g *continueGate) shut() {
	g.timer.Stop()
	g.decide(false)
}

// wait blocks until the gate is decided and reports whether it opened.
func (g *continueGate) wait() bool {
	<-g.ready
	return g.open
}
