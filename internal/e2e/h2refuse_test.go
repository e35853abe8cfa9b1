package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sluice-lb/sluice/internal/config"
)

// refusingH2Backend is an h2c backend that processes no request: it
// answers every stream with RST_STREAM REFUSED_STREAM (goaway false), or
// each connection's first request with GOAWAY (last stream 0: none
// processed) and a close (goaway true), as soon as the stream's HEADERS
// come. It counts the streams it got.
func refusingH2Backend(t *testing.T, goaway bool) (url string, streams *atomic.Int64) {
	return refusingH2BackendAt(t, refusal{goaway: goaway})
}

// refuseAt is when refusingH2BackendAt refuses a stream.
type refuseAt int

const (
	atHeaders   refuseAt = iota // as its HEADERS come
	atFirstData                 // at its first DATA frame: part of its body read
	atEnd                       // once its whole body came
)

// refusal is what refusingH2BackendAt does to each stream, and when.
type refusal struct {
	goaway bool     // GOAWAY and close, else RST_STREAM
	at     refuseAt // when (a backend may refuse after reading)
	// processed: the backend says it may have processed the stream
	// (RST_STREAM INTERNAL_ERROR, or a GOAWAY whose last stream is this
	// one), where by default it says it did not (REFUSED_STREAM, or a
	// GOAWAY with last stream 0).
	processed bool
}

// refusingH2BackendAt is refusingH2Backend, refusing each stream as r says.
func refusingH2BackendAt(t *testing.T, r refusal) (url string, streams *atomic.Int64) {
	at := r.at
	refuse := func(fr *http2.Framer, id uint32) (closeConn bool) {
		streams.Add(1)
		switch {
		case r.goaway && r.processed:
			fr.WriteGoAway(id, http2.ErrCodeNo, nil)
		case r.goaway:
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		case r.processed:
			fr.WriteRSTStream(id, http2.ErrCodeInternal)
		default:
			fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		}
		return r.goaway
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streams = new(atomic.Int64)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(c)
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(br, preface); err != nil {
					return
				}
				fr := http2.NewFramer(c, br)
				seen := map[uint32]bool{} // streams refused at their first DATA
				fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							fr.WriteSettingsAck()
						}
					case *http2.DataFrame:
						if n := len(f.Data()); n > 0 {
							fr.WriteWindowUpdate(0, uint32(n))
							fr.WriteWindowUpdate(f.StreamID, uint32(n))
						}
						if at == atEnd && f.StreamEnded() || at == atFirstData && !seen[f.StreamID] {
							seen[f.StreamID] = true
							if refuse(fr, f.StreamID) {
								return
							}
						}
					case *http2.HeadersFrame:
						if at != atHeaders && !f.StreamEnded() {
							continue
						}
						if refuse(fr, f.StreamID) {
							return
						}
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), streams
}

// namedClient is a client to try, by what it speaks.
type namedClient struct {
	name string
	c    *http.Client
}

// hashingH2CBackend is an h2c backend that answers each request with the
// SHA-256 of its body in hex, and counts the requests that reached it.
func hashingH2CBackend(t *testing.T) (url string, seen *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen = new(atomic.Int64)
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		h := sha256.New()
		io.Copy(h, r.Body)
		fmt.Fprintf(w, "%x", h.Sum(nil))
	}), &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), seen
}

// patterned is a body of n bytes in which every 8 bytes name their place,
// so that one reordered, repeated or lost part changes its hash.
func patterned(n int) string {
	b := make([]byte, 0, n+8)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "%07d\n", i)
	}
	return string(b[:n])
}

