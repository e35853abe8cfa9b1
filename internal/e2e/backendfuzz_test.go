package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// FuzzBackend mutates the backend's side of the proxy: a scripted backend
// on 127.0.0.1 decides, from the fuzz input, how it answers each request
// it receives (the framing of the answer and one mutation of it: bytes
// after the body, a second response, duplicate Content-Length fields, an
// odd status line, an unsolicited response after a delay, a request body it
// ignores (CL.0), an early close, interim responses), while a few clients,
// each on its own connection to sluice, send their requests. Each request
// names its client and rank in its path (/c1/r2); the backend puts that
// token (tok-c1-r2) in the X-Token field and the body of its answer, and
// the token tok-STRAY in everything no request asked for.
//
// The property, on every engine: every response a client receives is
// either sluice's own error (502, 503 or 504 with a plain body and no
// token) or carries exactly that client's own request token, in its
// fields, interim responses, body and trailers. Never tok-STRAY, never
// another request's token, never bytes that are not an HTTP/1.1 response,
// and never a byte on a client connection with no request outstanding.
// Answers that do not arrive (a connection closed or cut short) are allowed
// here, and so is a body of its own bytes framed otherwise: this test is
// about who receives what, not about every defect of a bad backend (the
// report notes them).
//
// Timing is made deterministic: a request whose answer makes the backend
// write bytes besides its response (before, with or after it) runs alone
// (bfRun.gate), and its client, once it has its answer, waits until the
// backend signals it has written everything (bfBackend.quiet), plus
// bfMargin, before any client sends another request. An unsolicited
// response that arrives while a new request is already on its way cannot
// be told from that request's answer, by sluice or by net/http; the
// harness never produces that race.
//
// Input layout (missing bytes read as zero, extra bytes are ignored):
//
//	byte 0: bits 0-1 clients-1, bits 2-3 requests per client-1, bits 4-5
//	        order (0 rounds: r0 of each client, then r1...; 1 and 3 all
//	        clients at once; 2 one client after the other)
//	byte 1: bits 0-3 clients that send Connection: close (one bit each),
//	        bits 4-5 max_connections_per_backend (0, 1, 2, 0), bit 6 no
//	        retries, bit 7 the clients speak HTTP/2 (h2c by prior
//	        knowledge, their streams on one connection with a 16 KiB stream
//	        window; Connection: close does not apply; on the event loops,
//	        bodiless streams are forwarded by the loop)
//	then 4 bytes per request, client by client (see bfStep and bfEncode).
//
// The engine is the suite's (SLUICE_E2E_ENGINE, see withEngine); each input
// gets a new backend and a new sluice, so that no state carries from one
// input to the next.
func FuzzBackend(f *testing.F) {
	for _, s := range bfSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > bfMaxInput {
			t.Skip("oversized input")
		}
		// net/http's Transport (engine: std) logs each unsolicited
		// response it drops with the standard logger: keep that for the
		// report. Restored after every other cleanup.
		stdlog := &logBuffer{}
		prev := log.Writer()
		log.SetOutput(stdlog)
		t.Cleanup(func() { log.SetOutput(prev) })
		plan := bfDecode(data)
		b := startBfBackend(t, plan)
		s := startSluice(t, bfConfig(plan, b.addr))
		run := &bfRun{plan: plan, backend: b, addr: s.Addr("public")}
		run.play()
		if failed := run.problems(); len(failed) > 0 {
			t.Fatalf("input %s on engine %q: a client received what was not the answer to its request:\n%s\n"+
				"plan and outcomes:\n%s\nbackend connections:%s\nstandard log:\n%.4000s",
				quoteInput(data), bfEngineName(), strings.Join(failed, "\n"), run.report(), b.layout(), stdlog.String())
		}
		if testing.Verbose() {
			t.Logf("plan and outcomes:\n%sbackend connections:%s", run.report(), b.layout())
		}
	})
}

// Bounds.
const (
	bfMaxClients  = 4
	bfMaxRequests = 4
	bfMaxInput    = 1024
	// bfMargin is how long the clients wait after the backend signalled
	// that it has written everything, so that those bytes have reached
	// sluice before the next request.
	bfMargin = 30 * time.Millisecond
	// bfQuietWait bounds the wait for that signal (it comes at once unless
	// sluice stops reading a connection the backend writes to).
	bfQuietWait = 2 * time.Second
	// bfRequestWait bounds one exchange on a client connection (sluice
	// gives up on the backend after timeouts.request, bfConfig).
	bfRequestWait = 3 * time.Second
	// bfMaxBody bounds what a client reads of one body.
	bfMaxBody = 2 << 20
)

// bfSizes are the body sizes a request's answer may have: small ones, the
// 32 KiB boundary the issue names, and 1 MiB.
var bfSizes = []int{0, 1, 17, 1000, 4096, 32 << 10, 32<<10 + 1, 70000, 256 << 10, 1 << 20}

// Methods (bits 0-1 of a step's first byte).
const (
	bfGET  = 0 // and 1
	bfHEAD = 2
	bfPOST = 3 // with a body that is itself a request (GET /smuggled)
)

// Framings of an answer.
const (
	bfLength          = iota // Content-Length
	bfChunked                // chunked, no trailer
	bfChunkedTrailers        // chunked with a trailer field X-Trailer-Token
	bfUntilClose             // no framing: the body ends when the backend closes
	bfNoBody                 // 204, or 304 (param bit 7), no body
	bfFramings
)

