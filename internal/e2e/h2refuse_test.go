package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/config"
)

// refusingH2Backend is an h2c backend that processes no request: it
// answers every stream with RST_STREAM REFUSED_STREAM (goaway false), or
// each connection's first request with GOAWAY (last stream 0: none
// processed) and a close (goaway true). It counts the streams it got.
func refusingH2Backend(t *testing.T, goaway bool) (url string, streams *atomic.Int64) {
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
					case *http2.HeadersFrame:
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

// TestH2UpstreamRefusedGoesElsewhere: a stream an HTTP/2 backend refuses
// (REFUSED_STREAM) or never processed (GOAWAY below its id) was not
// processed (RFC 9113 §8.7), so the request goes to another backend at
// once, with a body too, whatever retries.retry_on says; it neither waits
// on the refusing backend nor fails.
func TestH2UpstreamRefusedGoesElsewhere(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		name := map[bool]string{false: "REFUSED_STREAM", true: "GOAWAY"}[goaway]
		t.Run(name, func(t *testing.T) {
			bad, refused := refusingH2Backend(t, goaway)
			good := h2cBackend(t)
			p := config.Pool{Name: "web", Balance: "round_robin", UpstreamHTTP2: true,
				Backends: []config.Backend{{Address: bad}, {Address: good}}}
			cfg := oneListener(p)
			cfg.Listeners[0].H2C = true
			s := startSluice(t, cfg)
			for _, c := range []struct {
				name string
				c    *http.Client
			}{{"HTTP/1.1 client", newClient(t)}, {"HTTP/2 client", h2cClient(t)}} {
				for i := range 4 {
					body := strings.Repeat("x", 100*i)
					req, _ := http.NewRequest("POST", s.URL("public")+"/up", strings.NewReader(body))
					resp, err := c.c.Do(req)
					if err != nil {
						t.Fatalf("%s, request %d: %v", c.name, i, err)
					}
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.HasPrefix(string(got), "HTTP/2.0 /up ") {
						t.Errorf("%s, request %d: %d %q, want 200 from the good backend", c.name, i, resp.StatusCode, got)
					}
				}
			}
			if refused.Load() == 0 {
				t.Errorf("%s: no request reached the refusing backend: the test proved nothing", name)
			}
		})
	}
}