func sha256hex(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

// refusingPoolSluice runs a sluice (h2c listener "public") with a pool of
// the refusing backend bad (weight badWeight) and a good h2c one
// (hashingH2CBackend, whose count of requests it returns), upstream_http2,
// round robin, every failure retried (the retry budget is not what these
// tests are about) and no backend ejected for its failures; it returns an
// HTTP/1.1 and an HTTP/2 client to it.
func refusingPoolSluice(t *testing.T, bad string, badWeight int) (*sluice, []namedClient, *atomic.Int64) {
	good, seen := hashingH2CBackend(t)
	p := config.Pool{Name: "web", Balance: "round_robin", UpstreamHTTP2: true,
		Backends:      []config.Backend{{Address: bad, Weight: badWeight}, {Address: good}},
		Retries:       config.Retries{NumRetries: 2, RetryOn: []string{"connect_failure", "reset"}, BudgetPercent: 100},
		PassiveHealth: config.PassiveHealth{ConsecutiveFailures: 1000}}
	cfg := oneListener(p)
	cfg.Listeners[0].H2C = true
	return startSluice(t, cfg), []namedClient{{"HTTP/1.1 client", newClient(t)}, {"HTTP/2 client", h2cClient(t)}}, seen
}

// TestH2UpstreamRefusedGoesElsewhere: a stream an HTTP/2 backend refuses
// (REFUSED_STREAM) or never processed (GOAWAY below its id) was not
// processed (RFC 9113 §8.7), so the request goes to another backend at
// once, whatever its method: a GET, and a PUT or a POST whose body sluice
// kept (one sent after Expect: 100-continue too). It neither waits on the
// refusing backend nor fails.
func TestH2UpstreamRefusedGoesElsewhere(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		name := map[bool]string{false: "REFUSED_STREAM", true: "GOAWAY"}[goaway]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2Backend(t, goaway)
			s, clients, _ := refusingPoolSluice(t, bad, 1)
			for _, c := range clients {
				for i := range 5 {
					body := patterned(100 * i)
					method, rd := "GET", io.Reader(nil)
					switch i {
					case 1, 2:
						method, rd = "PUT", strings.NewReader(body)
					case 3, 4:
						method, rd = "POST", strings.NewReader(body)
					}
					req, _ := http.NewRequest(method, s.URL("public")+"/up", rd)
					if i == 4 {
						req.Header.Set("Expect", "100-continue") // a body the client sends when asked
					}
					resp, err := c.c.Do(req)
					if err != nil {
						t.Fatalf("%s, request %d: %v", c.name, i, err)
					}
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := sha256hex(body); resp.StatusCode != 200 || string(got) != want {
						t.Errorf("%s, %s request %d: %d %q, want 200 %q from the good backend", c.name, method, i, resp.StatusCode, got, want)
					}
				}
			}
			if refused.Load() == 0 {
				t.Errorf("%s: no request reached the refusing backend: the test proved nothing", name)
			}
		})
	}
}

// TestH2UpstreamRefusedAfterTheBody: a backend that refuses a stream (or
// sends GOAWAY below it) only after it read the request's body did not
// process it either, so a POST whose body sluice kept (up to 64 KiB) goes
// to the good backend, whole, never spliced; one whose body it could not
// keep gets 502 at once, never a hang, and the good backend never sees it
// (not even a start that the missing part of the body then breaks off).
func TestH2UpstreamRefusedAfterTheBody(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		name := map[bool]string{false: "REFUSED_STREAM", true: "GOAWAY"}[goaway]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2BackendAt(t, refusal{goaway: goaway, at: atEnd})
			s, clients, seen := refusingPoolSluice(t, bad, 1)
			var kept, unkept int // requests refused with a body that was or was not kept
			for _, c := range clients {
				for _, size := range []int{100, 70000} {
					for i := range 3 {
						before, seenBefore := refused.Load(), seen.Load()
						body := patterned(size)
						req, _ := http.NewRequest("POST", s.URL("public")+"/up", strings.NewReader(body))
						resp, err := c.c.Do(req)
						if err != nil {
							t.Fatalf("%s, %d bytes, request %d: %v (a hang ends in the client's timeout)", c.name, size, i, err)
						}
						got, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						wasRefused := refused.Load() > before
						switch {
						case resp.StatusCode == 200 && string(got) != sha256hex(body):
							t.Errorf("%s, %d bytes, request %d: the good backend answered %q: the body it got was not the client's", c.name, size, i, got)
						case size <= 64<<10 && resp.StatusCode != 200:
							t.Errorf("%s, %d bytes, request %d: %d %q, want 200: the body was kept, so the refused request goes elsewhere", c.name, size, i, resp.StatusCode, got)
						case size > 64<<10 && wasRefused && resp.StatusCode != 502:
							t.Errorf("%s, %d bytes, request %d: %d %q, want 502: the refusing backend had the body, which sluice did not keep", c.name, size, i, resp.StatusCode, got)
						case size > 64<<10 && wasRefused && seen.Load() != seenBefore:
							t.Errorf("%s, %d bytes, request %d: the good backend saw a request whose body sluice could not send again", c.name, size, i)
						case size > 64<<10 && !wasRefused && resp.StatusCode != 200:
							t.Errorf("%s, %d bytes, request %d: %d %q, want 200 from the good backend", c.name, size, i, resp.StatusCode, got)
						}
						if wasRefused && size <= 64<<10 {
							kept++
						} else if wasRefused {
							unkept++
						}
					}
				}
			}
			if kept == 0 || unkept == 0 {
				t.Errorf("%s: refused with a kept body %d times, with a body not kept %d times: the test proved nothing without both", name, kept, unkept)
			}
		})
	}
}