var bfFramingNames = [bfFramings]string{"length", "chunked", "chunked+trailer", "until-close", "no-body"}

// Mutations of an answer; the step's param selects the variant.
const (
	bfNone            = iota
	bfGarbageAfter    // bytes after the body: bfGarbage[param>>2&3], after bfGaps[param&3]
	bfResponseAfter   // a stray response after the body: bfStray[param>>2%5], after bfGaps[param&3]
	bfDupLengthSame   // Content-Length twice, same value (param&1: as a list "n, n")
	bfDupLengthDiffer // two Content-Length values (for a length body: the larger one takes in a stray response)
	bfOddStatus       // status line bfOddStatusLines[param%len]
	bfUnsolicited     // a stray response bfStray[param>>4%5], (param&15)×10 ms after the answer
	bfIgnoreBody      // CL.0: the backend does not read a POST's body, and answers it as the next request, bfGaps[param&3] later
	bfCloseEarly      // close before anything, after the head, mid-body, or after the whole answer (param&3)
	bfMutations
)

var bfMutationNames = [bfMutations]string{"none", "garbage-after", "response-after", "dup-length-same",
	"dup-length-differ", "odd-status", "unsolicited", "ignore-body", "close-early"}

// bfGaps separate an answer from the bytes after it.
var bfGaps = []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}

const bfStrayToken = "tok-STRAY"

// bfStray are responses no request asked for.
var bfStray = []string{
	"HTTP/1.1 200 OK\r\nX-Token: tok-STRAY\r\nContent-Length: 10\r\n\r\ntok-STRAY;",
	"HTTP/1.1 204 No Content\r\nX-Token: tok-STRAY\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Token: tok-STRAY\r\nTransfer-Encoding: chunked\r\n\r\na\r\ntok-STRAY;\r\n0\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nX-Token: tok-STRAY\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Token: tok-STRAY\r\nContent-Length: 70000\r\n\r\n" + string(bfBody(bfStrayToken, 70000)),
}

// bfGarbage are bytes after a body that are not a whole response.
var bfGarbage = []string{
	"tok-STRAY garbage\r\n\r\n",
	"\r\n",
	"HTTP/1.1 200 OK\r\nX-Token: tok-STRAY\r\nContent-Length: 100\r\n\r\ntok-STRAY;",
	"0\r\n\r\n",
}

// bfOddStatusLines are status lines a backend may write instead of its own.
var bfOddStatusLines = []string{
	"HTTP/1.1 000 Zero", "HTTP/1.1 099 Low", "HTTP/1.1 600 High", "HTTP/1.1 999 High",
	"HTTP/1.1 200", "HTTP/1.0 200 OK", "HTTP/1.1 101 Switching Protocols", "HTTP/1.1 199 Interim",
	"HTTP/1.1 2000 Long", "HTTP/1.1 20 Short", "HTTP/1.1 -20 Minus", "HTTP/1.1 502 Bad Gateway",
	"HTTP/2.0 200 OK", "http/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK with more words",
}

// bfStep is how the backend answers one request, and the request's method.
type bfStep struct {
	method  int // bfGET, bfHEAD, bfPOST
	framing int
	interim int // bit 0: 100 Continue, bit 1: 103 Early Hints (with the token) before the answer
	mut     int
	size    int
	param   byte
}

func (st bfStep) methodName() string {
	switch st.method {
	case bfHEAD:
		return http.MethodHead
	case bfPOST:
		return http.MethodPost
	}
	return http.MethodGet
}

// alone reports whether the answer may make the backend write bytes
// besides it (now or later), or leave bytes unread: such a request runs
// alone, and the next one waits until the backend is quiet.
func (st bfStep) alone() bool {
	switch st.mut {
	case bfGarbageAfter, bfResponseAfter, bfDupLengthDiffer, bfOddStatus, bfUnsolicited, bfIgnoreBody:
		return true
	}
	return false
}

func (st bfStep) String() string {
	s := fmt.Sprintf("%s %s size %d", st.methodName(), bfFramingNames[st.framing], st.size)
	if st.interim != 0 {
		s += fmt.Sprintf(" interim %d", st.interim)
	}
	if st.mut != bfNone {
		s += fmt.Sprintf(" %s(param %d)", bfMutationNames[st.mut], st.param)
	}
	return s
}

// bfPlan is a decoded input.
type bfPlan struct {
	clients, requests int
	order             int // 0 rounds, 1 concurrent, 2 one client after the other
	closeMask         byte
	maxConns          int
	noRetries         bool
	h2                bool // the clients speak HTTP/2
	steps             [bfMaxClients][bfMaxRequests]bfStep
}

func bfDecode(data []byte) bfPlan {
	i := 0
	next := func() byte {
		if i < len(data) {
			i++
			return data[i-1]
		}
		return 0
	}
	h0, h1 := next(), next()
	p := bfPlan{clients: int(h0&3) + 1, requests: int(h0>>2&3) + 1, closeMask: h1 & 15,
		maxConns: []int{0, 1, 2, 0}[h1>>4&3], noRetries: h1&64 != 0, h2: h1&128 != 0}
	switch h0 >> 4 & 3 {
	case 1, 3:
		p.order = 1
	case 2:
		p.order = 2
	}
	for c := range p.clients {
		for r := range p.requests {
			b0, b1, b2, b3 := next(), next(), next(), next()
			p.steps[c][r] = bfStep{method: int(b0 & 3), framing: int(b0>>2&7) % bfFramings, interim: int(b0 >> 5 & 3),
				mut: int(b1) % bfMutations, size: bfSizes[int(b2)%len(bfSizes)], param: b3}
			if p.steps[c][r].method == 1 {
				p.steps[c][r].method = bfGET
			}
		}
	}
	return p
}

