package e2e

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

// reporting is a backend that reports util in ORCA's text form on every
// response and names itself in X-Backend. It takes service to answer.
func reporting(t *testing.T, name, util string, service time.Duration) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(service)
		w.Header().Set("Endpoint-Load-Metrics", "TEXT cpu_utilization="+util+", mem_utilization=0.2")
		w.Header().Set("X-Backend", name)
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestLoadReportSteersP2C(t *testing.T) {
	// p2c's score is latency × load: on a bare loopback the latency is
	// tens of microseconds, and one stall of a loaded machine makes a calm
	// backend's average more than 18 times the busy one's. A service time
	// of 10ms, the same for all, keeps latencies comparable (a stall
	// would have to last over a second to outweigh the load).
	const service = 10 * time.Millisecond
	busy := reporting(t, "busy", "0.95", service)
	calm1, calm2 := reporting(t, "calm1", "0.1", service), reporting(t, "calm2", "0.1", service)
	cfg := oneListener(config.Pool{Name: "web", Balance: "p2c", LoadReport: &config.LoadReport{},
		Backends: []config.Backend{{Address: busy.URL}, {Address: calm1.URL}, {Address: calm2.URL}}})
	s := startSluice(t, cfg)
	c := newClient(t)
	const n = 200
	got := map[string]int{}
	for range n {
		r := get(t, c, s.URL("public"))
		if r.Status != 200 {
			t.Fatalf("status %d, want 200", r.Status)
		}
		if v := r.Header.Get("Endpoint-Load-Metrics"); v != "" {
			t.Fatalf("the client got the load report %q: it is for sluice only", v)
		}
		got[r.Header.Get("X-Backend")]++
	}
	t.Logf("requests per backend: %v", got)
	// Until it has reported, the busy backend is as good as any; after its
	// first response it loses every comparison (1/(1-0.95) = 20 against
	// 1/(1-0.1) ≈ 1.1).
	if got["busy"] > n/20 {
		t.Errorf("requests per backend %v: the backend at 95%% got %d of %d, want at most %d", got, got["busy"], n, n/20)
	}
	if got["calm1"] < n/4 || got["calm2"] < n/4 {
		t.Errorf("requests per backend %v: the two at 10%% should share the traffic", got)
	}
}

// agent answers every connection on ln with the line it holds now.
type agent struct {
	ln   net.Listener
	line atomic.Pointer[string]
	done chan struct{}
}

func startAgent(t *testing.T, line string) *agent {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{ln: ln, done: make(chan struct{})}
	a.say(line)
	go func() {
		defer close(a.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(*a.line.Load()))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-a.done })
	return a
}

func (a *agent) say(line string) { a.line.Store(&line) }

func (a *agent) port() int { return a.ln.Addr().(*net.TCPAddr).Port }

func TestAgentDrainsAndReadies(t *testing.T) {
	be := startBackend(t, "b1")
	ag := startAgent(t, "up ready\n")
	p := poolOf("web", be)
	p.Balance = "p2c"
	p.HealthCheck = &config.HealthCheck{Type: "tcp", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond,
		HealthyThreshold: 1, UnhealthyThreshold: 1}
	p.LoadReport = &config.LoadReport{AgentPort: ag.port()}
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	url := s.URL("public")
	b := s.srv.Pools()[0].Backends()[0]
	if r := get(t, c, url); r.Status != 200 {
		t.Fatalf("agent says ready: status %d, want 200", r.Status)
	}

	ag.say("drain # deploying\n")
	eventually(t, 10*time.Second, "the agent's drain applies", func() bool { return b.AdminState() == pool.Draining })
	if r := get(t, c, url); r.Status != 503 {
		t.Errorf("backend drained by its agent: status %d, want 503 (no other backend)", r.Status)
	}
	if got := b.State(); got != "draining" {
		t.Errorf("state %q, want draining (as the admin API's drain)", got)
	}

	ag.say("ready 100%\n")
	eventually(t, 10*time.Second, "the agent's ready applies", func() bool { return b.AdminState() == pool.Enabled })
	if r := get(t, c, url); r.Status != 200 {
		t.Errorf("agent says ready again: status %d, want 200", r.Status)
	}
}
