// Package loop runs event loops: the I/O model of the codecs that serve
// connections without a goroutine per connection (issue 15's design,
// measured in bench/evproto before it was built here).
//
// A Loop owns an edge-triggered epoll instance and the descriptors
// registered on it. It runs on one goroutine; every Handler registered on
// it, every Timer armed on it and every function posted to it runs on that
// goroutine, so the state they touch needs no lock. The loop reads the
// clock once per wake-up (Now), keeps one timer per connection on a
// wheel that costs nothing per request (Timer: the loop's own, Arm,
// so that the wheel keeps nothing of a connection after its close), hands
// out buffers and request states from free lists of its own (Bufs,
// Spares), lets other goroutines give it work through an eventfd (Post)
// and lets handlers batch their writes until the end of a wake-up
// (Defer). A panic in a handler is
// recovered, logged and ends that handler's connection, not the process.
//
// Why by hand: Go's own netpoller parks a goroutine per connection, which
// is the cost this package exists to avoid (docs/benchmarks.md, "Where
// the engine's CPU goes"); the event-loop libraries for Go (gnet and the
// like) own the parsing and buffering model and the listening sockets,
// which sluice's strict parser, its upgrades and its zero-downtime
// restarts need to own.
//
// Linux only (epoll): elsewhere the package is empty, and the codecs
// built on it are Linux-only too.
package loop