// bfEncode is bfDecode's inverse for the seeds: order 0 rounds, 1
// concurrent, 2 one client after the other; steps client by client.
func bfEncode(clients, requests, order int, h1 byte, steps ...[4]byte) []byte {
	out := []byte{byte(clients-1) | byte(requests-1)<<2 | byte(order)<<4, h1}
	for _, s := range steps {
		out = append(out, s[:]...)
	}
	return out
}

// bfS encodes one step; size is an index in bfSizes.
func bfS(method, framing, interim, mut, size int, param byte) [4]byte {
	return [4]byte{byte(method) | byte(framing)<<2 | byte(interim)<<5, byte(mut), byte(size), param}
}

// bfSeeds cover each framing and each mutation, at small and large sizes.
func bfSeeds() [][]byte {
	seeds := bfSeedsH1()
	// And each with HTTP/2 clients.
	for _, sd := range slices.Clone(seeds) {
		sd = slices.Clone(sd)
		sd[1] |= 0x80
		seeds = append(seeds, sd)
	}
	return seeds
}

// bfSeedsH1 are the seeds with HTTP/1.1 clients.
func bfSeedsH1() [][]byte {
	plain := bfS(bfGET, bfLength, 0, bfNone, 2, 0)
	big := 9 // 1 MiB
	return [][]byte{
		// Every framing, with and without interim responses, keep-alive.
		bfEncode(2, 4, 0, 0,
			bfS(bfGET, bfLength, 0, bfNone, 3, 0), bfS(bfGET, bfChunked, 1, bfNone, 5, 0x40),
			bfS(bfGET, bfChunkedTrailers, 2, bfNone, 6, 0x80), bfS(bfGET, bfUntilClose, 0, bfNone, 4, 0),
			bfS(bfHEAD, bfLength, 0, bfNone, 3, 0), bfS(bfGET, bfNoBody, 3, bfNone, 0, 0),
			bfS(bfGET, bfNoBody, 0, bfNone, 0, 0xc0), bfS(bfPOST, bfChunked, 0, bfNone, 7, 0)),
		// A 1 MiB body with a complete second response in the same write,
		// then a request of another client (issue 9).
		bfEncode(2, 2, 0, 0, bfS(bfGET, bfLength, 0, bfResponseAfter, big, 0), plain, plain, plain),
		// Bytes after a 32 KiB+1 body, a few ms later; garbage after a chunked body.
		bfEncode(2, 2, 0, 0, bfS(bfGET, bfLength, 0, bfResponseAfter, 6, 2), plain,
			bfS(bfGET, bfChunked, 0, bfGarbageAfter, 3, 3), plain),
		// Garbage after small bodies: a lone CRLF, a truncated response.
		bfEncode(3, 2, 0, 0, bfS(bfGET, bfLength, 0, bfGarbageAfter, 2, 1<<2), plain,
			bfS(bfGET, bfLength, 0, bfGarbageAfter, 2, 2<<2|1), plain, plain, plain),
		// An unsolicited response 100 ms after the answer, on the idle
		// keep-alive connection (issue 9), small and large.
		bfEncode(2, 3, 0, 0, bfS(bfGET, bfLength, 0, bfUnsolicited, 2, 10), plain,
			bfS(bfGET, bfChunked, 0, bfUnsolicited, 3, 4<<4|3), plain, plain, plain),
		// CL.0: the backend ignores a POST body that is a request, and answers
		// it 5 ms after the POST.
		bfEncode(3, 2, 0, 0, bfS(bfPOST, bfLength, 0, bfIgnoreBody, 2, 2), plain, plain, plain, plain, plain),
		// Duplicate Content-Length: same value, as two fields and as a list.
		bfEncode(2, 2, 0, 0, bfS(bfGET, bfLength, 0, bfDupLengthSame, 3, 0), plain,
			bfS(bfGET, bfLength, 0, bfDupLengthSame, 3, 1), plain),
		// Duplicate Content-Length, different values, either order; and
		// beside chunked.
		bfEncode(2, 3, 0, 0, bfS(bfGET, bfLength, 0, bfDupLengthDiffer, 3, 0), plain,
			bfS(bfGET, bfLength, 0, bfDupLengthDiffer, 3, 1), plain,
			bfS(bfGET, bfChunked, 0, bfDupLengthDiffer, 3, 0), plain),
		// Odd status lines: 099, 000, 600, 101 unasked, 199 as final.
		bfEncode(2, 4, 0, 0, bfS(bfGET, bfLength, 0, bfOddStatus, 2, 1), plain,
			bfS(bfGET, bfLength, 0, bfOddStatus, 2, 0), plain,
			bfS(bfGET, bfLength, 0, bfOddStatus, 2, 2), plain,
			bfS(bfGET, bfLength, 0, bfOddStatus, 2, 6), bfS(bfGET, bfLength, 0, bfOddStatus, 2, 7)),
		// Early closes: before anything, after the head, mid-body, after
		// the whole answer.
		bfEncode(2, 4, 0, 0, bfS(bfGET, bfLength, 0, bfCloseEarly, 3, 0), plain,
			bfS(bfGET, bfLength, 0, bfCloseEarly, 7, 1), plain,
			bfS(bfGET, bfChunked, 0, bfCloseEarly, 7, 2), plain,
			bfS(bfPOST, bfLength, 0, bfCloseEarly, 3, 3), plain),
		// A HEAD answered with a body, a 204 and a 304 with one.
		bfEncode(2, 3, 0, 0, bfS(bfHEAD, bfLength, 0, bfResponseAfter, 3, 0), plain,
			bfS(bfGET, bfNoBody, 0, bfGarbageAfter, 0, 0), plain,
			bfS(bfGET, bfNoBody, 0, bfResponseAfter, 0, 0x80|4), plain),
		// Four clients at once, four requests each, one connection per
		// backend (the queue), some closing, mixed mutations.
		bfEncode(4, 4, 1, 0x15,
			plain, bfS(bfGET, bfLength, 0, bfUnsolicited, 3, 5), plain, bfS(bfHEAD, bfChunked, 0, bfNone, 3, 0),
			bfS(bfGET, bfChunked, 0, bfResponseAfter, 5, 1), plain, bfS(bfPOST, bfLength, 0, bfIgnoreBody, 2, 0), plain,
			bfS(bfGET, bfLength, 2, bfNone, 7, 0), bfS(bfGET, bfLength, 0, bfDupLengthDiffer, 2, 0), plain, plain,
			plain, bfS(bfGET, bfLength, 0, bfGarbageAfter, 6, 0), plain, bfS(bfGET, bfUntilClose, 0, bfNone, 2, 0)),
		// One client after the other, no retries.
		bfEncode(2, 2, 2, 0x40, bfS(bfGET, bfLength, 0, bfResponseAfter, big, 3), plain,
			bfS(bfGET, bfLength, 1, bfUnsolicited, 4, 15), plain),
	}
}

