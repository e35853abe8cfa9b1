package edge

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// respTests are response heads from backends; raw's "\n" becomes CRLF
// unless lf is set.
var respTests = []struct {
	name string
	raw  string
	lf   bool
	// want: the parsed head (First is checked separately); bad: refused.
	want ResponseHead
	bad  bool
}{
	// Accepted.
	{name: "simple", raw: "HTTP/1.1 200 OK\nContent-Length: 5\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 5}},
	{name: "no fields", raw: "HTTP/1.1 204 No Content\n\n",
		want: ResponseHead{Minor: 1, Status: 204, ContentLength: -1}},
	{name: "no length", raw: "HTTP/1.1 200 OK\nContent-Type: text/plain\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1}},
	{name: "reason with spaces and obs-text", raw: "HTTP/1.1 404 Not \xc3\xa9 Found\nContent-Length: 0\n\n",
		want: ResponseHead{Minor: 1, Status: 404, ContentLength: 0}},
	{name: "missing reason", raw: "HTTP/1.1 200\nContent-Length: 2\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 2}},
	{name: "empty reason", raw: "HTTP/1.1 200 \nContent-Length: 2\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 2}},
	{name: "bare LF", raw: "HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\n", lf: true,
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 2}},
	{name: "mixed line ends", raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\nX: y\r\n\n", lf: true,
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 2}},
	{name: "duplicate Content-Length, equal", raw: "HTTP/1.1 200 OK\nContent-Length: 7\ncontent-length:  7 \n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 7}},
	{name: "Content-Length with leading zeros", raw: "HTTP/1.1 200 OK\nContent-Length: 007\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 7}},
	{name: "Content-Length max int64", raw: "HTTP/1.1 200 OK\nContent-Length: 9223372036854775807\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 1<<63 - 1}},
	{name: "chunked", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1, Chunked: true}},
	{name: "chunked any case with OWS", raw: "HTTP/1.1 200 OK\ntransfer-encoding: \tChunKed \n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1, Chunked: true}},
	// Both framings: chunked wins and the connection is not used again.
	{name: "chunked overrides Content-Length", raw: "HTTP/1.1 200 OK\nContent-Length: 10\nTransfer-Encoding: chunked\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1, Chunked: true, Close: true}},
	{name: "chunked overrides a later Content-Length", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Length: 10\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1, Chunked: true, Close: true}},
	{name: "Connection: close", raw: "HTTP/1.1 200 OK\nConnection: close\nContent-Length: 0\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 0, Close: true}},
	{name: "close among tokens", raw: "HTTP/1.1 200 OK\nConnection: x-foo, Close\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1, Close: true}},
	{name: "HTTP/1.0 closes", raw: "HTTP/1.0 200 OK\nContent-Length: 1\n\n",
		want: ResponseHead{Minor: 0, Status: 200, ContentLength: 1, Close: true}},
	{name: "HTTP/1.0 keep-alive", raw: "HTTP/1.0 200 OK\nConnection: keep-alive\nContent-Length: 1\n\n",
		want: ResponseHead{Minor: 0, Status: 200, ContentLength: 1}},
	{name: "switching protocols", raw: "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nUpgrade: other\nConnection: Upgrade\n\n",
		want: ResponseHead{Minor: 1, Status: 101, ContentLength: -1, Upgrade: []byte("websocket")}},
	{name: "interim", raw: "HTTP/1.1 103 Early Hints\nLink: </a.css>; rel=preload\n\n",
		want: ResponseHead{Minor: 1, Status: 103, ContentLength: -1}},
	{name: "100 Continue", raw: "HTTP/1.1 100 Continue\n\n",
		want: ResponseHead{Minor: 1, Status: 100, ContentLength: -1}},
	{name: "status 599", raw: "HTTP/1.1 599 Whatever\n\n",
		want: ResponseHead{Minor: 1, Status: 599, ContentLength: -1}},
	{name: "empty value", raw: "HTTP/1.1 200 OK\nX-Empty:\nContent-Length: 0\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: 0}},
	{name: "token characters in name", raw: "HTTP/1.1 200 OK\nX!#$%&'*+-.^_`|~9: 1\n\n",
		want: ResponseHead{Minor: 1, Status: 200, ContentLength: -1}},

	// Refused.
	{name: "empty first line", raw: "\nHTTP/1.1 200 OK\n\n", bad: true},
	{name: "not HTTP", raw: "garbage\n\n", bad: true},
	{name: "lower-case protocol", raw: "http/1.1 200 OK\n\n", bad: true},
	{name: "status 600", raw: "HTTP/1.1 600 Whatever\n\n", bad: true},
	{name: "status 999", raw: "HTTP/1.1 999 Whatever\n\n", bad: true},
	{name: "status 099", raw: "HTTP/1.1 099 Whatever\n\n", bad: true},
	{name: "status 000", raw: "HTTP/1.1 000 Whatever\n\n", bad: true},
	{name: "HTTP/2", raw: "HTTP/2.0 200 OK\n\n", bad: true},
	{name: "two-digit status", raw: "HTTP/1.1 20 OK\n\n", bad: true},
	{name: "four-digit status", raw: "HTTP/1.1 2000 OK\n\n", bad: true},
	{name: "letters in status", raw: "HTTP/1.1 2OO OK\n\n", bad: true},
	{name: "status below 100", raw: "HTTP/1.1 099 Low\n\n", bad: true},
	{name: "no space after version", raw: "HTTP/1.1\t200 OK\n\n", bad: true},
	{name: "control character in reason", raw: "HTTP/1.1 200 O\x01K\n\n", bad: true},
	{name: "unequal Content-Length", raw: "HTTP/1.1 200 OK\nContent-Length: 1\nContent-Length: 2\n\n", bad: true},
	{name: "Content-Length list", raw: "HTTP/1.1 200 OK\nContent-Length: 5, 5\n\n", bad: true},
	{name: "negative Content-Length", raw: "HTTP/1.1 200 OK\nContent-Length: -1\n\n", bad: true},
	{name: "empty Content-Length", raw: "HTTP/1.1 200 OK\nContent-Length:\n\n", bad: true},
	{name: "Content-Length overflow", raw: "HTTP/1.1 200 OK\nContent-Length: 9223372036854775808\n\n", bad: true},
	{name: "Content-Length with a sign", raw: "HTTP/1.1 200 OK\nContent-Length: +5\n\n", bad: true},
	{name: "gzip", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n\n", bad: true},
	{name: "gzip, chunked", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n", bad: true},
	{name: "chunked, chunked", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: chunked, chunked\n\n", bad: true},
	{name: "chunked twice", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n", bad: true},
	{name: "identity", raw: "HTTP/1.1 200 OK\nTransfer-Encoding: identity\n\n", bad: true},
	{name: "obs-fold", raw: "HTTP/1.1 200 OK\nX-A: a\n b\nContent-Length: 0\n\n", bad: true},
	{name: "obs-fold with tab", raw: "HTTP/1.1 200 OK\nX-A: a\n\tb\n\n", bad: true},
	{name: "fold at the first field", raw: "HTTP/1.1 200 OK\n X-A: a\n\n", bad: true},
	{name: "space before colon", raw: "HTTP/1.1 200 OK\nContent-Length : 5\n\n", bad: true},
	{name: "space in name", raw: "HTTP/1.1 200 OK\nBad Name: x\n\n", bad: true},
	{name: "no colon", raw: "HTTP/1.1 200 OK\nNoColon\n\n", bad: true},
	{name: "empty name", raw: "HTTP/1.1 200 OK\n: x\n\n", bad: true},
	{name: "NUL in value", raw: "HTTP/1.1 200 OK\nX: a\x00b\n\n", bad: true},
	{name: "bare CR in value", raw: "HTTP/1.1 200 OK\nX: a\rb\n\n", bad: true},
	{name: "bare CR in status line", raw: "HTTP/1.1 200 O\rK\n\n", bad: true},
}

func TestParseResponseHead(t *testing.T) {
	for _, tt := range respTests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if !tt.lf {
				raw = crlf(raw)
			}
			const body = "BODY"
			var h ResponseHead
			n, err := ParseResponseHead([]byte(raw+body), &h)
			if tt.bad {
				var e *Error
				if !errors.As(err, &e) || e.Status != 502 || n != 0 {
					t.Fatalf("ParseResponseHead(%q) = (%d, %v), want a 502 *Error", raw, n, err)
				}
				return
			}
			if err != nil || n != len(raw) {
				t.Fatalf("ParseResponseHead(%q) = (%d, %v), want (%d, nil)", raw, n, err, len(raw))
			}
			got := h
			got.First = 0
			if got.Minor != tt.want.Minor || got.Status != tt.want.Status || got.ContentLength != tt.want.ContentLength ||
				got.Chunked != tt.want.Chunked || got.Close != tt.want.Close || !bytes.Equal(got.Upgrade, tt.want.Upgrade) {
				t.Errorf("ParseResponseHead(%q) = %+v, want %+v", raw, got, tt.want)
			}
			// First is just past the status line.
			if want := strings.IndexByte(raw, '\n') + 1; h.First != want {
				t.Errorf("First = %d, want %d", h.First, want)
			}
		})
	}
}

// TestParseResponseHeadIncremental feeds every head a byte more at a time:
// 0 and no error until it is whole, then its length; and for a refused head,
// never an acceptance.
func TestParseResponseHeadIncremental(t *testing.T) {
	for _, tt := range respTests {
		raw := tt.raw
		if !tt.lf {
			raw = crlf(raw)
		}
		b := []byte(raw + "HTTP/1.1 200 OK\r\n\r\n") // a following response must not count
		var h ResponseHead
		for i := 0; i <= len(raw); i++ {
			n, err := ParseResponseHead(b[:i], &h)
			switch {
			case i < len(raw) && (n != 0 || err != nil && !tt.bad):
				t.Fatalf("%s: after %d of %d bytes: (%d, %v), want (0, nil)", tt.name, i, len(raw), n, err)
			case i == len(raw) && tt.bad && err == nil:
				t.Fatalf("%s: whole head accepted (%d)", tt.name, n)
			case i == len(raw) && !tt.bad && (n != len(raw) || err != nil):
				t.Fatalf("%s: whole head: (%d, %v), want (%d, nil)", tt.name, n, err, len(raw))
			}
		}
		if n, err := ParseResponseHead(b, &h); !tt.bad && (n != len(raw) || err != nil) {
			t.Fatalf("%s: with the next response after it: (%d, %v), want (%d, nil)", tt.name, n, err, len(raw))
		}
	}
}

// TestParseResponseHeadSequence: an interim response, then the final one,
// in one buffer, as a backend sends them.
func TestParseResponseHeadSequence(t *testing.T) {
	b := []byte(crlf("HTTP/1.1 100 Continue\n\nHTTP/1.1 103 Early Hints\nLink: </a>\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
	var h ResponseHead
	var statuses []int
	p := 0
	for range 10 {
		n, err := ParseResponseHead(b[p:], &h)
		if err != nil || n == 0 {
			t.Fatalf("at %d: (%d, %v)", p, n, err)
		}
		statuses = append(statuses, h.Status)
		p += n
		if h.Status >= 200 {
			break
		}
	}
	if len(statuses) != 3 || statuses[0] != 100 || statuses[1] != 103 || statuses[2] != 200 || string(b[p:]) != "ok" {
		t.Fatalf("statuses %v, rest %q; want [100 103 200] and \"ok\"", statuses, b[p:])
	}
}

func TestParseResponseHeadFields(t *testing.T) {
	raw := []byte(crlf("HTTP/1.1 200 OK\nContent-Type:  text/plain \nX-Empty:\nSet-Cookie: a=1\nSet-Cookie: b=2\n\n"))
	var h ResponseHead
	n, err := ParseResponseHead(raw, &h)
	if err != nil || n != len(raw) {
		t.Fatalf("(%d, %v)", n, err)
	}
	var got []string
	for p, i := h.First, 0; i < 100; i++ {
		f, next, ok := NextField(raw, p)
		if !ok {
			break
		}
		got = append(got, string(f.Name)+"="+string(f.Value))
		p = next
	}
	want := []string{"Content-Type=text/plain", "X-Empty=", "Set-Cookie=a=1", "Set-Cookie=b=2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("fields %q, want %q", got, want)
	}
}

// TestParseResponseHeadLimit: heads are bounded at MaxResponseHeaderBytes
// (1 MiB), whole or not.
func TestParseResponseHeadLimit(t *testing.T) {
	const status = "HTTP/1.1 200 OK\r\n"
	field := func(total int) string { // a head of exactly total bytes
		v := total - len(status) - len("X: \r\n\r\n")
		return status + "X: " + strings.Repeat("v", v) + "\r\n\r\n"
	}
	var h ResponseHead
	at := field(MaxResponseHeaderBytes)
	if n, err := ParseResponseHead([]byte(at), &h); err != nil || n != len(at) {
		t.Fatalf("a head of exactly the limit: (%d, %v), want accepted", n, err)
	}
	// Just under the limit without its end: more may come.
	if n, err := ParseResponseHead([]byte(at[:MaxResponseHeaderBytes-2]), &h); n != 0 || err != nil {
		t.Fatalf("an unfinished head under the limit: (%d, %v), want (0, nil)", n, err)
	}
	over := field(MaxResponseHeaderBytes + 4096)
	for _, tt := range []struct {
		name string
		b    string
	}{
		{"whole head over the limit", over},
		{"one long line over the limit, unfinished", over[:MaxResponseHeaderBytes+100]},
		{"many lines over the limit, unfinished", status + strings.Repeat("X: y\r\n", MaxResponseHeaderBytes/6+10)},
		{"many fields", status + strings.Repeat("X: y\r\n", 1001) + "\r\n"},
	} {
		n, err := ParseResponseHead([]byte(tt.b), &h)
		var e *Error
		if !errors.As(err, &e) || e.Status != 502 || n != 0 {
			t.Errorf("%s: (%d, %v), want a 502 *Error", tt.name, n, err)
		}
	}
	if n, err := ParseResponseHead([]byte(status+strings.Repeat("X: y\r\n", 1000)+"\r\n"), &h); err != nil || n == 0 {
		t.Errorf("1000 fields: (%d, %v), want accepted", n, err)
	}
}

func TestNoBody(t *testing.T) {
	for _, tt := range []struct {
		head   bool
		status int
		want   bool
	}{
		{false, 200, false}, {true, 200, true}, {false, 204, true}, {false, 304, true},
		{false, 100, true}, {false, 103, true}, {false, 101, true}, {false, 404, false}, {true, 404, true},
		{false, 205, false},
	} {
		if got := NoBody(tt.head, tt.status); got != tt.want {
			t.Errorf("NoBody(%v, %d) = %v, want %v", tt.head, tt.status, got, tt.want)
		}
	}
}

// typicalResponse is a response head of about 300 bytes, as a web
// application sends it.
var typicalResponse = crlf("HTTP/1.1 200 OK\n" +
	"Date: Tue, 24 Nov 2026 12:00:00 GMT\n" +
	"Content-Type: text/html; charset=utf-8\n" +
	"Content-Length: 12345\n" +
	"Cache-Control: private, max-age=0\n" +
	"Set-Cookie: session=4f1c2a9e8b7d6c5f; Path=/; HttpOnly; SameSite=Lax\n" +
	"Vary: Accept-Encoding\n" +
	"X-Frame-Options: DENY\n" +
	"Strict-Transport-Security: max-age=31536000\n" +
	"Connection: keep-alive\n" +
	"\n")

func TestParseResponseHeadAllocs(t *testing.T) {
	var h ResponseHead
	for _, raw := range [][]byte{[]byte(typicalResponse),
		[]byte(crlf("HTTP/1.1 200 OK\nContent-Length: 1\nContent-Length: 2\n\n"))} {
		allocs := testing.AllocsPerRun(100, func() { ParseResponseHead(raw, &h) })
		if allocs != 0 {
			t.Errorf("allocs per head = %v, want 0", allocs)
		}
	}
}

func BenchmarkParseResponseHead(b *testing.B) {
	raw := []byte(typicalResponse)
	var h ResponseHead
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if n, err := ParseResponseHead(raw, &h); n != len(raw) || err != nil {
			b.Fatalf("ParseResponseHead = (%d, %v)", n, err)
		}
	}
}
