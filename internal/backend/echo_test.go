package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func echo(t *testing.T, b *testBackend, req *http.Request) echoReply {
	t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("echo: got %d %q, want 200 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got echoReply
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestEchoReportsTheRequest(t *testing.T) {
	b := startBackend(t, "b1")
	const body = `{"hello": "world"}`
	req, _ := http.NewRequestWithContext(testContext(t), "PUT", b.url+"/echo?a=1&a=2&b=x", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	got := echo(t, b, req)

	sum := sha256.Sum256([]byte(body))
	host := strings.TrimPrefix(b.url, "http://")
	want := echoReply{
		Backend:  "b1",
		Method:   "PUT",
		URI:      "/echo?a=1&a=2&b=x",
		Path:     "/echo",
		RawQuery: "a=1&a=2&b=x",
		Query:    map[string][]string{"a": {"1", "2"}, "b": {"x"}},
		Proto:    "HTTP/1.1",
		Host:     host,
		Headers: http.Header{
			"Content-Type":    {"application/json"},
			"X-Multi":         {"one", "two"},
			"Content-Length":  {"18"},
			"User-Agent":      {"Go-http-client/1.1"},
			"Accept-Encoding": {"gzip"},
		},
		ContentLength: int64(len(body)),
		Body:          body,
		BodyBytes:     int64(len(body)),
		BodySHA256:    hex.EncodeToString(sum[:]),
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(echoReply{}, "RemoteAddr")); diff != "" {
		t.Errorf("echo (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(got.RemoteAddr, "127.0.0.1:") {
		t.Errorf("remote_addr: got %q, want 127.0.0.1:PORT", got.RemoteAddr)
	}
}

func TestEchoSubpathAndRequestTrailers(t *testing.T) {
	b := startBackend(t, "b1")
	// An unknown-length body goes chunked, which is what carries trailers.
	req, _ := http.NewRequestWithContext(testContext(t), "POST", b.url+"/echo/a/b", io.MultiReader(strings.NewReader("abc")))
	req.Trailer = http.Header{"X-Sum": {"42"}}
	got := echo(t, b, req)
	if got.Path != "/echo/a/b" || got.Body != "abc" || got.ContentLength != -1 {
		t.Errorf("got path %q body %q content_length %d, want %q %q -1", got.Path, got.Body, got.ContentLength, "/echo/a/b", "abc")
	}
	if want := []string{"chunked"}; !cmp.Equal(got.TransferEncoding, want) {
		t.Errorf("transfer_encoding: got %q, want %q", got.TransferEncoding, want)
	}
	if want := (http.Header{"X-Sum": {"42"}}); !cmp.Equal(got.Trailers, want) {
		t.Errorf("trailers: got %v, want %v", got.Trailers, want)
	}
}

// patternReader yields n bytes of repeating a–z without holding them.
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	for i := range b {
		b[i] = 'a' + byte((p.off+int64(i))%26)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func TestEchoStreamsALargeUpload(t *testing.T) {
	b := startBackend(t, "b1")
	const size = 100 << 20
	req, _ := http.NewRequestWithContext(testContext(t), "POST", b.url+"/echo", &patternReader{n: size})
	got := echo(t, b, req)
	if got.BodyBytes != size || !got.BodyTruncated || len(got.Body) != maxEchoBody {
		t.Errorf("got body_bytes %d, body_truncated %v, %d bytes of body; want %d, true, %d",
			got.BodyBytes, got.BodyTruncated, len(got.Body), size, maxEchoBody)
	}
	if got.Body != alphabet(maxEchoBody) {
		t.Error("body: got something else than the first MiB of what was sent")
	}
}
