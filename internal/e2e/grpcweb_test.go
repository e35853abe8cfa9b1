package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	bin "encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/grpcweb"
)

// decoded drops the second result of grpcweb's decoder (the length).
func decoded(r io.Reader, _ int64) io.Reader { return r }

// webReply is a gRPC-Web response as a browser's client library reads it:
// the header, the messages, and the trailers from the body's last frame
// (or from the header, for a trailers-only answer).
type webReply struct {
	status   int
	proto    int
	header   http.Header
	messages [][]byte
	trailer  http.Header
	bodyLen  int // the body's length as received
}

// code is the call's grpc-status: from the trailers' frame, else from the
// header; -1 when neither has one.
func (r webReply) code() int {
	v := r.trailer.Get("Grpc-Status")
	if v == "" {
		v = r.header.Get("Grpc-Status")
	}
	n := -1
	fmt.Sscan(v, &n)
	return n
}

// webFrame frames one message as gRPC (and gRPC-Web) does.
func webFrame(msg []byte) []byte {
	f := make([]byte, 5, 5+len(msg))
	bin.BigEndian.PutUint32(f[1:], uint32(len(msg)))
	return append(f, msg...)
}

// parseWebBody splits a gRPC-Web response body into its messages and its
// trailers' frame; it fails on anything after that frame or a frame cut
// short.
func parseWebBody(b []byte) (msgs [][]byte, trailer http.Header, err error) {
	for len(b) > 0 {
		if trailer != nil {
			return nil, nil, fmt.Errorf("%d bytes after the trailers' frame", len(b))
		}
		if len(b) < 5 {
			return nil, nil, fmt.Errorf("frame header cut short: % x", b)
		}
		flag, n := b[0], int(bin.BigEndian.Uint32(b[1:5]))
		if len(b) < 5+n {
			return nil, nil, fmt.Errorf("frame of %d bytes cut short at %d", n, len(b)-5)
		}
		payload := b[5 : 5+n]
		b = b[5+n:]
		switch flag {
		case 0:
			msgs = append(msgs, payload)
		case 0x80:
			mh, err := textproto.NewReader(bufio.NewReader(strings.NewReader(string(payload) + "\r\n"))).ReadMIMEHeader()
			if err != nil {
				return nil, nil, fmt.Errorf("trailers' frame %q: %v", payload, err)
			}
			trailer = http.Header(mh)
		default:
			return nil, nil, fmt.Errorf("frame flag %#x", flag)
		}
	}
	return msgs, trailer, nil
}

// webCall makes one gRPC-Web call to url with c: text selects
// application/grpc-web-text. msgs are the request's messages.
func webCall(t *testing.T, c *http.Client, url string, text bool, msgs ...proto.Message) webReply {
	t.Helper()
	var body []byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, webFrame(b)...)
	}
	ct := "application/grpc-web+proto"
	if text {
		ct = "application/grpc-web-text+proto"
		body = []byte(base64.StdEncoding.EncodeToString(body))
	}
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("X-Grpc-Web", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the body: %v (read %q)", url, err, raw)
	}
	r := webReply{status: resp.StatusCode, proto: resp.ProtoMajor, header: resp.Header, trailer: http.Header{}, bodyLen: len(raw)}
	if len(resp.Trailer) > 0 {
		t.Errorf("POST %s: HTTP trailers %v: gRPC-Web carries them in the body", url, resp.Trailer)
	}
	if text {
		if raw, err = io.ReadAll(decoded(grpcweb.Text.Body(bytes.NewReader(raw), -1))); err != nil {
			t.Fatalf("POST %s: body not base64: %v", url, err)
		}
	}
	msgsOut, tr, err := parseWebBody(raw)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	r.messages = msgsOut
	if tr != nil {
		r.trailer = tr
	}
	return r
}

