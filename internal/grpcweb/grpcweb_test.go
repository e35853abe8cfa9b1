package grpcweb

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

func TestOf(t *testing.T) {
	for ct, want := range map[string]Mode{
		"application/grpc-web":                  Binary,
		"application/grpc-web+proto":            Binary,
		"Application/GRPC-Web+json":             Binary,
		"application/grpc-web; charset=utf-8":   Binary,
		"application/grpc-web-text":             Text,
		"application/grpc-web-text+proto":       Text,
		"application/grpc":                      None,
		"application/grpc+proto":                None,
		"application/grpc-webx":                 None,
		"application/grpc-web-textual":          None,
		"text/plain":                            None,
		"":                                      None,
		"application/grpc-web-text; foo=bar":    Text,
		"application/grpc-web-text+thrift; x=1": Text,
	} {
		if got := Of(ct); got != want {
			t.Errorf("Of(%q) = %d, want %d", ct, got, want)
		}
	}
}

func TestRequestHeader(t *testing.T) {
	h := http.Header{"Content-Type": {"application/grpc-web-text+proto"}, "Content-Length": {"12"}, "X-Grpc-Web": {"1"}}
	Text.Request(h)
	if got := h.Get("Content-Type"); got != "application/grpc+proto" {
		t.Errorf("content-type %q, want application/grpc+proto", got)
	}
	if h.Get("Te") != "trailers" || h.Get("Content-Length") != "" {
		t.Errorf("te %q, content-length %q: want trailers and none", h.Get("Te"), h.Get("Content-Length"))
	}
}

// TestTextBody decodes base64 bodies as clients send them: whole, in
// pieces each padded on its own, and read a byte at a time; and refuses
// what is not base64 or ends mid-quantum.
func TestTextBody(t *testing.T) {
	msg := bytes.Repeat([]byte("gRPC-Web \x00\x01\xff"), 700) // past one internal buffer
	pieces := base64.StdEncoding.EncodeToString(msg[:1]) + base64.StdEncoding.EncodeToString(msg[1:5]) +
		base64.StdEncoding.EncodeToString(msg[5:])
	for name, in := range map[string]string{
		"whole":  base64.StdEncoding.EncodeToString(msg),
		"pieces": pieces,
	} {
		for _, slow := range []bool{false, true} {
			var r io.Reader = strings.NewReader(in)
			if slow {
				r = iotest.OneByteReader(r)
			}
			dr, n := Text.Body(r, int64(len(in)))
			if n != -1 {
				t.Errorf("%s: length %d, want -1 (unknown once decoded)", name, n)
			}
			got, err := io.ReadAll(iotest.HalfReader(dr))
			if err != nil || !bytes.Equal(got, msg) {
				t.Errorf("%s (one byte at a time: %v): %d bytes, %v; want the %d bytes sent", name, slow, len(got), err, len(msg))
			}
		}
	}
	for _, bad := range []string{"AAA!", "AAAA====", "QUJD" + "QQ"} {
		dr, _ := Text.Body(strings.NewReader(bad), -1)
		if _, err := io.ReadAll(dr); !errors.Is(err, ErrBadText) {
			t.Errorf("body %q: %v, want ErrBadText", bad, err)
		}
	}
	if r, n := Binary.Body(strings.NewReader("x"), 1); n != 1 || r == nil {
		t.Errorf("Binary.Body changed the body: length %d", n)
	}
}

// gRPCResponse is what the HTTP/2 transport gives for a gRPC backend's
// answer: the trailers land in resp.Trailer once the body has ended.
func gRPCResponse(body io.Reader, trailer http.Header, err error) *http.Response {
	resp := &http.Response{StatusCode: 200, ProtoMajor: 2, ContentLength: 42,
		Header: http.Header{"Content-Type": {"application/grpc+proto"}, "Content-Length": {"42"}, "Trailer": {"Grpc-Status"}}}
	resp.Body = &transportBody{r: body, resp: resp, trailer: trailer, err: err}
	return resp
}

