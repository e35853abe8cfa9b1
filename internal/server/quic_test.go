package server

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// blackhole is a client socket that sends but never delivers what comes
// back: a QUIC client on it sends its Initial (and repeats it) and never
// completes a handshake or answers a Retry, as a spoofed source.
type blackhole struct {
	net.PacketConn
	closed chan struct{}
	once   sync.Once
}

func (b *blackhole) ReadFrom([]byte) (int, net.Addr, error) {
	<-b.closed
	return 0, nil, net.ErrClosed
}

func (b *blackhole) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.PacketConn.Close()
}

// TestQUICRetryUnderInitialFlood floods an HTTP/3 listener with
// connection attempts from sources that never answer: past retryAbove
// handshakes in progress, every new attempt is asked for a Retry (no
// handshake, no state), so the handshakes in progress stay bounded, and a
// real client still gets through (its quic-go answers the Retry).
func TestQUICRetryUnderInitialFlood(t *testing.T) {
	be := startBackend(t, t.Context())
	ca := testenv.NewCA(t, "Test CA")
	certFile, keyFile := ca.Issue(t, testenv.Leaf{Names: []string{"a.test"}}).Write(t, t.TempDir(), "a")
	cert, pool := config.Certificate{Cert: certFile, Key: keyFile}, ca.Pool
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: "web", HTTP3: true,
			TLS: &config.TLS{Certificates: []config.Certificate{cert}}}},
		Pools:     []config.Pool{{Name: "web", Backends: []config.Backend{{Address: be}}}},
		Admin:     config.Admin{Address: "127.0.0.1:0"},
		AccessLog: config.AccessLog{Format: "off"},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	const retryAbove, flood = 4, 40
	srv.quicRetryAbove = retryAbove
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	eventually(t, "ready", srv.Ready)
	addr := srv.Addr("public").String()
	udp, _ := net.ResolveUDPAddr("udp", addr)
	q := srv.listeners["public"].quic

	fctx, fcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer fcancel()
	var wg sync.WaitGroup
	maxSeen := int64(0)
	for range flood {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		bh := &blackhole{PacketConn: pc, closed: make(chan struct{})}
		tr := &quic.Transport{Conn: bh}
		wg.Go(func() {
			defer tr.Close() // after bh's: it waits for its read loop, which bh's Close ends
			defer bh.Close()
			tr.Dial(fctx, udp, &tls.Config{ServerName: "a.test", RootCAs: pool, NextProtos: []string{http3.NextProtoH3}}, nil)
		})
	}
	eventually(t, "the flood is asked for Retries", func() bool {
		maxSeen = max(maxSeen, q.handshakes.Load())
		return q.retries.Load() >= flood-retryAbove
	})
	if maxSeen > retryAbove {
		t.Errorf("%d handshakes in progress at once, want at most %d", maxSeen, retryAbove)
	}
	// A client that answers the Retry gets served.
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "a.test"},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tc, qc)
		}}
	defer h3.Close()
	resp, err := (&http.Client{Transport: h3, Timeout: 10 * time.Second}).Get("https://a.test/")
	if err != nil {
		t.Fatalf("a real client during the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 3 {
		t.Errorf("a real client during the flood: %s %d, want HTTP/3 200", resp.Proto, resp.StatusCode)
	}
	fcancel()
	wg.Wait()
	t.Logf("flood of %d: %d Retries asked, at most %d handshakes in progress", flood, q.retries.Load(), maxSeen)
}