// grpcWebSluice runs a sluice with a grpc_web pool in front of a gRPC
// backend: listener "public" (HTTP/1.1 and h2c) and "tls" (HTTP/1.1 and
// HTTP/2 by ALPN, HTTP/3 over QUIC); it returns the clients to try, by name, and their URLs.
func grpcWebSluice(t *testing.T, backend string) (map[string]*http.Client, map[string]string, *sluice) {
	p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true, GRPCWeb: true,
		Backends: []config.Backend{{Address: backend}}}
	ca := newTestCA(t, "e2e CA")
	site := ca.issue(t, leafOpts{names: []string{"a.test"}}).write(t, t.TempDir(), "a")
	cfg := oneListener(p)
	cfg.Listeners[0].H2C = true
	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "tls", Address: "127.0.0.1:0", Pool: "grpc",
		TLS: &config.TLS{Certificates: []config.Certificate{site}}, HTTP3: true})
	s := startSluice(t, cfg)
	base := clientTLS(ca, "a.test")
	clients := map[string]*http.Client{
		"HTTP/1.1":          newClient(t),
		"h2c":               h2cClient(t),
		"HTTP/1.1 over TLS": httpsClient(t, s.Addr("tls"), base, false, true),
		"HTTP/2 over TLS":   httpsClient(t, s.Addr("tls"), base, true, true),
		"HTTP/3":            newH3Client(t, s.Addr("tls"), ca).Client,
	}
	urls := map[string]string{
		"HTTP/1.1":          s.URL("public"),
		"h2c":               s.URL("public"),
		"HTTP/1.1 over TLS": "https://a.test",
		"HTTP/2 over TLS":   "https://a.test",
		"HTTP/3":            "https://a.test",
	}
	return clients, urls, s
}

// TestGRPCWeb: a pool with grpc_web answers gRPC-Web calls (binary and
// text) over every client protocol from a plain gRPC backend: messages,
// the status and trailers in the body's last frame, errors, server
// streaming; and native gRPC to the same pool is untouched.
func TestGRPCWeb(t *testing.T) {
	addr, _, _ := startGRPCBackend(t)
	clients, urls, s := grpcWebSluice(t, addr)
	for _, name := range []string{"HTTP/1.1", "h2c", "HTTP/1.1 over TLS", "HTTP/2 over TLS", "HTTP/3"} {
		c, base := clients[name], urls[name]
		wantProto := 1
		switch {
		case strings.Contains(name, "2"):
			wantProto = 2
		case name == "HTTP/3":
			wantProto = 3
		}
		for _, text := range []bool{false, true} {
			mode := "binary"
			if text {
				mode = "text"
			}
			t.Run(name+"/"+mode, func(t *testing.T) {
				r := webCall(t, c, base+"/grpc.testing.TestService/UnaryCall", text,
					&testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}})
				wantCT := "application/grpc-web+proto"
				if text {
					wantCT = "application/grpc-web-text+proto"
				}
				if r.status != 200 || r.proto != wantProto || r.header.Get("Content-Type") != wantCT {
					t.Fatalf("unary: HTTP/%d %d, content-type %q; want HTTP/%d 200, %q", r.proto, r.status, r.header.Get("Content-Type"), wantProto, wantCT)
				}
				if r.trailer.Get("Grpc-Status") != "0" || len(r.messages) != 1 {
					t.Fatalf("unary: grpc-status %d, %d messages, trailers %v; want 0 and one message", r.code(), len(r.messages), r.trailer)
				}
				var out testpb.SimpleResponse
				if err := proto.Unmarshal(r.messages[0], &out); err != nil || string(out.Payload.GetBody()) != "ping" {
					t.Fatalf("unary: response %v, %v; want the payload echoed", &out, err)
				}
				if got := r.trailer.Get("X-Served-By"); got != "grpc-backend" {
					t.Errorf("unary: trailer x-served-by %q in the trailers' frame %v, want grpc-backend", got, r.trailer)
				}

				r = webCall(t, c, base+"/grpc.testing.TestService/UnaryCall", text,
					&testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
				if r.status != 200 || r.code() != int(codes.NotFound) || len(r.messages) != 0 {
					t.Fatalf("error status: HTTP %d, grpc-status %d, %d messages; want 200, %d, none", r.status, r.code(), len(r.messages), codes.NotFound)
				}
				if r.bodyLen != 0 || r.header.Get("Grpc-Status") == "" {
					t.Errorf("error status: a body of %d bytes, grpc-status %q in the header; want a trailers-only answer (the status in the header, no body)",
						r.bodyLen, r.header.Get("Grpc-Status"))
				}
				msg := r.trailer.Get("Grpc-Message")
				if msg == "" {
					msg = r.header.Get("Grpc-Message")
				}
				if msg != "no such thing" {
					t.Errorf("error status: grpc-message %q, want %q", msg, "no such thing")
				}

				r = webCall(t, c, base+"/grpc.testing.TestService/StreamingOutputCall", text,
					&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 3}, {Size: 70000}, {Size: 1}}})
				if r.trailer.Get("Grpc-Status") != "0" || len(r.messages) != 3 {
					t.Fatalf("server streaming: grpc-status %d, %d messages; want 0 and 3", r.code(), len(r.messages))
				}
				for i, want := range []int{3, 70000, 1} {
					var m testpb.StreamingOutputCallResponse
					if err := proto.Unmarshal(r.messages[i], &m); err != nil || len(m.Payload.GetBody()) != want {
						t.Errorf("server streaming: message %d: %d bytes, %v; want %d", i, len(m.Payload.GetBody()), err, want)
					}
				}
			})
		}
	}

	t.Run("native gRPC to the same pool", func(t *testing.T) {
		cc, err := grpc.NewClient(s.Addr("public"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("native")}})
		if err != nil || string(resp.Payload.GetBody()) != "native" {
			t.Fatalf("UnaryCall = %v, %v", resp, err)
		}
	})

	t.Run("text body that is not base64", func(t *testing.T) {
		for _, name := range []string{"HTTP/1.1", "h2c", "HTTP/3"} {
			req, _ := http.NewRequest("POST", urls[name]+"/grpc.testing.TestService/UnaryCall", strings.NewReader("AAAA!!!!"))
			req.Header.Set("Content-Type", "application/grpc-web-text")
			resp, err := clients[name].Do(req)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// sluice's refusal (400, a client's error: INTERNAL), not an
			// answer of the backend to what it made of the bytes.
			if g, m := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message"); resp.StatusCode != 200 || g != "13" ||
				!strings.Contains(strings.ToLower(m), "bad request") || len(body) != 0 {
				t.Errorf("%s: %d, grpc-status %q, grpc-message %q, body %q: want sluice's trailers-only refusal (13, bad request)", name, resp.StatusCode, g, m, body)
			}
		}
	})
}

