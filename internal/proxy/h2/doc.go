// Package h2 is sluice's own HTTP/2 server: it serves the HTTP/2
// connections of TLS (ALPN "h2") and h2c listeners with an http.Handler (the
// net/http codec's, package nethttp), in place of golang.org/x/net/http2's
// Server, which engine "std" keeps.
//
// # Why it is written by hand
//
// x/net's server was measured at three times HAProxy's CPU per HTTP/2
// request (docs/benchmarks.md, "HTTP/2: the performance pass"), and the
// cost is in its design, which takes no hook: every frame goes from a
// reader goroutine to a serve loop and back through a gate channel; a
// handler's HEADERS and DATA each go to the serve loop and wait for it;
// every flush starts a goroutine (writeFrameAsync). Here the connection's
// goroutine reads and acts on each frame itself, and a handler encodes and
// queues its own frames under the connection's lock, then writes them,
// together with whatever other streams queued meanwhile, in one write (the
// first writer writes for all). A response whose handler ends before it
// flushes goes out as one HEADERS and one DATA frame in one write. The
// frame parsing and HPACK are x/net's (http2.Framer and hpack), which
// check frame sizes, padding and CONTINUATION order; a header block is
// decoded by meta.go with the checks of the Framer's ReadMetaHeaders
// (field names and values, pseudo-header order, the header list size)
// without its allocations per block; the protocol's state machine,
// flow control and request checks follow x/net's server (server.go of
// v0.62.0), and h2spec runs against it in CI (docs/http2.md).
//
// # What it guarantees
//
//   - Requests are checked before a handler sees them, as RFC 9113 §8
//     asks and x/net does: connection-specific fields, a TE other than
//     "trailers", :protocol, missing or empty pseudo-header fields, an
//     invalid :authority or one that disagrees with Host, and a DATA total
//     that disagrees with content-length are stream errors
//     (PROTOCOL_ERROR); nothing reaches the handler, or its body reader
//     fails before the last byte.
//   - Flow control both ways: a client may send at most StreamWindow per
//     stream and ConnWindow per connection before the handler reads, and
//     a handler's DATA waits for the client's windows.
//   - At most MaxConcurrentStreams handlers run per connection; a stream
//     past the limit is refused (REFUSED_STREAM) and may be retried.
//   - Every goroutine it starts has ended when ServeConn returns. A
//     stream's handler runs on one of the connection's goroutines, which
//     serve its next streams and are kept for a second after its last
//     stream ends (handlers.go).
//
// Where it differs from x/net's server: a malformed request is a stream
// error (x/net answers 400 to some), a SETTINGS frame that repeats a
// setting is applied in order (x/net closes the connection), frames that
// were in flight for a stream sluice reset are ignored (RFC 9113 §5.1),
// and response headers are encoded without HPACK's dynamic table (each
// block stands alone, so handlers encode as they finish and the blocks may
// go out in any order).
//
// The flood defences (rapid reset, CONTINUATION, PING, SETTINGS and empty
// frames) are package h2guard's, beneath this server on the connection.
//
// On Linux a connection may instead be served on an event loop
// (ServeLoop, NewLoopConn: loop_linux.go), over a socket package h1's
// loops took (h1.Loops.TakeSocket): the loop reads and acts on the frames,
// with h2guard given the bytes as they are read, and nothing waits for
// the socket to write. A stream whose request the loop can forward itself
// (Server.Forward: package h1's Engine.ForwardStream) runs on the loop
// too, with no goroutine (loopstream_linux.go); the others run on the
// connection's workers.
package h2
