package nethttp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// TestBodyReplay: backend 0 reads the whole body and resets the connection;
// backend 1 answers with a hash of the body it got. Round robin tries 0
// first, so a request reaches 1 only through a retry.
func TestBodyReplay(t *testing.T) {
	var resets, delivered atomic.Int64
	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		resets.Add(1)
		c, _, _ := http.NewResponseController(w).Hijack()
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}))
	t.Cleanup(reset.Close)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		io.Copy(h, r.Body)
		delivered.Add(1)
		io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	}))
	t.Cleanup(good.Close)

	tests := []struct {
		name      string
		method    string
		key       string
		size      int
		wantCode  int
		wantTries int64 // requests that reached the resetting backend
	}{
		{"PUT with a small body is replayed", "PUT", "", 10 << 10, 200, 1},
		{"GET without a body is retried", "GET", "", 0, 200, 1},
		{"POST is never delivered twice", "POST", "", 10 << 10, 502, 1},
		{"POST with an Idempotency-Key is replayed", "POST", "k1", 1 << 10, 200, 1},
		{"PUT over the replay buffer is not", "PUT", "", proxy.ReplayMax + 1, 502, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 0, balance.RoundRobin{}, func(tg *proxy.Target) {
				tg.Retries = config.Retries{NumRetries: 2, OnConnectFailure: true, OnReset: true}
			})
			for _, s := range []*httptest.Server{reset, good} {
				u, _ := url.Parse(s.URL)
				f.pool.Add(pool.NewBackend(s.URL, u, 1))
			}
			resets.Store(0)
			delivered.Store(0)
			body := bytes.Repeat([]byte("z"), tt.size)
			req, _ := http.NewRequest(tt.method, f.proxy.URL+"/", bytes.NewReader(body))
			if tt.key != "" {
				req.Header.Set("Idempotency-Key", tt.key)
			}
			resp, err := f.proxy.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if n := resets.Load(); n != tt.wantTries {
				t.Errorf("resetting backend got %d requests, want %d", n, tt.wantTries)
			}
			if tt.wantCode == 200 {
				sum := sha256.Sum256(body)
				if string(got) != hex.EncodeToString(sum[:]) {
					t.Errorf("the retried request's body differs from the client's")
				}
				if delivered.Load() != 1 {
					t.Errorf("delivered %d times, want once", delivered.Load())
				}
			} else if delivered.Load() != 0 {
				t.Errorf("a request that failed was also delivered %d times", delivered.Load())
			}
		})
	}
}