// TestGRPCRefusedGoesElsewhere: a gRPC call (a POST with a body) that a
// backend refuses, before or after it read the call's first message, was
// not processed, so it goes to another backend: the client gets its answer,
// not UNAVAILABLE, and a stream whose client waits for an answer before it
// sends more is not held waiting on it. The refusing backend has most of
// the weight, so most calls try it first.
func TestGRPCRefusedGoesElsewhere(t *testing.T) {
	for _, at := range []refuseAt{atHeaders, atFirstData} {
		name := map[refuseAt]string{atHeaders: "refused at HEADERS", atFirstData: "refused after the first message"}[at]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2BackendAt(t, refusal{at: at})
			good, _, _ := startGRPCBackend(t)
			p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
				Backends: []config.Backend{{Address: bad, Weight: 50}, {Address: good}},
				Retries:  config.Retries{NumRetries: 1, RetryOn: []string{"connect_failure"}, BudgetPercent: 100},
				// Refusals count as failures: not ejected here, so that
				// the streams meet the refusing backend too.
				PassiveHealth: config.PassiveHealth{ConsecutiveFailures: 1000}}
			c := grpcThroughPool(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 6 {
				msg := []byte("call " + strconv.Itoa(i))
				resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: msg}})
				if err != nil || string(resp.Payload.GetBody()) != string(msg) {
					t.Errorf("call %d: %v, %v; want its payload back from the good backend", i, resp, err)
				}
			}
			// A ping-pong stream: its client sends a message and waits for
			// the answer before it sends more, so a refusal must not wait
			// on the client's next message.
			streamsRefused := 0
			for i := range 4 {
				before := refused.Load()
				st, err := c.FullDuplexCall(ctx)
				if err != nil {
					t.Fatalf("stream %d: %v", i, err)
				}
				for j := range 2 {
					msg := []byte("stream " + strconv.Itoa(i) + " message " + strconv.Itoa(j))
					if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: msg}}); err != nil {
						t.Fatalf("stream %d, message %d: send: %v", i, j, err)
					}
					resp, err := st.Recv()
					if err != nil || string(resp.Payload.GetBody()) != string(msg) {
						t.Fatalf("stream %d, message %d: %v, %v; want it echoed by the good backend (a refusal waited on the client)", i, j, resp, err)
					}
				}
				st.CloseSend()
				if _, err := st.Recv(); err != io.EOF {
					t.Errorf("stream %d: end: %v, want EOF", i, err)
				}
				if refused.Load() > before {
					streamsRefused++
				}
			}
			if streamsRefused == 0 {
				t.Errorf("no stream reached the refusing backend: the test proved nothing about streams")
			}
			if refused.Load() == 0 {
				t.Errorf("no call reached the refusing backend: the test proved nothing")
			}
		})
	}
}

