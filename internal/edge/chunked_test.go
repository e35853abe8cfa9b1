package edge

import (
	"strings"
	"testing"
)

func TestChunked(t *testing.T) {
	tests := []struct {
		name string
		body string // "\n" becomes CRLF unless lf is set
		lf   bool
		lim  Limits
		want int // 0: the body ends at the end of body; -1: more needed
	}{
		{name: "empty body", body: "0\n\n"},
		{name: "one chunk", body: "5\nhello\n0\n\n"},
		{name: "several chunks", body: "5\nhello\n1\n \nA\n0123456789\n0\n\n"},
		{name: "upper and lower hex", body: "a\n0123456789\nA\n0123456789\n0\n\n"},
		{name: "leading zeros", body: "0005\nhello\n000\n\n"},
		{name: "fifteen digits", body: "000000000000001\nx\n0\n\n"},
		{name: "extensions", body: "5;a=b;c;d=\"x y;\\\"z\"\nhello\n0;last\n\n"},
		{name: "trailers", body: "5\nhello\n0\nX-Sum: abc\nX-Other:\tv  v \n\n"},
		{name: "unfinished data", body: "5\nhel", want: -1},
		{name: "unfinished trailer", body: "0\nX-Sum: a", want: -1},
		{name: "CR of data end only", body: "5\r\nhello\r", lf: true, want: -1},

		{name: "bad size", body: "zz\nhello\n0\n\n", want: 400},
		{name: "empty size", body: "\nhello\n0\n\n", want: 400},
		{name: "negative size", body: "-5\nhello\n0\n\n", want: 400},
		{name: "0x prefix", body: "0x5\nhello\n0\n\n", want: 400},
		{name: "space after size", body: "5 \nhello\n0\n\n", want: 400},
		{name: "space before size", body: " 5\nhello\n0\n\n", want: 400},
		{name: "space before extension", body: "5 ;a\nhello\n0\n\n", want: 400},
		{name: "sixteen digits", body: "0000000000000005\nhello\n0\n\n", want: 400},
		{name: "size overflow", body: "ffffffffffffffffff\n", want: 400},
		{name: "bare LF after size", body: "5\nhello\r\n0\r\n\r\n", lf: true, want: 400},
		{name: "bare CR after size", body: "5\rhello\r\n", lf: true, want: 400},
		{name: "data longer than size", body: "5\nhelloX\n0\n\n", want: 400},
		{name: "data shorter than size", body: "5\nhell\n0\n\n", want: 400},
		{name: "bare LF after data", body: "5\r\nhello\n0\r\n\r\n", lf: true, want: 400},
		{name: "empty extension", body: "5;\nhello\n0\n\n", want: 400},
		{name: "extension without name", body: "5;=x\nhello\n0\n\n", want: 400},
		{name: "extension without value", body: "5;a=\nhello\n0\n\n", want: 400},
		{name: "extension with space", body: "5;a = b\nhello\n0\n\n", want: 400},
		{name: "unclosed quoted extension", body: "5;a=\"b\nhello\n0\n\n", want: 400},
		{name: "extension after quote", body: "5;a=\"b\"c\nhello\n0\n\n", want: 400},
		{name: "control byte in extension", body: "5;a=\"\x01\"\nhello\n0\n\n", want: 400},
		{name: "chunk-size line too long", body: "5;a=\"" + strings.Repeat("x", 4096) + "\"\nhello\n0\n\n", want: 400},
		{name: "bare LF ending the body", body: "0\r\n\n", lf: true, want: 400},
		{name: "bare LF in trailer", body: "0\r\nX: y\n\r\n", lf: true, want: 400},
		{name: "trailer obs-fold", body: "0\nX: y\n z\n\n", want: 400},
		{name: "trailer space before colon", body: "0\nX : y\n\n", want: 400},
		{name: "trailer without colon", body: "0\nXY\n\n", want: 400},
		{name: "trailer empty name", body: "0\n: y\n\n", want: 400},
		{name: "trailer control byte", body: "0\nX: a\x01\n\n", want: 400},
		{name: "trailer Content-Length", body: "0\nContent-Length: 5\n\n", want: 400},
		{name: "trailer Transfer-Encoding", body: "0\ntransfer-encoding: chunked\n\n", want: 400},
		{name: "trailer Host", body: "0\nHOST: evil\n\n", want: 400},
		{name: "trailer section too large", body: "0\nX: " + strings.Repeat("a", 100) + "\n\n", lim: Limits{MaxHeaderBytes: 64}, want: 431},
		{name: "too many trailers", body: "0\n" + strings.Repeat("X: y\n", 3) + "\n", lim: Limits{MaxHeaders: 2}, want: 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if !tt.lf {
				body = crlf(body)
			}
			lim := tt.lim.resolved()
			// Whole, then a byte at a time: the same verdict.
			for _, step := range []int{len(body), 1} {
				var k chunked
				got, n := -1, 0
				for i := 0; i < len(body) && got == -1; i += step {
					m, done, err := k.feed([]byte(body[i:min(i+step, len(body))]), &lim)
					n += m
					switch {
					case err != nil:
						got = err.Status
					case done:
						got = 0
					case m != min(step, len(body)-i):
						t.Fatalf("step %d: feed took %d of %d bytes without verdict", step, m, min(step, len(body)-i))
					}
				}
				if got != tt.want {
					t.Fatalf("step %d: verdict %d after %d bytes, want %d", step, got, n, tt.want)
				}
				if got == 0 && n != len(body) {
					t.Fatalf("step %d: body ended after %d of %d bytes", step, n, len(body))
				}
			}
		})
	}
}

func TestChunkedStopsAtEnd(t *testing.T) {
	lim := Limits{}.resolved()
	var k chunked
	body := crlf("3\nabc\n0\n\n")
	n, done, err := k.feed([]byte(body+"GET / HTTP/1.1\r\n"), &lim)
	if n != len(body) || !done || err != nil {
		t.Fatalf("feed = (%d, %v, %v), want (%d, true, nil)", n, done, err, len(body))
	}
}