type transportBody struct {
	r       io.Reader
	resp    *http.Response
	trailer http.Header
	err     error
}

func (b *transportBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		if b.err != nil {
			return n, b.err
		}
		b.resp.Trailer = b.trailer
	}
	return n, err
}

func (b *transportBody) Close() error { return nil }

func TestResponse(t *testing.T) {
	msgs := append([]byte{0, 0, 0, 0, 3}, "abc"...)
	msgs = append(msgs, 0, 0, 0, 0, 1, 'z')
	trailer := http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"ok"}, "X-Served-By": {"a", "b"}}
	wantTail := "grpc-message: ok\r\ngrpc-status: 0\r\nx-served-by: a\r\nx-served-by: b\r\n"
	want := append(append([]byte{}, msgs...), 0x80, 0, 0, 0, byte(len(wantTail)))
	want = append(want, wantTail...)

	for _, m := range []Mode{Binary, Text} {
		orig := gRPCResponse(iotest.OneByteReader(bytes.NewReader(msgs)), trailer, nil)
		out := m.Response(orig, "application/grpc-web"+map[Mode]string{Binary: "", Text: "-text"}[m]+"+proto", "")
		if out == orig {
			t.Fatalf("mode %d: the transport's response was changed in place", m)
		}
		wantCT := map[Mode]string{Binary: "application/grpc-web+proto", Text: "application/grpc-web-text+proto"}[m]
		if out.Header.Get("Content-Type") != wantCT || out.ContentLength != -1 || out.Header.Get("Content-Length") != "" ||
			out.Header.Get("Trailer") != "" || out.Trailer != nil {
			t.Fatalf("mode %d: header %v, length %d, trailer %v", m, out.Header, out.ContentLength, out.Trailer)
		}
		if orig.Header.Get("Content-Type") != "application/grpc+proto" {
			t.Errorf("mode %d: the transport's header was changed", m)
		}
		got, err := io.ReadAll(iotest.HalfReader(out.Body))
		if err != nil {
			t.Fatal(err)
		}
		if m == Text {
			if got, err = decodeQuanta(got); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("mode %d: body\n%q\nwant\n%q", m, got, want)
		}
		if Broken(out.Body) != nil {
			t.Errorf("mode %d: Broken = %v after a whole response", m, Broken(out.Body))
		}
	}

	// Cut off before the trailers: UNAVAILABLE in their place.
	cut := errors.New("stream reset")
	orig := gRPCResponse(bytes.NewReader(msgs), nil, cut)
	out := Binary.Response(orig, "application/grpc-web", "")
	got, err := io.ReadAll(out.Body)
	if err != nil || !bytes.HasPrefix(got, msgs) {
		t.Fatalf("cut: %q, %v", got, err)
	}
	tail := string(got[len(msgs)+5:])
	if got[len(msgs)] != 0x80 || !strings.Contains(tail, "grpc-status: 14\r\n") || !strings.Contains(tail, "grpc-message: sluice: the backend's stream broke off: stream reset\r\n") {
		t.Errorf("cut: trailers' frame %q", got[len(msgs):])
	}
	if Broken(out.Body) != cut {
		t.Errorf("cut: Broken = %v, want %v", Broken(out.Body), cut)
	}

}

