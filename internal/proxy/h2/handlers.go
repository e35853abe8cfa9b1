package h2

import (
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// The goroutines that run the handlers of a connection's streams, and the
// end of a stream.

// startLocked registers st and runs its handler: on a goroutine of the
// connection's that waits for a stream, or a new one.
func (c *conn) startLocked(st *stream, req *http.Request) {
	c.registerLocked(st)
	if c.idleWorkers > 0 {
		c.idleWorkers--
		c.jobs <- job{st, req}
		return
	}
	c.wg.Add(1)
	go c.work(job{st, req})
}

// registerLocked counts st as a stream of the connection's.
func (c *conn) registerLocked(st *stream) {
	c.streams[st.id] = st
	c.active++
	st.counted = true
	c.settleLocked(st)
	c.idleSince = time.Time{}
}

// settleLocked stops counting st against MAX_CONCURRENT_STREAMS once it
// is closed (reset, or ended both ways), which may be before its handler
// has returned.
func (c *conn) settleLocked(st *stream) {
	if st.counted && (st.reset || st.localDone && st.remoteDone) {
		st.counted = false
		c.active--
	}
}

// job is a stream for a worker; the zero job tells an idle one to end.
type job struct {
	st  *stream
	req *http.Request
}

// maxIdleWorkers bounds the goroutines a connection keeps waiting for its
// next stream. A handler's goroutine grows its stack to about 16 KiB on
// the way to a backend and back; one that serves the next stream as well
// does not grow it again (a new goroutine per stream spent a tenth of the
// server's CPU copying stacks).
const maxIdleWorkers = 16

// workerLinger is how long a connection without streams keeps its idle
// workers: a client that waits for its answers before it asks again (all
// streams end between its batches) finds them there, and an idle
// connection holds none for longer.
const workerLinger = time.Second

// work runs handlers: j's, then those it is given until it is dismissed.
func (c *conn) work(j job) {
	defer c.wg.Done()
	for {
		c.runHandler(j.st, j.req)
		c.mu.Lock()
		if c.dead || c.idleWorkers >= maxIdleWorkers {
			c.mu.Unlock()
			return
		}
		c.idleWorkers++
		c.mu.Unlock()
		if j = c.awaitJob(); j.st == nil {
			return
		}
	}
}

// stackKeep is how much of its stack an idle worker keeps in use. The
// garbage collector halves the stack of a goroutine that uses less than a
// quarter of it; a worker waiting at the bottom of the 16 KiB its streams
// grow was halved at every collection and grew again, copying its stack,
// on its next stream (measured: 5 % of the CPU of an HTTP/2 load of 500
// concurrent streams). Waiting 4 KiB deep keeps a 16 KiB stack whole.
const stackKeep = 4 << 10

// awaitJob receives the worker's next job, waiting stackKeep deep.
//
//go:noinline
func (c *conn) awaitJob() job {
	var keep [stackKeep]byte
	holdStack(&keep)
	return <-c.jobs
}

// holdStack keeps its argument on the caller's stack (its address is
// taken, and it does not escape).
//
//go:noinline
func holdStack(*[stackKeep]byte) {}

// dismissLocked ends the idle workers.
func (c *conn) dismissLocked() {
	for ; c.idleWorkers > 0; c.idleWorkers-- {
		c.jobs <- job{}
	}
}

// lingerWorkersLocked arms the timer that dismisses the idle workers once
// the connection has had no stream for workerLinger (from idleSince). A
// timer already armed checks again when it runs.
func (c *conn) lingerWorkersLocked() {
	if c.armed || c.dead {
		return
	}
	c.armed = true
	if c.workerTimer == nil {
		c.workerTimer = time.AfterFunc(workerLinger, c.onWorkersIdle)
	} else {
		c.workerTimer.Reset(workerLinger)
	}
}

// onWorkersIdle runs from workerTimer.
func (c *conn) onWorkersIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	if c.dead || len(c.streams) > 0 {
		return // the stream count's next fall to zero arms it again
	}
	if left := workerLinger - time.Since(c.idleSince); left > 0 {
		c.armed = true
		c.workerTimer.Reset(left)
		return
	}
	c.dismissLocked()
}

// runHandler serves one stream's request, then ends the stream.
func (c *conn) runHandler(st *stream, req *http.Request) {
	w := st.rw
	ok := false
	defer func() {
		if !ok {
			e := recover()
			if e != nil && e != http.ErrAbortHandler && c.srv.Logger != nil {
				c.srv.Logger.Error("http2 handler panicked", "stream", st.id, "panic", e)
			}
			c.mu.Lock()
			if !st.reset {
				st.reset = true
				c.writeRSTLocked(st.id, http2.ErrCodeInternal)
			}
			c.closeStreamLocked(st)
			c.flushLocked()
			c.mu.Unlock()
		}
	}()
	c.handler.ServeHTTP(w, req)
	w.finish()
	ok = true
	c.mu.Lock()
	c.closeStreamLocked(st)
	c.flushLocked()
	c.mu.Unlock()
}

// closeStreamLocked ends st after its handler returned: a client still
// sending is told to stop (RST_STREAM NO_ERROR, §8.1), and the credit of
// what it sent and nobody read goes back.
func (c *conn) closeStreamLocked(st *stream) {
	if !st.remoteDone && !st.reset {
		st.reset = true
		c.writeRSTLocked(st.id, http2.ErrCodeNo)
	}
	c.giveBackLocked(int32(len(st.body) - st.off))
	st.body, st.off = nil, 0
	st.abortLocked(errStreamClosed)
	st.stopTimerLocked()
	st.reset = true
	c.settleLocked(st)
	delete(c.streams, st.id)
	if len(c.streams) == 0 {
		c.idleSince = time.Now()
		c.lingerWorkersLocked()
		if c.goAway {
			c.lingerLocked()
		}
	}
}