// TestGRPCWebBackendKilledMidStream: a gRPC-Web client whose backend dies
// mid-stream gets the messages sent so far, each as soon as it was sent
// (in text mode too, where base64 could hold a message's last bytes
// back), then UNAVAILABLE in the trailers' frame and a response that ends:
// not a hang, not a cut body.
func TestGRPCWebBackendKilledMidStream(t *testing.T) {
	for _, name := range []string{"HTTP/1.1", "h2c", "HTTP/2 over TLS", "HTTP/3"} {
		for _, text := range []bool{false, true} {
			mode := map[bool]string{false: "binary", true: "text"}[text]
			t.Run(name+"/"+mode, func(t *testing.T) {
				addr, _, stop := startGRPCBackend(t)
				clients, urls, _ := grpcWebSluice(t, addr)
				// 11 bytes of payload: a 5+15-byte frame, not a multiple of 3.
				m, _ := proto.Marshal(&testpb.StreamingOutputCallRequest{
					ResponseParameters: []*testpb.ResponseParameters{{Size: 11}}, Payload: &testpb.Payload{}})
				body, ct := webFrame(m), "application/grpc-web+proto"
				if text {
					body, ct = []byte(base64.StdEncoding.EncodeToString(body)), "application/grpc-web-text+proto"
				}
				req, _ := http.NewRequest("POST", urls[name]+"/grpc.testing.TestService/StreamingOutputCall", bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				resp, err := clients[name].Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var r io.Reader = resp.Body
				if text {
					r, _ = grpcweb.Text.Body(resp.Body, -1) // four characters at a time, as clients decode
				}
				// The first message, while the backend holds the stream open.
				got := make(chan error, 1)
				var m1 testpb.StreamingOutputCallResponse
				go func() {
					head := make([]byte, 5)
					if _, err := io.ReadFull(r, head); err != nil || head[0] != 0 {
						got <- fmt.Errorf("frame header % x: %v", head, err)
						return
					}
					first := make([]byte, bin.BigEndian.Uint32(head[1:]))
					if _, err := io.ReadFull(r, first); err != nil {
						got <- err
						return
					}
					got <- proto.Unmarshal(first, &m1)
				}()
				select {
				case err := <-got:
					if err != nil || len(m1.Payload.GetBody()) != 11 {
						t.Fatalf("first message: %v, %d bytes of payload", err, len(m1.Payload.GetBody()))
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the first message did not reach the client while the stream was open")
				}
				stop()
				done := make(chan struct{})
				var rest []byte
				go func() {
					defer close(done)
					rest, err = io.ReadAll(r)
				}()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("the response did not end within 10 s of the backend's death")
				}
				if err != nil {
					t.Fatalf("after the backend died: %v (read %q): want the trailers' frame and a clean end", err, rest)
				}
				msgs, tr, perr := parseWebBody(rest)
				if perr != nil || len(msgs) != 0 || tr == nil {
					t.Fatalf("after the backend died: %q: %v, %d messages, trailers %v", rest, perr, len(msgs), tr)
				}
				if tr.Get("Grpc-Status") != "14" {
					t.Errorf("after the backend died: trailers %v, want grpc-status 14 (UNAVAILABLE)", tr)
				}
			})
		}
	}
}

// hangingGRPCBackend is an h2c backend that takes a call and answers
// nothing until sluice gives up on it. Unlike a gRPC server it does not
// enforce the call's grpc-timeout itself, so the deadline a client sees
// is sluice's own; it reports the grpc-timeout each call arrived with.
func hangingGRPCBackend(t *testing.T) (url string, timeouts <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case got <- r.Header.Get("Grpc-Timeout"):
		default:
		}
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}), &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), got
}