// bfToken is the token of request r of client c; bfPath its path.
func bfToken(c, r int) string { return fmt.Sprintf("tok-c%d-r%d", c, r) }
func bfPath(c, r int) string  { return fmt.Sprintf("/c%d/r%d", c, r) }

// bfBody is the body of the answer that carries tok: "tok;" repeated, cut
// at size bytes.
func bfBody(tok string, size int) []byte {
	unit := tok + ";"
	return []byte(strings.Repeat(unit, size/len(unit)+1)[:size])
}

// bfConfig is one listener and one pool of the scripted backend; passive
// health never ejects it (it is the only one, and misbehaves on purpose).
func bfConfig(plan bfPlan, addr string) *config.Config {
	pool := config.Pool{Name: "web", Balance: "round_robin",
		Backends:                 []config.Backend{{Address: "http://" + addr}},
		PassiveHealth:            config.PassiveHealth{ConsecutiveFailures: 1 << 20},
		Timeouts:                 config.PoolTimeouts{ResponseHeader: time.Second, Request: 2 * time.Second},
		MaxConnectionsPerBackend: plan.maxConns,
	}
	if plan.noRetries {
		pool.Retries.RetryOn = []string{}
	}
	cfg := oneListener(pool)
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Listeners[0].H2C = plan.h2
	return cfg
}

func bfEngineName() string {
	if testEngine == "" {
		return "the default (loop on Linux)"
	}
	return testEngine
}

// bfBackend is the scripted backend of one input.
type bfBackend struct {
	t    *testing.T
	plan bfPlan
	ln   net.Listener
	addr string
	quit chan struct{} // closed when the test ends: delayed writes give up
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns []*bfConn
	busy  int           // answers being written, delayed writes pending, CL.0 bodies not yet answered
	idle  chan struct{} // closed while busy is 0
}

// bfConn is one connection from sluice to the backend.
type bfConn struct {
	index int
	c     net.Conn
	br    *bufio.Reader
	wmu   sync.Mutex // one write at a time (delayed writes run apart)

	mu    sync.Mutex
	paths []string
}

func startBfBackend(t *testing.T, plan bfPlan) *bfBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bfBackend{t: t, plan: plan, ln: ln, addr: ln.Addr().String(), quit: make(chan struct{}),
		idle: make(chan struct{})}
	close(b.idle)
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.stop)
	return b
}

func (b *bfBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		bc := &bfConn{index: len(b.conns), c: c, br: bufio.NewReader(c)}
		b.conns = append(b.conns, bc)
		b.wg.Add(1)
		b.mu.Unlock()
		go b.serve(bc)
	}
}

func (b *bfBackend) stop() {
	close(b.quit)
	b.ln.Close()
	b.mu.Lock()
	for _, bc := range b.conns {
		bc.c.Close()
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.t.Errorf("scripted backend: still serving 10s after it was stopped")
	}
}

// begin and end count what the backend is writing or owes; quiet is closed
// when it owes nothing.
func (b *bfBackend) begin() {
	b.mu.Lock()
	if b.busy == 0 {
		b.idle = make(chan struct{})
	}
	b.busy++
	b.mu.Unlock()
}

func (b *bfBackend) end() {
	b.mu.Lock()
	b.busy--
	if b.busy == 0 {
		close(b.idle)
	}
	b.mu.Unlock()
}

func (b *bfBackend) quiet() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.idle
}