// TestNotGRPC: an answer that is not gRPC (an error page, a gRPC content
// type with a status other than 200) becomes a trailers-only one, its
// HTTP status kept and mapped to a gRPC status, the start of its body as
// the message; one already in gRPC-Web passes as it is.
func TestNotGRPC(t *testing.T) {
	long := strings.Repeat("x", 3000)
	for _, c := range []struct {
		status      int
		ct, ce      string
		body        string
		grpc        string
		wantMessage string
	}{
		{503, "text/plain", "", "upstream overloaded\n", "14", "upstream overloaded"},
		{404, "text/html", "", "<h1>no route</h1>", "12", "<h1>no route</h1>"},
		{400, "text/plain", "", "", "13", "Bad Request"},
		{200, "text/html", "", "welcome", "2", "welcome"},
		{500, "application/grpc", "", "", "2", "Internal Server Error"},
		{429, "text/plain", "", "slow down: 100%", "14", "slow down: 100%25"},
		{502, "text/plain", "gzip", "\x1f\x8b junk", "14", "Bad Gateway"},
		{504, "text/plain", "", long, "14", long[:maxMessage]},
	} {
		h := http.Header{"Content-Type": {c.ct}, "Content-Length": {"99"}, "X-Served-By": {"b1"}}
		if c.ce != "" {
			h.Set("Content-Encoding", c.ce)
		}
		page := &http.Response{StatusCode: c.status, Header: h, ContentLength: 99, Body: io.NopCloser(strings.NewReader(c.body))}
		out := Binary.Response(page, "application/grpc-web+proto", "")
		b, _ := io.ReadAll(out.Body)
		if out.StatusCode != c.status || len(b) != 0 || out.ContentLength != 0 || out.Header.Get("Content-Length") != "" ||
			out.Header.Get("Content-Encoding") != "" || out.Header.Get("X-Served-By") != "b1" {
			t.Errorf("%d %s: status %d, body %q, length %d, header %v", c.status, c.ct, out.StatusCode, b, out.ContentLength, out.Header)
		}
		if got := out.Header.Get("Content-Type"); got != "application/grpc-web+proto" {
			t.Errorf("%d %s: content type %q", c.status, c.ct, got)
		}
		if got := out.Header.Get("Grpc-Status"); got != c.grpc {
			t.Errorf("%d %s: grpc-status %q, want %s", c.status, c.ct, got, c.grpc)
		}
		if got := out.Header.Get("Grpc-Message"); got != c.wantMessage {
			t.Errorf("%d %s: grpc-message %.40q…, want %.40q…", c.status, c.ct, got, c.wantMessage)
		}
		if page.Header.Get("Content-Type") != c.ct {
			t.Errorf("%d %s: the transport's header was changed", c.status, c.ct)
		}
	}
	// Text form, when the request asked for it.
	page := &http.Response{StatusCode: 503, Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("down"))}
	if out := Binary.Response(page, "application/grpc-web", "application/grpc-web-text"); out.Header.Get("Content-Type") != "application/grpc-web-text" || out.Header.Get("Grpc-Status") != "14" {
		t.Errorf("text form: header %v", out.Header)
	}
	// Already gRPC-Web: untouched.
	web := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc-web+proto"}}, Body: io.NopCloser(strings.NewReader("x"))}
	if Text.Response(web, "application/grpc-web-text", "") != web {
		t.Error("a gRPC-Web response was translated again")
	}
}

// TestAnswer: the answer's form is the first gRPC-Web type Accept names,
// else the request's.
func TestAnswer(t *testing.T) {
	for _, c := range []struct {
		m      Mode
		accept string
		want   Mode
	}{
		{Binary, "", Binary},
		{Text, "", Text},
		{Binary, "application/grpc-web-text", Text},
		{Text, "application/grpc-web", Binary},
		{Text, "application/grpc-web+proto", Binary},
		{Binary, "Application/GRPC-Web-Text+proto; q=1", Text},
		{Binary, "text/html, application/grpc-web-text", Text},
		{Text, "application/grpc-web, application/grpc-web-text", Binary},
		{Text, "*/*", Text},
		{Binary, "application/grpc-webby", Binary},
	} {
		if got := c.m.Answer(c.accept); got != c.want {
			t.Errorf("mode %d, Accept %q: %d, want %d", c.m, c.accept, got, c.want)
		}
	}

	// Through Response: a binary request asking for text gets text.
	msgs := append([]byte{0, 0, 0, 0, 1}, 'a')
	out := Binary.Response(gRPCResponse(bytes.NewReader(msgs), http.Header{"Grpc-Status": {"0"}}, nil), "application/grpc-web+proto", "application/grpc-web-text")
	if got := out.Header.Get("Content-Type"); got != "application/grpc-web-text+proto" {
		t.Errorf("content type %q, want application/grpc-web-text+proto", got)
	}
	b, _ := io.ReadAll(out.Body)
	if d, err := decodeQuanta(b); err != nil || !bytes.HasPrefix(d, msgs) {
		t.Errorf("body %q is not the messages in base64 (%v)", b, err)
	}
}