// TestH2UpstreamProcessedIsNotRetried: a backend that resets a stream
// after it read the request's body with an error other than
// REFUSED_STREAM, or whose GOAWAY names the stream as one it may have
// processed, may have acted on the request: a POST then gets 502 and goes
// to no other backend, whatever sluice kept of its body.
func TestH2UpstreamProcessedIsNotRetried(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		name := map[bool]string{false: "RST_STREAM INTERNAL_ERROR", true: "GOAWAY naming the stream"}[goaway]
		t.Run(name, func(t *testing.T) {
			bad, reset := refusingH2BackendAt(t, refusal{goaway: goaway, at: atEnd, processed: true})
			s, clients, seen := refusingPoolSluice(t, bad, 50)
			resets := 0
			for _, c := range clients {
				for i := range 4 {
					before, seenBefore := reset.Load(), seen.Load()
					req, _ := http.NewRequest("POST", s.URL("public")+"/up", strings.NewReader(patterned(100)))
					resp, err := c.c.Do(req)
					if err != nil {
						t.Fatalf("%s, request %d: %v", c.name, i, err)
					}
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if reset.Load() == before {
						continue // the good backend was tried first
					}
					resets++
					if resp.StatusCode != 502 || seen.Load() != seenBefore {
						t.Errorf("%s, request %d: %d %q, the good backend saw %d requests; want 502 and none: the first backend may have processed it",
							c.name, i, resp.StatusCode, got, seen.Load()-seenBefore)
					}
				}
			}
			if resets == 0 {
				t.Errorf("no request reached the resetting backend: the test proved nothing")
			}
		})
	}
}

// TestH2UpstreamRefusedWhileTheBodyWaits: a refusal that comes while
// sluice waits for an HTTP/1.1 client's body (a head sent first, the body
// later, with or without Expect: 100-continue) leaves a read of the client
// under way: the client's first bytes may go to it, so the request goes
// to another backend only if sluice can send the body whole, and gets an
// answer either way: never a hang, and never a body that is not the
// client's.
func TestH2UpstreamRefusedWhileTheBodyWaits(t *testing.T) {
	bad, refused := refusingH2Backend(t, false)
	s, _, seen := refusingPoolSluice(t, bad, 50)
	addr := strings.TrimPrefix(s.URL("public"), "http://")
	for _, expect := range []bool{false, true} {
		for _, size := range []int{1000, 200 << 10} {
			body := patterned(size)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", size)
			if expect {
				head += "Expect: 100-continue\r\n"
			}
			io.WriteString(c, head+"\r\n")
			br := bufio.NewReader(c)
			if expect {
				if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, " 100 ") {
					t.Fatalf("expect %v, %d bytes: %q %v, want a 100 Continue", expect, size, line, err)
				}
				br.ReadString('\n') // the 100's end
			}
			before, seenBefore := refused.Load(), seen.Load()
			time.Sleep(300 * time.Millisecond) // the refusal comes while sluice waits
			go c.Write([]byte(body))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("expect %v, %d bytes: %v (refused %d, good backend saw %d): a hang", expect, size, err, refused.Load()-before, seen.Load()-seenBefore)
			}
			got, _ := io.ReadAll(resp.Body)
			switch {
			case resp.StatusCode == 200 && string(got) != sha256hex(body):
				t.Errorf("expect %v, %d bytes: the good backend answered %q: the body it got was not the client's", expect, size, got)
			case resp.StatusCode != 200 && resp.StatusCode != 502:
				t.Errorf("expect %v, %d bytes: %d %q, want 200 or 502", expect, size, resp.StatusCode, got)
			case size <= 64<<10 && resp.StatusCode != 200:
				t.Errorf("expect %v, %d bytes: %d %q, want 200: a small body is held whole", expect, size, resp.StatusCode, got)
			}
			c.Close()
		}
	}
}
