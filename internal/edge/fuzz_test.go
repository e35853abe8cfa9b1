package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
)

// FuzzGuard feeds random bytes to the parser and to a Conn, whole and in
// random pieces read through random buffer sizes, and checks that:
//   - nothing panics;
//   - the verdict (status and reason) does not depend on how bytes arrive,
//     and without a refusal neither does the output;
//   - the output is the input in order, less only the CR/LF of skipped empty
//     lines, then the synthetic request when there is one;
//   - the guard is idempotent: its output goes through a new guard unchanged;
//   - where net/http accepts the messages the guard let through, it frames
//     them exactly as the guard does (no request smuggling between the two).
func FuzzGuard(f *testing.F) {
	for _, tt := range headTests {
		if len(tt.raw) < 1024 {
			f.Add([]byte(crlf(tt.raw)), uint64(len(tt.raw)))
		}
	}
	f.Add([]byte(pipelined), uint64(1))
	f.Add([]byte(crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5;a=\"b\"\nhello\n0\nX: y\n\n"+get)), uint64(7))
	f.Add([]byte(crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\nhelloX\n0\n\n")), uint64(3))
	f.Add([]byte(crlf("\nPOST / HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc\n"+get)), uint64(9))
	f.Add([]byte(crlf("GET /ws HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade: websocket\n\n")+"\x81\x00GET"), uint64(2))
	f.Add([]byte(crlf("PRI * HTTP/2.0\n\nSM\n\n")+"\x00\x00\x00\x04"), uint64(5))

	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		// Small limits, so that the fuzzer reaches them.
		lim := Limits{MaxURIBytes: 64, MaxHeaderBytes: 512, MaxHeaders: 8}
		var h Head
		ParseRequestHead(in, lim, &h)

		whole := guard(t, lim, [][]byte{in}, 4096)
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		var pieces [][]byte
		for rest := in; len(rest) > 0; {
			n := min(1+rng.IntN(64), len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		split := guard(t, lim, pieces, 1+rng.IntN(64))

		if whole.status != split.status || whole.reason != split.reason {
			t.Fatalf("verdict depends on arrival: whole %d %q, pieces %d %q", whole.status, whole.reason, split.status, split.reason)
		}
		if whole.status == 0 && !bytes.Equal(whole.out, split.out) {
			t.Fatalf("output depends on arrival:\nwhole  %q\npieces %q", whole.out, split.out)
		}
		for _, r := range []result{whole, split} {
			if !followsInput(r.out, in) {
				t.Fatalf("output %q is not the input %q less empty lines", r.out, in)
			}
			again := guard(t, lim, [][]byte{r.out}, 4096)
			if again.status != 0 || !bytes.Equal(again.out, r.out) {
				t.Fatalf("not idempotent: %q gave %q (refused %d %q)", r.out, again.out, again.status, again.reason)
			}
		}
		if !whole.pass {
			sameFramingAsNetHTTP(t, whole.out, lim)
		}
	})
}

type result struct {
	out            []byte // without the synthetic request
	status         int
	reason         string
	pass           bool // passing through at the end
	synthetic, bad bool // ended by the synthetic request, by ErrMalformed
}

func guard(t *testing.T, lim Limits, pieces [][]byte, readSize int) result {
	t.Helper()
	sc := &scriptConn{}
	for _, p := range pieces {
		sc.reads = append(sc.reads, p)
	}
	c := NewConn(sc, lim)
	out, err := readAll(c, readSize)
	r := result{out: out, pass: c.state == stPass}
	var ok bool
	r.status, r.reason, ok = c.Rejection()
	switch {
	case err != nil:
		if !errors.Is(err, ErrMalformed) || !ok {
			t.Fatalf("Read error %v (refused %v)", err, ok)
		}
		r.bad = true
	case c.RejectToken() != "":
		syn := []byte(synthetic(c.RejectToken()))
		if !ok || !bytes.HasSuffix(out, syn) {
			t.Fatalf("output %q does not end with the synthetic request", out)
		}
		r.out, r.synthetic = out[:len(out)-len(syn)], true
	case ok:
		t.Fatal("refused without a synthetic request or an error")
	}
	return r
}

// followsInput reports whether out is a prefix of in from which only CR and
// LF bytes were left out.
func followsInput(out, in []byte) bool {
	i := 0
	for _, c := range out {
		for i < len(in) && in[i] != c && (in[i] == '\r' || in[i] == '\n') {
			i++
		}
		if i == len(in) || in[i] != c {
			return false
		}
		i++
	}
	return true
}

// sameFramingAsNetHTTP reads the complete messages of out with net/http and
// checks that each one it accepts ends where the guard says it does.
func sameFramingAsNetHTTP(t *testing.T, out []byte, lim Limits) {
	lim = lim.resolved()
	var ends []int
	for p := 0; p < len(out); {
		var h Head
		n, err := ParseRequestHead(out[p:], lim, &h)
		if err != nil || n == 0 || h.WebSocket {
			break
		}
		end := p + n
		switch {
		case h.Chunked:
			var k chunked
			m, done, err := k.feed(out[end:], &lim)
			if !done || err != nil {
				end = -1
			} else {
				end += m
			}
		case h.ContentLength > int64(len(out)-end):
			end = -1
		case h.ContentLength > 0:
			end += int(h.ContentLength)
		}
		if end < 0 {
			break
		}
		ends = append(ends, end)
		p = end
	}
	cr := &countingReader{r: bytes.NewReader(out)}
	br := bufio.NewReaderSize(cr, 64<<10)
	for i, end := range ends {
		req, err := http.ReadRequest(br)
		if err != nil {
			return // net/http is stricter here: no disagreement on framing
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if pos := cr.n - br.Buffered(); pos != end {
			t.Fatalf("message %d: net/http ends it at %d, the guard at %d, in %q", i, pos, end, out)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
