package edge

import (
	"errors"
	"strings"
	"testing"
)

// crlf turns "\n" into "\r\n", so that test heads read like heads.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

const get = "GET / HTTP/1.1\nHost: a.example\n\n"

var headTests = []struct {
	name string
	raw  string // "\n" becomes CRLF unless lf is set
	lf   bool   // keep bare LFs
	lim  Limits
	want int // 0: accepted
}{
	// Accepted.
	{name: "simple", raw: get},
	{name: "HTTP/1.0 without Host", raw: "GET / HTTP/1.0\n\n"},
	{name: "HTTP/1.0 keep-alive", raw: "GET / HTTP/1.0\nConnection: keep-alive\nHost: a\n\n"},
	{name: "bare LF line endings", raw: "GET / HTTP/1.1\nHost: a\nX: y\n\n", lf: true},
	{name: "mixed line endings", raw: "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\n", lf: true},
	{name: "leading empty lines", raw: "\n\nGET / HTTP/1.1\nHost: a\n\n"},
	{name: "leading bare LF", raw: "\nGET / HTTP/1.1\nHost: a\n\n", lf: true},
	{name: "POST with length", raw: "POST /f HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello"},
	{name: "length zero", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 0\n\n"},
	{name: "length with leading zeros", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 007\n\n"},
	{name: "length max int64", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 9223372036854775807\n\n"},
	{name: "chunked", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"},
	{name: "chunked any case with OWS", raw: "POST / HTTP/1.1\nHost: a\ntransfer-encoding:  ChunKed \t\n\n"},
	{name: "OPTIONS asterisk", raw: "OPTIONS * HTTP/1.1\nHost: a\n\n"},
	{name: "absolute-form", raw: "GET http://a.example/x?y HTTP/1.1\nHost: a.example\n\n"},
	{name: "absolute-form case and default port", raw: "GET HTTP://A.Example:80/ HTTP/1.1\nHost: a.example\n\n"},
	{name: "absolute-form Host with default port", raw: "GET http://a.example/ HTTP/1.1\nHost: A.EXAMPLE:80\n\n"},
	{name: "absolute-form https default port", raw: "GET https://a.example/ HTTP/1.1\nHost: a.example:443\n\n"},
	{name: "absolute-form no path", raw: "GET http://a.example HTTP/1.1\nHost: a.example\n\n"},
	{name: "absolute-form query only", raw: "GET http://a.example?q HTTP/1.1\nHost: a.example\n\n"},
	{name: "absolute-form HTTP/1.0 without Host", raw: "GET http://a.example/ HTTP/1.0\n\n"},
	{name: "Host with port", raw: "GET / HTTP/1.1\nHost: a.example:8080\n\n"},
	{name: "Host IPv4", raw: "GET / HTTP/1.1\nHost: 127.0.0.1:80\n\n"},
	{name: "Host IPv6", raw: "GET / HTTP/1.1\nHost: [::1]:8080\n\n"},
	{name: "Host pct-encoded", raw: "GET / HTTP/1.1\nHost: a%41b\n\n"},
	{name: "obs-text value", raw: "GET / HTTP/1.1\nHost: a\nX-Name: caf\xc3\xa9\n\n"},
	{name: "tab in value", raw: "GET / HTTP/1.1\nHost: a\nX: a\tb\n\n"},
	{name: "empty value", raw: "GET / HTTP/1.1\nHost: a\nX-Empty:\n\n"},
	{name: "token characters in name", raw: "GET / HTTP/1.1\nHost: a\nX!#$%&'*+-.^_`|~9: 1\n\n"},
	{name: "extension method", raw: "PURGE /x HTTP/1.1\nHost: a\n\n"},
	{name: "lenient query characters", raw: "GET /a?b={\"c\"}|d^e HTTP/1.1\nHost: a\n\n"},
	{name: "websocket", raw: "GET /ws HTTP/1.1\nHost: a\nConnection: keep-alive, Upgrade\nUpgrade: websocket\n\n"},
	{name: "h2c upgrade is not refused", raw: "GET / HTTP/1.1\nHost: a\nConnection: Upgrade, HTTP2-Settings\nUpgrade: h2c\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\n\n"},
	{name: "exactly max headers", raw: "GET / HTTP/1.1\nHost: a\n" + strings.Repeat("X: y\n", 99) + "\n"},
	{name: "exactly max URI", raw: "GET /" + strings.Repeat("a", 8191) + " HTTP/1.1\nHost: a\n\n"},
	{name: "small limits", raw: "GET /abc HTTP/1.1\nHost: a\n\n", lim: Limits{MaxURIBytes: 4, MaxHeaderBytes: 30, MaxHeaders: 1}},

	// Refused by what the scanner sees.
	{name: "URI too long", raw: "GET /" + strings.Repeat("a", 8192) + " HTTP/1.1\nHost: a\n\n", want: 414},
	{name: "URI too long, line unfinished", raw: "GET /" + strings.Repeat("a", 8192), want: 414},
	{name: "URI over small limit", raw: "GET /abcd HTTP/1.1\nHost: a\n\n", lim: Limits{MaxURIBytes: 4}, want: 414},
	{name: "head too large", raw: "GET / HTTP/1.1\nHost: a\nX: " + strings.Repeat("a", 70<<10) + "\n\n", want: 431},
	{name: "head too large, unfinished", raw: "GET / HTTP/1.1\nHost: a\nX: " + strings.Repeat("a", 70<<10), want: 431},
	{name: "head one byte over", raw: "GET /abc HTTP/1.1\nHost: a\n\n", lim: Limits{MaxHeaderBytes: 29}, want: 431},
	{name: "too many headers", raw: "GET / HTTP/1.1\nHost: a\n" + strings.Repeat("X: y\n", 100) + "\n", want: 431},
	{name: "too many headers, small limit", raw: "GET / HTTP/1.1\nHost: a\nX: y\n\n", lim: Limits{MaxHeaders: 1}, want: 431},
	{name: "NUL in value", raw: "GET / HTTP/1.1\nHost: a\nX: a\x00b\n\n", want: 400},
	{name: "NUL in target", raw: "GET /\x00 HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "bare CR in value", raw: "GET / HTTP/1.1\nHost: a\nX: a\rb\n\n", want: 400},
	{name: "bare CR ending a line", raw: "GET / HTTP/1.1\rHost: a\r\n\r\n", lf: true, want: 400},
	{name: "bare CR before final LF", raw: "GET / HTTP/1.1\r\nHost: a\r\n\rX", lf: true, want: 400},
	{name: "bare CR in lead", raw: "\rGET / HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "too many empty lines first", raw: strings.Repeat("\n", 40) + get, want: 400},
	{name: "method with bad character", raw: "G@T / HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "method starts with space", raw: " GET / HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "TLS handshake on plain port", raw: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", lf: true, want: 400},
	{name: "empty target", raw: "GET  HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "HTTP/0.9 request line", raw: "GET /\n\n", want: 400},
	{name: "method only", raw: "GET\n\n", want: 400},

	// Refused by the request line.
	{name: "no version", raw: "GET / \nHost: a\n\n", want: 400},
	{name: "two spaces before version", raw: "GET /  HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "trailing space after version", raw: "GET / HTTP/1.1 \nHost: a\n\n", want: 400},
	{name: "version lower case", raw: "GET / http/1.1\nHost: a\n\n", want: 400},
	{name: "version garbage", raw: "GET / HTTX/1.1\nHost: a\n\n", want: 400},
	{name: "version two digits", raw: "GET / HTTP/1.10\nHost: a\n\n", want: 400},
	{name: "HTTP/0.9", raw: "GET / HTTP/0.9\nHost: a\n\n", want: 400},
	{name: "HTTP/2.0 request", raw: "GET / HTTP/2.0\nHost: a\n\n", want: 400},
	{name: "HTTP/1.2", raw: "GET / HTTP/1.2\nHost: a\n\n", want: 505},
	{name: "HTTP/3.0", raw: "GET / HTTP/3.0\nHost: a\n\n", want: 505},
	{name: "CONNECT", raw: "CONNECT a.example:443 HTTP/1.1\nHost: a.example:443\n\n", want: 405},
	{name: "TRACE", raw: "TRACE / HTTP/1.1\nHost: a\n\n", want: 405},
	{name: "trace in lower case", raw: "trace / HTTP/1.1\nHost: a\n\n", want: 405},
	{name: "preface refused by default", raw: "PRI * HTTP/2.0\n\nSM\n\n", want: 400},
	{name: "PRI over HTTP/1.1", raw: "PRI * HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "preface with fields", raw: "PRI * HTTP/2.0\nHost: a\n\n", want: 400},
	{name: "asterisk with GET", raw: "GET * HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "authority-form with GET", raw: "GET a.example:80 HTTP/1.1\nHost: a.example\n\n", want: 400},
	{name: "relative target", raw: "GET x/y HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "fragment in target", raw: "GET /a#b HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "non-ASCII target", raw: "GET /caf\xc3\xa9 HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "control byte in target", raw: "GET /a\x01b HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "DEL in target", raw: "GET /a\x7fb HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "absolute-form mismatch", raw: "GET http://evil.example/ HTTP/1.1\nHost: a.example\n\n", want: 400},
	{name: "absolute-form port mismatch", raw: "GET http://a.example:8080/ HTTP/1.1\nHost: a.example\n\n", want: 400},
	{name: "absolute-form https port 80", raw: "GET https://a.example/ HTTP/1.1\nHost: a.example:80\n\n", want: 400},
	{name: "absolute-form userinfo", raw: "GET http://u@a.example/ HTTP/1.1\nHost: a.example\n\n", want: 400},
	{name: "absolute-form other scheme", raw: "GET ftp://a.example/ HTTP/1.1\nHost: a.example\n\n", want: 400},
	{name: "absolute-form empty authority", raw: "GET http:///x HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "absolute-form bad authority", raw: "GET http://a:b/ HTTP/1.1\nHost: a\n\n", want: 400},
	{name: "absolute-form without Host", raw: "GET http://a.example/ HTTP/1.1\n\n", want: 400},

	// Refused by the fields.
	{name: "CL and TE", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n", want: 400},
	{name: "TE and CL", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 5\n\n", want: 400},
	{name: "TE gzip", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\n\n", want: 400},
	{name: "TE gzip, chunked", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n", want: 400},
	{name: "TE chunked, chunked", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, chunked\n\n", want: 400},
	{name: "TE identity", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity\n\n", want: 400},
	{name: "TE empty", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding:\n\n", want: 400},
	{name: "TE twice", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n", want: 400},
	{name: "TE with trailing junk", raw: "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked;q=1\n\n", want: 400},
	{name: "TE on HTTP/1.0", raw: "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n", want: 400},
	{name: "CL twice, equal", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 5\n\n", want: 400},
	{name: "CL twice, different", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 5\ncontent-length: 6\n\n", want: 400},
	{name: "CL list", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 5, 5\n\n", want: 400},
	{name: "CL negative", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: -1\n\n", want: 400},
	{name: "CL plus sign", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: +5\n\n", want: 400},
	{name: "CL hex", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 0x5\n\n", want: 400},
	{name: "CL empty", raw: "POST / HTTP/1.1\nHost: a\nContent-Length:\n\n", want: 400},
	{name: "CL inner space", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 1 2\n\n", want: 400},
	{name: "CL overflow", raw: "POST / HTTP/1.1\nHost: a\nContent-Length: 9223372036854775808\n\n", want: 400},
	{name: "obs-fold", raw: "GET / HTTP/1.1\nHost: a\nX: a\n b\n\n", want: 400},
	{name: "obs-fold with tab", raw: "GET / HTTP/1.1\nHost: a\nX: a\n\tb\n\n", want: 400},
	{name: "whitespace before first field", raw: "GET / HTTP/1.1\n Host: a\n\n", want: 400},
	{name: "space before colon", raw: "GET / HTTP/1.1\nHost : a\n\n", want: 400},
	{name: "tab before colon", raw: "GET / HTTP/1.1\nHost: a\nContent-Length\t: 5\n\n", want: 400},
	{name: "space in name", raw: "GET / HTTP/1.1\nHost: a\nX Y: 1\n\n", want: 400},
	{name: "bad character in name", raw: "GET / HTTP/1.1\nHost: a\nX(y): 1\n\n", want: 400},
	{name: "non-ASCII name", raw: "GET / HTTP/1.1\nHost: a\nX\xc3\xa9: 1\n\n", want: 400},
	{name: "empty name", raw: "GET / HTTP/1.1\nHost: a\n: x\n\n", want: 400},
	{name: "no colon", raw: "GET / HTTP/1.1\nHost: a\nX-No-Colon\n\n", want: 400},
	{name: "control byte in value", raw: "GET / HTTP/1.1\nHost: a\nX: a\x01b\n\n", want: 400},
	{name: "DEL in value", raw: "GET / HTTP/1.1\nHost: a\nX: a\x7fb\n\n", want: 400},
	{name: "escape in value", raw: "GET / HTTP/1.1\nHost: a\nX: \x1b[31m\n\n", want: 400},
	{name: "missing Host", raw: "GET / HTTP/1.1\nX: y\n\n", want: 400},
	{name: "two Hosts", raw: "GET / HTTP/1.1\nHost: a\nHost: a\n\n", want: 400},
	{name: "two Hosts, case", raw: "GET / HTTP/1.1\nHost: a\nhOST: b\n\n", want: 400},
	{name: "Host empty", raw: "GET / HTTP/1.1\nHost:\n\n", want: 400},
	{name: "Host with space", raw: "GET / HTTP/1.1\nHost: a b\n\n", want: 400},
	{name: "Host with userinfo", raw: "GET / HTTP/1.1\nHost: u@a\n\n", want: 400},
	{name: "Host with path", raw: "GET / HTTP/1.1\nHost: a/b\n\n", want: 400},
	{name: "Host empty port", raw: "GET / HTTP/1.1\nHost: a:\n\n", want: 400},
	{name: "Host port too large", raw: "GET / HTTP/1.1\nHost: a:65536\n\n", want: 400},
	{name: "Host port not digits", raw: "GET / HTTP/1.1\nHost: a:8o\n\n", want: 400},
	{name: "Host two colons", raw: "GET / HTTP/1.1\nHost: a:1:2\n\n", want: 400},
	{name: "Host bad IPv6", raw: "GET / HTTP/1.1\nHost: [zz::1]\n\n", want: 400},
	{name: "Host unclosed IPv6", raw: "GET / HTTP/1.1\nHost: [::1\n\n", want: 400},
	{name: "Host bad percent", raw: "GET / HTTP/1.1\nHost: a%4\n\n", want: 400},
	{name: "Host comma list", raw: "GET / HTTP/1.1\nHost: a, b\n\n", want: 400},
}

func TestParseRequestHead(t *testing.T) {
	for _, tt := range headTests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if !tt.lf {
				raw = crlf(raw)
			}
			var h Head
			n, err := ParseRequestHead([]byte(raw), tt.lim, &h)
			got := 0
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v is not an *Error matching ErrMalformed", err)
				}
				got = e.Status
			} else if n == 0 {
				t.Fatalf("head incomplete; want %d", tt.want)
			}
			if got != tt.want {
				t.Fatalf("status %d (%v), want %d", got, err, tt.want)
			}
			// The same verdict, or "need more", for every prefix: refusals
			// never depend on how the bytes arrive.
			step := max(1, len(raw)/512) // long heads: a sample of prefixes
			for i := 0; i < len(raw); i += step {
				var h Head
				pn, perr := ParseRequestHead([]byte(raw[:i]), tt.lim, &h)
				switch {
				case perr == nil && pn == 0:
				case perr != nil && err != nil && perr.Error() == err.Error():
				case perr == nil && err == nil && pn == n:
				default:
					t.Fatalf("prefix of %d bytes: (%d, %v), whole: (%d, %v)", i, pn, perr, n, err)
				}
			}
		})
	}
}

func TestParseRequestHeadFacts(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		lim  Limits
		want Head // byte slices compared as strings
	}{
		{
			name: "keep-alive GET",
			raw:  crlf("GET /p?q HTTP/1.1\nHost: a.example\nAccept: */*\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/p?q"), Minor: 1, Host: []byte("a.example"), ContentLength: -1, Fields: 2},
		},
		{
			name: "close",
			raw:  crlf("POST /f HTTP/1.1\nHost: a\nConnection: foo, CLOSE\nContent-Length: 12\n\n"),
			want: Head{Method: []byte("POST"), Target: []byte("/f"), Minor: 1, Host: []byte("a"), ContentLength: 12, Close: true, Fields: 3},
		},
		{
			name: "HTTP/1.0 closes by default",
			raw:  crlf("GET / HTTP/1.0\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/"), Minor: 0, ContentLength: -1, Close: true},
		},
		{
			name: "HTTP/1.0 keep-alive",
			raw:  crlf("GET / HTTP/1.0\nConnection: Keep-Alive\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/"), Minor: 0, ContentLength: -1, Fields: 1},
		},
		{
			name: "chunked",
			raw:  crlf("\nPUT /u HTTP/1.1\nTransfer-Encoding: chunked\nHost:  b:81 \n\n"),
			want: Head{Method: []byte("PUT"), Target: []byte("/u"), Minor: 1, Host: []byte("b:81"), ContentLength: -1, Chunked: true, Fields: 2, Lead: 2},
		},
		{
			name: "absolute-form keeps the Host sent",
			raw:  crlf("GET http://A.example:80/x HTTP/1.1\nHost: a.EXAMPLE\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("http://A.example:80/x"), Minor: 1, Host: []byte("a.EXAMPLE"), AbsoluteForm: true, ContentLength: -1, Fields: 1},
		},
		{
			name: "websocket",
			raw:  crlf("GET /ws HTTP/1.1\nHost: a\nUpgrade: WebSocket\nConnection: Upgrade\nSec-WebSocket-Version: 13\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/ws"), Minor: 1, Host: []byte("a"), ContentLength: -1, WebSocket: true, Fields: 4},
		},
		{
			name: "upgrade without Connection: upgrade",
			raw:  crlf("GET /ws HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/ws"), Minor: 1, Host: []byte("a"), ContentLength: -1, Fields: 2},
		},
		{
			name: "only the first Upgrade field counts, as for the proxy",
			raw:  crlf("GET /ws HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade: h2c\nUpgrade: websocket\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/ws"), Minor: 1, Host: []byte("a"), ContentLength: -1, Fields: 4},
		},
		{
			name: "h2c upgrade",
			raw:  crlf("GET / HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade: h2c\n\n"),
			want: Head{Method: []byte("GET"), Target: []byte("/"), Minor: 1, Host: []byte("a"), ContentLength: -1, Fields: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Head
			n, err := ParseRequestHead([]byte(tt.raw), tt.lim, &h)
			if err != nil || n == 0 {
				t.Fatalf("ParseRequestHead = (%d, %v), want a head", n, err)
			}
			if got, want := describe(&h), describe(&tt.want); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func describe(h *Head) string {
	var b strings.Builder
	b.WriteString("method=" + string(h.Method) + " target=" + string(h.Target) + " host=" + string(h.Host))
	b.WriteString(" hostnil=" + yes(h.Host == nil))
	for _, f := range []struct {
		name string
		v    bool
	}{{"abs", h.AbsoluteForm}, {"chunked", h.Chunked}, {"close", h.Close}, {"ws", h.WebSocket}} {
		b.WriteString(" " + f.name + "=" + yes(f.v))
	}
	b.WriteString(" minor=" + itoa(int64(h.Minor)) + " cl=" + itoa(h.ContentLength) + " fields=" + itoa(int64(h.Fields)) + " lead=" + itoa(int64(h.Lead)))
	return b.String()
}

func yes(v bool) string {
	if v {
		return "y"
	}
	return "n"
}

func itoa(n int64) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestParseRequestHeadLength(t *testing.T) {
	raw := crlf("\nGET / HTTP/1.1\nHost: a\n\n") + "GET /next"
	var h Head
	n, err := ParseRequestHead([]byte(raw), Limits{}, &h)
	if want := len(crlf("\nGET / HTTP/1.1\nHost: a\n\n")); n != want || err != nil {
		t.Fatalf("ParseRequestHead = (%d, %v), want (%d, nil)", n, err, want)
	}
	if h.Lead != 2 {
		t.Errorf("Lead = %d, want 2", h.Lead)
	}
}

func TestParseRequestHeadAllocs(t *testing.T) {
	raw := []byte(typicalHead)
	var h Head
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := ParseRequestHead(raw, Limits{}, &h); n == 0 || err != nil {
			t.Fatalf("ParseRequestHead = (%d, %v)", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per head = %v, want 0", allocs)
	}
	bad := []byte(crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 1\nTransfer-Encoding: chunked\n\n"))
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := ParseRequestHead(bad, Limits{}, &h); err == nil {
			t.Fatal("accepted CL and TE")
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per refusal = %v, want 0", allocs)
	}
}

// typicalHead is a browser-like request head of about 400 bytes.
var typicalHead = crlf("GET /static/app.js?v=1714 HTTP/1.1\n" +
	"Host: www.example.com\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\n" +
	"Accept: */*\n" +
	"Accept-Language: en-US,en;q=0.5\n" +
	"Accept-Encoding: gzip, deflate, br\n" +
	"Referer: https://www.example.com/\n" +
	"Connection: keep-alive\n" +
	"Cookie: session=4f1c2a9e8b7d6c5f; theme=dark\n" +
	"Sec-Fetch-Dest: script\n" +
	"Sec-Fetch-Mode: no-cors\n" +
	"\n")

func BenchmarkParseHead(b *testing.B) {
	raw := []byte(typicalHead)
	var h Head
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if n, err := ParseRequestHead(raw, Limits{}, &h); n == 0 || err != nil {
			b.Fatalf("ParseRequestHead = (%d, %v)", n, err)
		}
	}
}