// layout lists the backend's connections and the paths each carried.
func (b *bfBackend) layout() string {
	b.mu.Lock()
	conns := append([]*bfConn(nil), b.conns...)
	b.mu.Unlock()
	var s strings.Builder
	for _, bc := range conns {
		bc.mu.Lock()
		fmt.Fprintf(&s, "\n  connection %d: %q", bc.index, bc.paths)
		bc.mu.Unlock()
	}
	return s.String()
}

// serve reads requests off one connection and answers each. The busy count
// is taken as soon as a request's head is read, before its answer is
// written, and, when the backend ignores a body (CL.0), held until the
// next request read on the connection (that body) has been answered.
func (b *bfBackend) serve(bc *bfConn) {
	defer b.wg.Done()
	defer bc.c.Close()
	carry := false
	defer func() {
		if carry {
			b.end()
		}
	}()
	for {
		bc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		req, err := http.ReadRequest(bc.br)
		if err != nil {
			return
		}
		if !carry {
			b.begin()
		}
		carry = false
		bc.mu.Lock()
		bc.paths = append(bc.paths, req.URL.Path)
		bc.mu.Unlock()
		open, owe := b.answer(bc, req)
		if owe {
			carry = true
		} else {
			b.end()
		}
		if !open {
			return
		}
	}
}

// lookup returns the step and token of a request path; a path no request
// of the plan has (the request smuggled in a POST body) gets a plain
// answer carrying the stray token.
func (b *bfBackend) lookup(path string) (bfStep, string, bool) {
	var c, r int
	if n, err := fmt.Sscanf(path, "/c%d/r%d", &c, &r); err == nil && n == 2 && bfPath(c, r) == path &&
		c >= 0 && c < b.plan.clients && r >= 0 && r < b.plan.requests {
		return b.plan.steps[c][r], bfToken(c, r), true
	}
	return bfStep{size: 10}, bfStrayToken, false
}

func (bc *bfConn) write(p []byte) error {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	bc.c.SetWriteDeadline(time.Now().Add(bfRequestWait))
	_, err := bc.c.Write(p)
	return err
}

// answer writes the answer to req as its step says. open: the connection
// stays open; owe: the body was left unread (CL.0) and the backend owes
// the answer to what it holds.
func (b *bfBackend) answer(bc *bfConn, req *http.Request) (open, owe bool) {
	st, tok, _ := b.lookup(req.URL.Path)
	if st.mut == bfIgnoreBody && req.Method == http.MethodPost && req.ContentLength > 0 {
		owe = true
	} else {
		io.Copy(io.Discard, io.LimitReader(req.Body, 16<<20))
	}
	resp, closeAfter := bfAnswer(st, req.Method, tok)
	switch {
	case st.mut == bfCloseEarly:
		var cut int
		switch st.param & 3 {
		case 0:
			cut = 0
		case 1:
			cut = resp.head
		case 2:
			cut = resp.head + (len(resp.all)-resp.head)/2
		case 3:
			cut = len(resp.all)
		}
		if cut > 0 {
			bc.write(resp.all[:cut])
		}
		return false, false
	case (st.mut == bfGarbageAfter || st.mut == bfResponseAfter) && !closeAfter:
		extra := bfGarbage[st.param>>2&3]
		if st.mut == bfResponseAfter {
			extra = bfStray[int(st.param>>2)%len(bfStray)]
		}
		if gap := bfGaps[st.param&3]; gap == 0 {
			bc.write(append(resp.all, extra...))
		} else {
			if bc.write(resp.all) != nil {
				return false, false
			}
			time.Sleep(gap)
			bc.write([]byte(extra))
		}
		return true, owe
	}
	if err := bc.write(resp.all); err != nil || closeAfter {
		return false, false
	}
	if owe {
		// Let the answer reach sluice, and maybe its pool, before the
		// answer to the body.
		select {
		case <-time.After(bfGaps[st.param&3]):
		case <-b.quit:
		}
	}
	if st.mut == bfUnsolicited {
		delay := time.Duration(st.param&15) * 10 * time.Millisecond
		stray := []byte(bfStray[int(st.param>>4)%len(bfStray)])
		b.begin()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer b.end()
			select {
			case <-time.After(delay):
				bc.write(stray)
			case <-b.quit:
			}
		}()
	}
	return true, owe
}

// bfResponse is an answer's bytes: interim responses, head and body; head
// is where the body starts.
type bfResponse struct {
	all  []byte
	head int
}