// TestGRPCWebSluiceAnswers: what sluice answers itself to a gRPC-Web call
// is a gRPC status the client library reads (a trailers-only response):
// DEADLINE_EXCEEDED once the call's grpc-timeout passes, UNAVAILABLE with
// no backend to reach.
func TestGRPCWebSluiceAnswers(t *testing.T) {
	slow, _ := proto.Marshal(&testpb.SimpleRequest{})
	call := func(c *http.Client, url string, timeout string) (*http.Response, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest("POST", url+"/grpc.testing.TestService/UnaryCall", bytes.NewReader(webFrame(slow)))
		req.Header.Set("Content-Type", "application/grpc-web")
		if timeout != "" {
			req.Header.Set("Grpc-Timeout", timeout)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, time.Since(start)
	}
	names := []string{"HTTP/1.1", "h2c", "HTTP/1.1 over TLS", "HTTP/2 over TLS", "HTTP/3"}

	hang, timeouts := hangingGRPCBackend(t)
	clients, urls, _ := grpcWebSluice(t, hang)
	for _, name := range names {
		resp, took := call(clients[name], urls[name], "300m")
		if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "4" || resp.Header.Get("Content-Type") != "application/grpc-web" {
			t.Errorf("%s, grpc-timeout 300m: %d, grpc-status %q, content-type %q; want 200, 4 (DEADLINE_EXCEEDED), application/grpc-web",
				name, resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Header.Get("Content-Type"))
		}
		if took > 4*time.Second {
			t.Errorf("%s: the answer took %v: sluice did not end the call at its grpc-timeout", name, took)
		}
		select {
		case got := <-timeouts:
			if got != "300m" {
				t.Errorf("%s: the backend got grpc-timeout %q, want the client's 300m", name, got)
			}
		default:
			t.Errorf("%s: the call did not reach the backend", name)
		}
	}

	addr, _, stop := startGRPCBackend(t)
	clients, urls, _ = grpcWebSluice(t, addr)
	stop()
	for _, name := range names {
		resp, _ := call(clients[name], urls[name], "")
		if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get("Grpc-Message") == "" {
			t.Errorf("%s, no backend: %d, grpc-status %q, grpc-message %q; want 200, 14 (UNAVAILABLE) and a message",
				name, resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message"))
		}
	}
}

// notGRPCBackend is an h2c backend in front of which something answers
// for the gRPC service: a maintenance page (503), a missing route (404).
func notGRPCBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/UnaryCall") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(503)
			io.WriteString(w, "maintenance window: back at 18:00\n")
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(404)
		io.WriteString(w, "<h1>not found</h1>")
	}), &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestGRPCWebBackendNotGRPC: an answer that is not gRPC reaches a
