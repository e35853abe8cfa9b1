package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sluice-lb/sluice/internal/config"
)

// refusingH2Backend is an h2c backend that processes no request: it
// answers every stream with RST_STREAM REFUSED_STREAM (goaway false), or
// each connection's first request with GOAWAY (last stream 0: none
// processed) and a close (goaway true), as soon as the stream's HEADERS
// come. It counts the streams it got.
func refusingH2Backend(t *testing.T, goaway bool) (url string, streams *atomic.Int64) {
	return refusingH2BackendAt(t, goaway, false)
}

// refusingH2BackendAt is refusingH2Backend; with late, it refuses a stream
// only once its whole body came (a backend may refuse after reading).
func refusingH2BackendAt(t *testing.T, goaway, late bool) (url string, streams *atomic.Int64) {
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
						if late && f.StreamEnded() {
							streams.Add(1)
							if goaway {
								fr.WriteGoAway(0, http2.ErrCodeNo, nil)
								return
							}
							fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
						}
					case *http2.HeadersFrame:
						if late && !f.StreamEnded() {
							continue
						}
						streams.Add(1)
						if goaway {
							fr.WriteGoAway(0, http2.ErrCodeNo, nil)
							return
						}
						fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
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

// refusingPoolSluice runs a sluice (h2c listener "public") with a pool of
// the refusing backend bad and a good h2c one, upstream_http2, round
// robin, and every failure retried (the retry budget is not what these
// tests are about); it returns an HTTP/1.1 and an HTTP/2 client to it.
func refusingPoolSluice(t *testing.T, bad string) (*sluice, []namedClient) {
	p := config.Pool{Name: "web", Balance: "round_robin", UpstreamHTTP2: true,
		Backends: []config.Backend{{Address: bad}, {Address: h2cBackend(t)}},
		Retries:  config.Retries{NumRetries: 2, RetryOn: []string{"connect_failure", "reset"}, BudgetPercent: 100}}
	cfg := oneListener(p)
	cfg.Listeners[0].H2C = true
	return startSluice(t, cfg), []namedClient{{"HTTP/1.1 client", newClient(t)}, {"HTTP/2 client", h2cClient(t)}}
}

// TestH2UpstreamRefusedGoesElsewhere: a stream an HTTP/2 backend refuses
// (REFUSED_STREAM) or never processed (GOAWAY below its id) was not
// processed (RFC 9113 §8.7), so the request goes to another backend at
// once, whatever its method: a GET, and a PUT or a POST whose body sluice
// kept. It neither waits on the refusing backend nor fails.
func TestH2UpstreamRefusedGoesElsewhere(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		name := map[bool]string{false: "REFUSED_STREAM", true: "GOAWAY"}[goaway]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2Backend(t, goaway)
			s, clients := refusingPoolSluice(t, bad)
			for _, c := range clients {
				for i := range 4 {
					body := strings.Repeat("x", 100*i)
					method, rd := "GET", io.Reader(nil)
					switch i {
					case 1, 2:
						method, rd = "PUT", strings.NewReader(body)
					case 3:
						method, rd = "POST", strings.NewReader(body)
					}
					req, _ := http.NewRequest(method, s.URL("public")+"/up", rd)
					resp, err := c.c.Do(req)
					if err != nil {
						t.Fatalf("%s, request %d: %v", c.name, i, err)
					}
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := "HTTP/2.0 /up " + strconv.Itoa(len(body)); resp.StatusCode != 200 || string(got) != want {
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
// keep gets 502 at once, never a hang and never a part of a body sent on.
func TestH2UpstreamRefusedAfterTheBody(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		name := map[bool]string{false: "REFUSED_STREAM", true: "GOAWAY"}[goaway]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2BackendAt(t, goaway, true)
			s, clients := refusingPoolSluice(t, bad)
			var kept, unkept int // requests refused with a body that was or was not kept
			for _, c := range clients {
				for _, size := range []int{100, 70000} {
					for i := range 3 {
						before := refused.Load()
						req, _ := http.NewRequest("POST", s.URL("public")+"/up", strings.NewReader(strings.Repeat("x", size)))
						resp, err := c.c.Do(req)
						if err != nil {
							t.Fatalf("%s, %d bytes, request %d: %v (a hang ends in the client's timeout)", c.name, size, i, err)
						}
						got, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						wasRefused := refused.Load() > before
						switch {
						case resp.StatusCode == 200 && string(got) != "HTTP/2.0 /up "+strconv.Itoa(size):
							t.Errorf("%s, %d bytes, request %d: the good backend answered %q: the body it got was not the client's", c.name, size, i, got)
						case size <= 64<<10 && resp.StatusCode != 200:
							t.Errorf("%s, %d bytes, request %d: %d %q, want 200: the body was kept, so the refused request goes elsewhere", c.name, size, i, resp.StatusCode, got)
						case size > 64<<10 && wasRefused && resp.StatusCode != 502:
							t.Errorf("%s, %d bytes, request %d: %d %q, want 502: the refusing backend had the body, which sluice did not keep", c.name, size, i, resp.StatusCode, got)
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
// backend refuses, before or after it read the call's message, was not
// processed, so it goes to another backend: the client gets its answer,
// not UNAVAILABLE.
func TestGRPCRefusedGoesElsewhere(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := map[bool]string{false: "refused at HEADERS", true: "refused after the message"}[late]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2BackendAt(t, false, late)
			good, _, _ := startGRPCBackend(t)
			p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
				Backends: []config.Backend{{Address: bad}, {Address: good}},
				Retries:  config.Retries{NumRetries: 1, RetryOn: []string{"connect_failure"}, BudgetPercent: 100}}
			cfg := oneListener(p)
			cfg.Listeners[0].H2C = true
			s := startSluice(t, cfg)
			cc, err := grpc.NewClient(s.Addr("public"), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := testpb.NewTestServiceClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 6 {
				msg := []byte("call " + strconv.Itoa(i))
				resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: msg}})
				if err != nil || string(resp.Payload.GetBody()) != string(msg) {
					t.Errorf("call %d: %v, %v; want its payload back from the good backend", i, resp, err)
				}
			}
			if refused.Load() == 0 {
				t.Errorf("no call reached the refusing backend: the test proved nothing")
			}
		})
	}
}