func TestHTTPStatus(t *testing.T) {
	for status, want := range map[int]int{400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14, 200: 2, 500: 2, 418: 2} {
		if got := HTTPStatus(status); got != want {
			t.Errorf("HTTPStatus(%d) = %d, want %d", status, got, want)
		}
	}
}

// decodeQuanta decodes base64 four characters at a time, as gRPC-Web
// clients do: padding may end any quantum.
func decodeQuanta(b []byte) ([]byte, error) {
	if len(b)%4 != 0 {
		return nil, errors.New("base64 text not in whole quanta")
	}
	var out []byte
	for i := 0; i < len(b); i += 4 {
		d, err := base64.StdEncoding.DecodeString(string(b[i : i+4]))
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	return out, nil
}

// chunks returns one slice per Read, as a backend's DATA frames come.
type chunks [][]byte

func (c *chunks) Read(p []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	if (*c)[0] = (*c)[0][n:]; len((*c)[0]) == 0 {
		*c = (*c)[1:]
	}
	return n, nil
}

// TestTextResponseStreams: in text mode each message reaches the client
// whole as soon as the backend sent it, not held back to fill a group of
// three bytes until the next one comes.
func TestTextResponseStreams(t *testing.T) {
	f1 := append([]byte{0, 0, 0, 0, 14}, "fourteen bytes"...) // 19 bytes: 1 past a group
	f2 := append([]byte{0, 0, 0, 0, 1}, 'x')
	src := chunks{f1[:7], f1[7:], f2}
	out := Text.Response(gRPCResponse(&src, http.Header{"Grpc-Status": {"0"}}, nil), "application/grpc-web-text", "")
	buf := make([]byte, 1<<10)
	var sent []byte
	for i, upTo := range [][]byte{f1[:6], f1} {
		n, err := out.Body.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, buf[:n]...)
		got, err := decodeQuanta(sent)
		if err != nil || !bytes.Equal(got, upTo) {
			t.Fatalf("read %d: the client could decode %q (%v), want %q", i, got, err, upTo)
		}
	}
	rest, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	all, err := decodeQuanta(append(sent, rest...))
	want := append(append(append([]byte{}, f1...), f2...), 0x80, 0, 0, 0, 16)
	want = append(want, "grpc-status: 0\r\n"...)
	if err != nil || !bytes.Equal(all, want) {
		t.Errorf("whole body %q (%v), want %q", all, err, want)
	}
}

// TestTrailersOnly: an answer with its status in the header keeps an
// empty body; only its content type changes.
func TestTrailersOnly(t *testing.T) {
	for _, m := range []Mode{Binary, Text} {
		resp := &http.Response{StatusCode: 200, ContentLength: 0, Body: http.NoBody,
			Header: http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"5"}, "Grpc-Message": {"no such thing"}}}
		out := m.Response(resp, m.ContentType()+"+proto", "")
		b, _ := io.ReadAll(out.Body)
		if len(b) != 0 || out.Header.Get("Grpc-Status") != "5" || out.Header.Get("Content-Type") != m.ContentType()+"+proto" {
			t.Errorf("mode %d: body %q, header %v; want it empty, grpc-status 5 in the header", m, b, out.Header)
		}
	}
}