// gRPC-Web client as a gRPC status it reads (trailers-only), as Envoy's
// grpc_web filter gives it: the HTTP status kept, grpc-status from it,
// the page's text as grpc-message; in the form the request's Accept asks
// for, over every client protocol, on both codecs. sluice's own answers
// follow Accept too.
func TestGRPCWebBackendNotGRPC(t *testing.T) {
	clients, urls, _ := grpcWebSluice(t, notGRPCBackend(t))
	call := func(name, path, accept string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", urls[name]+path, bytes.NewReader(webFrame([]byte("x"))))
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := clients[name].Do(req)
		if err != nil {
			t.Fatalf("%s POST %s: %v", name, path, err)
		}
		if b, _ := io.ReadAll(resp.Body); len(b) != 0 {
			t.Errorf("%s POST %s: body %q, want none (trailers-only)", name, path, b)
		}
		resp.Body.Close()
		return resp
	}
	for _, name := range []string{"HTTP/1.1", "h2c", "HTTP/1.1 over TLS", "HTTP/2 over TLS", "HTTP/3"} {
		for _, c := range []struct {
			path, accept            string
			status                  int
			grpc, message, wantType string
		}{
			{"/grpc.testing.TestService/UnaryCall", "", 503, "14", "maintenance window: back at 18:00", "application/grpc-web+proto"},
			{"/grpc.testing.TestService/Missing", "", 404, "12", "<h1>not found</h1>", "application/grpc-web+proto"},
			{"/grpc.testing.TestService/UnaryCall", "application/grpc-web-text", 503, "14", "maintenance window: back at 18:00", "application/grpc-web-text+proto"},
		} {
			resp := call(name, c.path, c.accept)
			h := resp.Header
			if resp.StatusCode != c.status || h.Get("Grpc-Status") != c.grpc || h.Get("Grpc-Message") != c.message || h.Get("Content-Type") != c.wantType {
				t.Errorf("%s POST %s (Accept %q): %d, grpc-status %q, grpc-message %q, content type %q; want %d, %s, %q, %s",
					name, c.path, c.accept, resp.StatusCode, h.Get("Grpc-Status"), h.Get("Grpc-Message"), h.Get("Content-Type"),
					c.status, c.grpc, c.message, c.wantType)
			}
		}
	}

	// sluice's own answer (no backend) in the form Accept asks for.
	addr, _, stop := startGRPCBackend(t)
	clients, urls, _ = grpcWebSluice(t, addr)
	stop()
	for _, name := range []string{"HTTP/1.1", "h2c", "HTTP/1.1 over TLS", "HTTP/2 over TLS", "HTTP/3"} {
		resp := call(name, "/grpc.testing.TestService/UnaryCall", "application/grpc-web-text")
		if resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get("Content-Type") != "application/grpc-web-text" {
			t.Errorf("%s, no backend, Accept text: grpc-status %q, content type %q; want 14, application/grpc-web-text",
				name, resp.Header.Get("Grpc-Status"), resp.Header.Get("Content-Type"))
		}
	}
}

// TestGRPCWebDeadlineMidStream: a server stream still open at the call's
// grpc-timeout ends with DEADLINE_EXCEEDED in the trailers' frame, after
// the messages sent so far; and the client's connection serves its next
// call (engine: std once lost it: the timeout's read deadline broke
// net/http's background read of the connection).
func TestGRPCWebDeadlineMidStream(t *testing.T) {
	addr, _, _ := startGRPCBackend(t)
	clients, urls, _ := grpcWebSluice(t, addr)
	held, _ := proto.Marshal(&testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 4}}, Payload: &testpb.Payload{}})
	for _, name := range []string{"HTTP/1.1", "h2c", "HTTP/1.1 over TLS", "HTTP/2 over TLS", "HTTP/3"} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", urls[name]+"/grpc.testing.TestService/StreamingOutputCall", bytes.NewReader(webFrame(held)))
			req.Header.Set("Content-Type", "application/grpc-web")
			req.Header.Set("Grpc-Timeout", "400m")
			resp, err := clients[name].Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("held stream: %v (read %q)", err, raw)
			}
			msgs, tr, err := parseWebBody(raw)
			if err != nil || len(msgs) != 1 || tr.Get("Grpc-Status") != "4" {
				t.Fatalf("held stream past its grpc-timeout: %v, %d messages, trailers %v; want 1 and grpc-status 4 (DEADLINE_EXCEEDED)", err, len(msgs), tr)
			}
			r := webCall(t, clients[name], urls[name]+"/grpc.testing.TestService/UnaryCall", false,
				&testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("next")}})
			if r.trailer.Get("Grpc-Status") != "0" || len(r.messages) != 1 {
				t.Errorf("the next call: grpc-status %q, %d messages", r.trailer.Get("Grpc-Status"), len(r.messages))
			}
		})
	}
}