// bfAnswer builds the answer of a step to a request of method; closeAfter:
// its body ends with the connection.
func bfAnswer(st bfStep, method, tok string) (resp bfResponse, closeAfter bool) {
	var w bytes.Buffer
	if st.interim&1 != 0 {
		w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	}
	if st.interim&2 != 0 {
		fmt.Fprintf(&w, "HTTP/1.1 103 Early Hints\r\nX-Token: %s\r\nLink: </s.css>; rel=preload\r\n\r\n", tok)
	}
	body := bfBody(tok, st.size)
	status := "HTTP/1.1 200 OK"
	var fields []string
	var wire []byte
	switch st.framing {
	case bfLength:
		fields = append(fields, "Content-Length: "+strconv.Itoa(len(body)))
		wire = body
	case bfChunked, bfChunkedTrailers:
		fields = append(fields, "Transfer-Encoding: chunked")
		if st.framing == bfChunkedTrailers {
			fields = append(fields, "Trailer: X-Trailer-Token")
		}
		chunk := []int{len(body), 4096, 1000, 100}[st.param>>6&3]
		var cb bytes.Buffer
		for rest := body; len(rest) > 0; {
			n := min(max(chunk, 1), len(rest))
			fmt.Fprintf(&cb, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		cb.WriteString("0\r\n")
		if st.framing == bfChunkedTrailers {
			fmt.Fprintf(&cb, "X-Trailer-Token: %s\r\n", tok)
		}
		cb.WriteString("\r\n")
		wire = cb.Bytes()
	case bfUntilClose:
		wire, closeAfter = body, true
	case bfNoBody:
		status = "HTTP/1.1 204 No Content"
		if st.param&0x80 != 0 {
			status = "HTTP/1.1 304 Not Modified"
			fields = append(fields, "Content-Length: "+strconv.Itoa(len(body)))
		}
	}
	if method == http.MethodHead {
		wire = nil
	}
	hasLength := st.framing == bfLength || len(fields) > 0 && strings.HasPrefix(fields[0], "Content-Length")
	switch st.mut {
	case bfDupLengthSame:
		if st.framing == bfLength {
			if st.param&1 != 0 {
				fields[0] = fmt.Sprintf("Content-Length: %d, %d", len(body), len(body))
			} else {
				fields = append(fields, fields[0])
			}
		} else {
			l := "Content-Length: " + strconv.Itoa(len(wire))
			fields = append(fields, l, l)
			hasLength = true
		}
	case bfDupLengthDiffer:
		small, large := len(wire), len(wire)+len(bfStray[0])
		if st.framing == bfLength {
			if wire != nil {
				wire = append(wire, bfStray[0]...)
			}
			small = len(body)
			large = small + len(bfStray[0])
		} else {
			small = 0
		}
		a, b := small, large
		if st.param&1 != 0 {
			a, b = b, a
		}
		if st.framing == bfLength {
			fields[0] = "Content-Length: " + strconv.Itoa(a)
		} else {
			fields = append(fields, "Content-Length: "+strconv.Itoa(a))
		}
		fields = append(fields, "Content-Length: "+strconv.Itoa(b))
		hasLength = true
	case bfOddStatus:
		status = bfOddStatusLines[int(st.param)%len(bfOddStatusLines)]
		if st.framing == bfNoBody && !hasLength {
			// Without a length an odd status line's body would end at the
			// close, which this backend does not do.
			fields = append(fields, "Content-Length: 0")
		}
	}
	fmt.Fprintf(&w, "%s\r\nX-Token: %s\r\nContent-Type: text/plain\r\n", status, tok)
	for _, f := range fields {
		w.WriteString(f + "\r\n")
	}
	w.WriteString("\r\n")
	resp.head = w.Len()
	w.Write(wire)
	resp.all = w.Bytes()
	if method == http.MethodHead && st.framing == bfUntilClose {
		closeAfter = true
	}
	return resp, closeAfter
}

// bfRun is the client side of one input.
type bfRun struct {
	plan    bfPlan
	backend *bfBackend
	addr    string
	// gate lets requests run together, but a request that may make the
	// backend write stray bytes alone (see bfStep.alone).
	gate     sync.RWMutex
	clients  [bfMaxClients]bfClient
	outcomes [bfMaxClients][bfMaxRequests]bfOutcome
	// h2 is the clients' one HTTP/2 connection (bfPlan.h2): the clients
	// that run at once are streams of it together, and its 16 KiB stream
	// window makes sluice hold answers for it.
	h2     *http.Transport
	h2Once sync.Once
}

// bfClient is one client: one connection to sluice at a time, reused
// while both sides keep it open.
type bfClient struct {
	conn net.Conn
	br   *bufio.Reader
	tee  *bfTee
	// idle is what sluice sent on the connection after the client's last
	// request, when no request was outstanding.
	idle []byte
}

// bfTee keeps the last bytes read from a client connection, for reports
// and token checks of what did not parse.
type bfTee struct {
	c   net.Conn
	buf bytes.Buffer
}

func (t *bfTee) Read(p []byte) (int, error) {
	n, err := t.c.Read(p)
	if t.buf.Len() < 64<<10 {
		t.buf.Write(p[:n])
	}
	return n, err
}

// bfOutcome is what one request got.
type bfOutcome struct {
	sent     bool
	status   int
	interims []string
	token    string
	body     []byte
	note     string // an allowed oddity: no answer, a truncated body, ...
	problem  string // a violation of the property
}

func (o *bfOutcome) addNote(s string) {
	if o.note != "" {
		o.note += "; "
	}
	o.note += s
}

func (r *bfRun) play() {
	p := r.plan
	switch p.order {
	case 1:
		var wg sync.WaitGroup
		for c := range p.clients {
			wg.Go(func() {
				for q := range p.requests {
					r.exchange(c, q)
				}
			})
		}
		wg.Wait()
	case 2:
		for c := range p.clients {
			for q := range p.requests {
				r.exchange(c, q)
			}
		}
	default:
		for q := range p.requests {
			for c := range p.clients {
				r.exchange(c, q)
			}
		}
	}
	// Whatever sluice sends on a connection left open after the last
	// request is an answer to nothing.
	time.Sleep(bfMargin)
	if r.h2 != nil {
		r.h2.CloseIdleConnections()
	}
	for c := range p.clients {
		cl := &r.clients[c]
		if cl.conn != nil {
			cl.idle = cl.checkIdle()
			if cl.conn != nil {
				cl.drop()
			}
		}
	}
}

// checkIdle reads what sluice has sent on an open connection with no
// request outstanding (nil when nothing): the connection is then closed, as
// it is when sluice closed it.
func (cl *bfClient) checkIdle() []byte {
	cl.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := cl.br.Peek(1)
	var ne net.Error
	switch n := cl.br.Buffered(); {
	case n > 0:
		got := make([]byte, n)
		io.ReadFull(cl.br, got)
		cl.drop()
		return got
	case err != nil && !(errors.As(err, &ne) && ne.Timeout()):
		cl.drop() // sluice closed it
	}
	return nil
}

func (cl *bfClient) drop() {
	cl.conn.Close()
	cl.conn = nil
}

// exchange sends request q of client c and judges its answer.
func (r *bfRun) exchange(c, q int) {
	st := r.plan.steps[c][q]
	if st.alone() {
		r.gate.Lock()
		defer r.gate.Unlock()
	} else {
		r.gate.RLock()
		defer r.gate.RUnlock()
	}
	out := &r.outcomes[c][q]
	cl := &r.clients[c]
	if r.plan.h2 {
		r.sendH2(cl, out, st, c, q)
	} else {
		r.sendH1(cl, out, st, c, q)
	}
	if st.alone() {
		// The answer is in: let the backend finish writing whatever else
		// it writes, and those bytes reach sluice, before anyone sends the
		// next request.
		select {
		case <-r.backend.quiet():
		case <-time.After(bfQuietWait):
			out.addNote(fmt.Sprintf("the backend was still writing %v after the answer", bfQuietWait))
		}
		time.Sleep(bfMargin)
	}
}

// sendH1 sends request q of client c over HTTP/1.1, on the client's
// connection (a new one if it has none).
func (r *bfRun) sendH1(cl *bfClient, out *bfOutcome, st bfStep, c, q int) {
	if cl.conn != nil {
		if got := cl.checkIdle(); got != nil {
			out.problem = fmt.Sprintf("before this request was sent, sluice sent on the idle connection: %.300q", got)
		}
	}
	if cl.conn == nil {
		conn, err := net.DialTimeout("tcp", r.addr, bfRequestWait)
		if err != nil {
			out.note = "dial: " + err.Error()
			return
		}
		cl.tee = &bfTee{c: conn}
		cl.conn, cl.br = conn, bufio.NewReader(cl.tee)
	}
	keep := r.plan.closeMask&(1<<c) == 0
	r.send(cl, out, st, c, q, keep)
}

// sendH2 sends request q of client c as a stream of the client's HTTP/2
// connection and judges its answer as send does.
func (r *bfRun) sendH2(cl *bfClient, out *bfOutcome, st bfStep, c, q int) {
	r.h2Once.Do(func() {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		r.h2 = &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 16 << 10}}
	})
	tok := bfToken(c, q)
	method := st.methodName()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("GET /smuggled HTTP/1.1\r\nHost: backendfuzz\r\n\r\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), bfRequestWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+r.addr+bfPath(c, q), body)
	req.Host = "backendfuzz"
	out.sent = true
	resp, err := r.h2.RoundTrip(req)
	if err != nil {
		out.addNote("no answer: " + err.Error())
		return
	}
	r.readAndJudge(out, tok, st, resp)
}

// readAndJudge reads the answer's body and judges the answer; false when
// the body was cut short.
func (r *bfRun) readAndJudge(out *bfOutcome, tok string, st bfStep, resp *http.Response) bool {
	body, err := io.ReadAll(io.LimitReader(resp.Body, bfMaxBody))
	resp.Body.Close()
	out.status, out.token, out.body = resp.StatusCode, resp.Header.Get("X-Token"), body
	if err != nil {
		out.addNote("body cut short: " + err.Error())
	}
	r.judge(out, tok, st, resp)
	return err == nil
}

// send writes the request and reads its answer on cl, and closes the
// connection when either side ends it.
func (r *bfRun) send(cl *bfClient, out *bfOutcome, st bfStep, c, q int, keep bool) {
	tok := bfToken(c, q)
	method := st.methodName()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: backendfuzz\r\n", method, bfPath(c, q))
	if !keep {
		req.WriteString("Connection: close\r\n")
	}
	if method == http.MethodPost {
		smuggled := "GET /smuggled HTTP/1.1\r\nHost: backendfuzz\r\n\r\n"
		fmt.Fprintf(&req, "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)
	} else {
		req.WriteString("\r\n")
	}
	cl.tee.buf.Reset()
	cl.conn.SetDeadline(time.Now().Add(bfRequestWait))
	out.sent = true
	drop := cl.drop
	if _, err := cl.conn.Write(req.Bytes()); err != nil {
		// Sluice may have closed the connection; an answer may be there.
		out.addNote("write: " + err.Error())
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(cl.br, &http.Request{Method: method})
		if err != nil {
			out.addNote("no answer: " + err.Error())
			r.judgeRaw(out, tok, cl.tee.buf.Bytes(), err)
			drop()
			return
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != 101 {
			for _, v := range resp.Header.Values("X-Token") {
				if v != tok {
					out.problem = fmt.Sprintf("an interim %d response carries X-Token %q", resp.StatusCode, v)
				}
			}
			out.interims = append(out.interims, resp.Status)
			if len(out.interims) > 8 {
				out.problem = "more than 8 interim responses"
				drop()
				return
			}
			continue
		}
		break
	}
	if !r.readAndJudge(out, tok, st, resp) || resp.Close || !keep || resp.StatusCode == 101 {
		drop()
	}
}

// judge checks a complete response head (and the body read) against the
// property.
func (r *bfRun) judge(out *bfOutcome, tok string, st bfStep, resp *http.Response) {
	if out.problem != "" {
		return
	}
	toks := resp.Header.Values("X-Token")
	if len(toks) == 0 {
		switch {
		case resp.StatusCode != 502 && resp.StatusCode != 503 && resp.StatusCode != 504:
			out.problem = fmt.Sprintf("status %d without a token: neither its own answer nor sluice's 502/503/504", resp.StatusCode)
		case bytes.Contains(out.body, []byte("tok-")):
			out.problem = fmt.Sprintf("sluice's %d carries a backend body %.200q", resp.StatusCode, out.body)
		}
		return
	}
	for _, v := range toks {
		if v != tok {
			out.problem = fmt.Sprintf("received the answer to %s (X-Token %q)", bfWhose(v), toks)
			return
		}
	}
	if v := resp.Trailer.Get("X-Trailer-Token"); v != "" && v != tok {
		out.problem = fmt.Sprintf("trailer of the answer to %s", bfWhose(v))
		return
	}
	if foreign := bfForeign(out.body, tok); foreign != "" {
		out.problem = fmt.Sprintf("its own answer's body holds bytes of the answer to %s: %.200q", bfWhose(foreign), out.body)
		return
	}
	if want := bfBody(tok, st.size); !bytes.HasPrefix(want, out.body) {
		// Its own bytes, framed otherwise (an odd status line, a length
		// beside chunked...): not what this test is about.
		out.addNote(fmt.Sprintf("the body is not (a prefix of) the %d bytes the backend wrote", len(want)))
	}
}

// judgeRaw checks the bytes of an answer that did not parse: a foreign
// token in them is a violation, and so are bytes that are not the start of
// an HTTP/1.1 response (a connection closed or timed out is not).
func (r *bfRun) judgeRaw(out *bfOutcome, tok string, raw []byte, err error) {
	if out.problem != "" {
		return
	}
	if foreign := bfForeign(raw, tok); foreign != "" {
		out.problem = fmt.Sprintf("received bytes of the answer to %s: %.300q", bfWhose(foreign), raw)
		return
	}
	var ne net.Error
	if len(raw) == 0 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) {
		return
	}
	out.problem = fmt.Sprintf("sluice sent something that is not an HTTP/1.1 response (%v): %.300q", err, raw)
}

// bfForeign returns the first token in p that is not tok ("" when none).
// A body is cut at its size anywhere, and may be relayed with its framing
// bytes, so a token that is a prefix of tok counts as tok.
func bfForeign(p []byte, tok string) string {
	for {
		i := bytes.Index(p, []byte("tok-"))
		if i < 0 {
			return ""
		}
		p = p[i:]
		j := 4
		for j < len(p) && (p[j] == '-' || p[j] >= '0' && p[j] <= '9' || p[j] >= 'a' && p[j] <= 'z' || p[j] >= 'A' && p[j] <= 'Z') {
			j++
		}
		if got := string(p[:j]); !strings.HasPrefix(tok, got) {
			return got
		}
		p = p[j:]
	}
}

// bfWhose names the request a token answers.
func bfWhose(tok string) string {
	if tok == bfStrayToken {
		return "no request (stray)"
	}
	var c, q int
	if _, err := fmt.Sscanf(tok, "tok-c%d-r%d", &c, &q); err == nil {
		return fmt.Sprintf("request %d of client %d (%s)", q, c, tok)
	}
	return strconv.Quote(tok)
}

// problems lists the violations, for the failure message.
func (r *bfRun) problems() []string {
	var out []string
	for c := range r.plan.clients {
		for q := range r.plan.requests {
			if p := r.outcomes[c][q].problem; p != "" {
				out = append(out, fmt.Sprintf("- client %d request %d (%s): %s", c, q, bfPath(c, q), p))
			}
		}
		if idle := r.clients[c].idle; idle != nil {
			out = append(out, fmt.Sprintf("- client %d: after its last request, sluice sent on the idle connection: %.300q", c, idle))
		}
	}
	return out
}

// report describes the plan and what each request got.
func (r *bfRun) report() string {
	var b strings.Builder
	order := []string{"rounds", "concurrent", "one client after the other"}[r.plan.order]
	fmt.Fprintf(&b, "  %d clients × %d requests, %s, close mask %04b, max_connections_per_backend %d, no retries %v, HTTP/2 %v\n",
		r.plan.clients, r.plan.requests, order, r.plan.closeMask, r.plan.maxConns, r.plan.noRetries, r.plan.h2)
	for c := range r.plan.clients {
		for q := range r.plan.requests {
			o := r.outcomes[c][q]
			fmt.Fprintf(&b, "  c%d r%d [%s]: ", c, q, r.plan.steps[c][q])
			if !o.sent {
				fmt.Fprintf(&b, "not sent %s\n", o.note)
				continue
			}
			if o.status != 0 {
				fmt.Fprintf(&b, "%d X-Token %q interim %q body %d bytes %.60q", o.status, o.token, o.interims, len(o.body), o.body)
			}
			if o.note != "" {
				fmt.Fprintf(&b, " (%s)", o.note)
			}
			if o.problem != "" {
				b.WriteString(" <- WRONG")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
