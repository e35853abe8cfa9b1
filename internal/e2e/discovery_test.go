package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// hits counts answers by backend (X-Backend) while a load runs, of the
// requests sent since the last reset.
type hits struct {
	mu    sync.Mutex
	n     map[string]int
	since time.Time
}

func (h *hits) add(name string, sent time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sent.Before(h.since) {
		return // it may have been balanced before the change the test waits for
	}
	if h.n == nil {
		h.n = map[string]int{}
	}
	h.n[name]++
}

func (h *hits) get(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[name]
}

func (h *hits) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.n {
		n += c
	}
	return n
}

func (h *hits) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n, h.since = nil, time.Now()
}

// backgroundLoad sends GETs to url from conc workers, paced, until stop is
// called (at most 100000 requests, at most 90 s), counting answers by
// backend; stop returns every failed request.
func backgroundLoad(t *testing.T, url string, conc int, h *hits) (stop func() []error) {
	c := loadClient(t, conc)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	var stopped atomic.Bool
	done := make(chan []error, 1)
	go func() {
		done <- runLoad(ctx, 100000, conc, func(i int) error {
			if stopped.Load() {
				return nil
			}
			sent := time.Now()
			r, err := tryGet(c, url)
			switch {
			case err != nil:
				return fmt.Errorf("request %d: %w", i, err)
			case r.Status != 200:
				return fmt.Errorf("request %d: status %d from %q; body %.100q", i, r.Status, r.Header.Get("X-Backend"), r.Body)
			}
			h.add(r.Header.Get("X-Backend"), sent)
			time.Sleep(time.Millisecond)
			return nil
		})
	}()
	return sync.OnceValue(func() []error {
		stopped.Store(true)
		errs := <-done
		cancel()
		return errs
	})
}

// adminPool is a pool as GET /api/v1/pools/{pool} shows it.
type adminPool struct {
	Backends []struct {
		Address string `json:"address"`
		Source  string `json:"source"`
		Weight  int    `json:"weight"`
		State   string `json:"state"`
	} `json:"backends"`
	Discovery []struct {
		Source    string `json:"source"`
		OK        bool   `json:"ok"`
		Errors    uint64 `json:"errors"`
		LastError string `json:"last_error"`
	} `json:"discovery"`
}

// adminURL is the base URL of a sluice's admin API.
func (s *sluice) adminURL() string { return "http://" + s.srv.AdminAddr().String() }

func (s *sluice) pool(t *testing.T, c *http.Client, name string) adminPool {
	t.Helper()
	r := get(t, c, s.adminURL()+"/api/v1/pools/"+name)
	var p adminPool
	if r.Status != 200 || json.Unmarshal([]byte(r.Body), &p) != nil {
		t.Fatalf("GET /api/v1/pools/%s: %d %s", name, r.Status, r.Body)
	}
	return p
}

// members describes a pool's backends as "address source wN state",
// sorted.
func (p adminPool) members() string {
	var out []string
	for _, b := range p.Backends {
		out = append(out, fmt.Sprintf("%s %s w%d %s", b.Address, b.Source, b.Weight, b.State))
	}
	return memberList(out...)
}

// memberList is how members writes a set of backends.
func memberList(lines ...string) string {
	return strings.Join(slices.Sorted(slices.Values(lines)), "; ")
}

func (p adminPool) state(address string) string {
	for _, b := range p.Backends {
		if b.Address == address {
			return b.State
		}
	}
	return "absent"
}

// startBackendsOnePort starts one demo backend on each of ips, all on the
// same port (A and AAAA records give addresses only), and returns them and
// the port.
func startBackendsOnePort(t *testing.T, ips ...string) ([]*demoBackend, int) {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break // the port is taken on that address: try another
			}
			lns = append(lns, ln)
		}
		if len(lns) < len(ips) {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		var bs []*demoBackend
		for i, ln := range lns {
			name := "a" + ips[i]
			b := &demoBackend{t: t, Name: name, Addr: ln.Addr().String(), logger: testLogger(t, "backend "+name)}
			b.serve(ln)
			t.Cleanup(b.Stop)
			bs = append(bs, b)
		}
		return bs, port
	}
	t.Fatalf("no port free on all of %v", ips)
	return nil, 0
}

// discovered returns a pool named web with health checks whose backends
// come from discovery d only. Three failed checks take a backend out, so
// that checks a loaded machine answers late do not.
func discovered(d *config.Discovery) config.Pool {
	hc := checked(time.Second)
	hc.UnhealthyThreshold = 3
	return config.Pool{Name: "web", Balance: "round_robin", Discovery: d, HealthCheck: hc}
}

// waitUsed waits until backend name answered through the load, and
// returns how many SRV or A queries the DNS server answered since q0: the
// new backend must be used after the first look-up that sees it (or the
// one in flight when the records changed), whatever the time that takes.
func waitUsed(t *testing.T, h *hits, name string, srv *testenv.DNSServer, qname string, qtype uint16, q0 int) {
	t.Helper()
	eventually(t, 15*time.Second, "backend "+name+" answers", func() bool { return h.get(name) > 0 })
	if n := srv.Queries(qname, qtype) - q0; n > 2 {
		t.Errorf("backend %s was used only after %d look-ups of %s since its record appeared, want it after the first (or the one in flight)", name, n, qname)
	}
}

// TestDNSDiscoverySRVUnderLoad changes SRV records under load: a backend
// added is used from the next look-up, the lower priority level serves only
// while the higher one has no healthy backend, and a backend removed is
// drained; no request fails.
func TestDNSDiscoverySRVUnderLoad(t *testing.T) {
	t.Parallel()
	srv := testenv.StartDNS(t)
	bs := startBackends(t, "s1", "s2", "s3")
	const name = "_http._tcp.web.test"
	srvRR := func(prio int, b *demoBackend) string {
		_, port, _ := net.SplitHostPort(b.Addr)
		return fmt.Sprintf("%s. 1 IN SRV %d 1 %s h.test.", name, prio, port)
	}
	srv.Set(t, "h.test", dns.TypeA, "h.test. 1 IN A 127.0.0.1")
	srv.Set(t, name, dns.TypeSRV, srvRR(10, bs[0]), srvRR(20, bs[2]))

	p := discovered(&config.Discovery{DNS: &config.DNSDiscovery{Name: name, Type: "SRV", Resolver: srv.Addr, Refresh: 300 * time.Millisecond}})
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	h := &hits{}
	stop := backgroundLoad(t, s.URL("public")+"/", 4, h)
	defer stop()

	// Priority 10 serves alone while it has a healthy backend.
	eventually(t, 15*time.Second, "s1 answers", func() bool { return h.get("s1") > 0 })
	h.reset()
	eventually(t, 15*time.Second, "200 requests", func() bool { return h.total() >= 200 })
	if n := h.get("s3"); n > 0 {
		t.Errorf("s3 (priority 20) answered %d requests while s1 (priority 10) was healthy, want 0", n)
	}

	// s2 joins priority 10.
	q0 := srv.Queries(name, dns.TypeSRV)
	srv.Set(t, name, dns.TypeSRV, srvRR(10, bs[0]), srvRR(10, bs[1]), srvRR(20, bs[2]))
	waitUsed(t, h, "s2", srv, name, dns.TypeSRV, q0)

	// Priority 10 without a healthy backend: priority 20 takes over.
	for _, b := range bs[:2] {
		if r, err := c.Post(b.URL()+"/health/down", "", nil); err != nil || r.StatusCode != 200 {
			t.Fatalf("POST /health/down to %s: %v", b.Name, err)
		} else {
			r.Body.Close()
		}
	}
	eventually(t, 15*time.Second, "s3 answers once s1 and s2 are unhealthy", func() bool { return h.get("s3") > 0 })
	for _, b := range bs[:2] {
		if r, err := c.Post(b.URL()+"/health/up", "", nil); err != nil || r.StatusCode != 200 {
			t.Fatalf("POST /health/up to %s: %v", b.Name, err)
		} else {
			r.Body.Close()
		}
	}
	eventually(t, 15*time.Second, "s1 and s2 healthy again", func() bool {
		pl := s.pool(t, c, "web")
		return pl.state("http://"+bs[0].Addr) == "healthy" && pl.state("http://"+bs[1].Addr) == "healthy"
	})
	// A request sent once s1 or s2 has answered one sent after this point
	// is balanced by the picker that has them back.
	h.reset()
	eventually(t, 15*time.Second, "s1 or s2 answers", func() bool { return h.get("s1")+h.get("s2") > 0 })
	h.reset()
	eventually(t, 15*time.Second, "200 requests", func() bool { return h.total() >= 200 })
	if n := h.get("s3"); n > 0 {
		t.Errorf("s3 (priority 20) answered %d requests after s1 and s2 were healthy again, want 0", n)
	}

	// s1 leaves the records: drained, then removed; the others serve on.
	srv.Set(t, name, dns.TypeSRV, srvRR(10, bs[1]), srvRR(20, bs[2]))
	eventually(t, 15*time.Second, "s1 removed from the pool", func() bool {
		return s.pool(t, c, "web").state("http://"+bs[0].Addr) == "absent"
	})
	h.reset()
	eventually(t, 15*time.Second, "100 requests", func() bool { return h.total() >= 100 })
	if n := h.get("s1"); n > 0 {
		t.Errorf("s1 answered %d requests after it was removed, want 0", n)
	}
	pl := s.pool(t, c, "web")
	if len(pl.Discovery) != 1 || !pl.Discovery[0].OK || pl.Discovery[0].Source != "dns" {
		t.Errorf("discovery status %+v, want one dns source, OK", pl.Discovery)
	}
	errs := stop()
	reportErrors(t, "GETs while the SRV records changed", 100000, errs)
}

// TestDNSDiscoveryAUnderLoad changes A records under load. A records give
// addresses only, so the backends share a port on three loopback
// addresses (127.0.0.0/8 is all loopback).
func TestDNSDiscoveryAUnderLoad(t *testing.T) {
	t.Parallel()
	srv := testenv.StartDNS(t)
	bs, port := startBackendsOnePort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	const name = "web.test"
	srv.Set(t, name, dns.TypeA, "web.test. 1 IN A 127.0.0.2")
	p := discovered(&config.Discovery{DNS: &config.DNSDiscovery{Name: name, Type: "A", Port: port, Resolver: srv.Addr, Refresh: 300 * time.Millisecond}})
	s := startSluice(t, oneListener(p))
	c := newClient(t)
	h := &hits{}
	stop := backgroundLoad(t, s.URL("public")+"/", 4, h)
	defer stop()
	eventually(t, 15*time.Second, bs[0].Name+" answers", func() bool { return h.get(bs[0].Name) > 0 })

	q0 := srv.Queries(name, dns.TypeA)
	srv.Set(t, name, dns.TypeA, "web.test. 1 IN A 127.0.0.2", "web.test. 1 IN A 127.0.0.3")
	waitUsed(t, h, bs[1].Name, srv, name, dns.TypeA, q0)

	q0 = srv.Queries(name, dns.TypeA)
	srv.Set(t, name, dns.TypeA, "web.test. 1 IN A 127.0.0.3", "web.test. 1 IN A 127.0.0.4")
	waitUsed(t, h, bs[2].Name, srv, name, dns.TypeA, q0)
	eventually(t, 15*time.Second, bs[0].Name+" removed from the pool", func() bool {
		return s.pool(t, c, "web").state("http://"+bs[0].Addr) == "absent"
	})

	// The DNS server fails: the last backends found stay, and the failure
	// shows in the admin API and the metrics.
	srv.Fail(dns.RcodeServerFailure)
	eventually(t, 15*time.Second, "the failure shows in the admin API", func() bool {
		pl := s.pool(t, c, "web")
		return len(pl.Discovery) == 1 && !pl.Discovery[0].OK && pl.Discovery[0].Errors > 0
	})
	want := memberList(fmt.Sprintf("http://127.0.0.3:%d dns w1 healthy", port), fmt.Sprintf("http://127.0.0.4:%d dns w1 healthy", port))
	if got := s.pool(t, c, "web").members(); got != want {
		t.Errorf("pool while DNS fails: %s, want %s", got, want)
	}
	if got := metricValue(t, c, s, `sluice_discovery_errors_total{pool="web",source="dns"}`); got < 1 {
		t.Errorf("sluice_discovery_errors_total{pool=web,source=dns} = %v, want at least 1", got)
	}
	errs := stop()
	reportErrors(t, "GETs while the A records changed", 100000, errs)
}

// metricValue returns the value of one series of /metrics (-1 if absent).
func metricValue(t *testing.T, c *http.Client, s *sluice, series string) float64 {
	t.Helper()
	r := get(t, c, s.adminURL()+"/metrics")
	for _, line := range strings.Split(r.Body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return f
		}
	}
	return -1
}

// TestEtcdFleet: two sluice instances watch one etcd prefix. They converge
// on the same backends as keys are added, changed and deleted, under load
// and without a failed request; a fleet-wide drain made through one
// reaches the other; etcd killed leaves both pools as they were, with the
// failure counted and shown; etcd back, the watch resumes.
func TestEtcdFleet(t *testing.T) {
	t.Parallel()
	e := testenv.StartEtcd(t)
	bs := startBackends(t, "e1", "e2", "e3", "e4")
	const prefix = "/sluice/pools/web/"
	c := newClient(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(key string, b *demoBackend, weight int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, prefix+key, fmt.Sprintf(`{"address": %q, "weight": %d}`, b.URL(), weight)); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	del := func(key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Delete(ctx, prefix+key); err != nil {
			t.Fatalf("delete %s: %v", key, err)
		}
	}
	put("e1", bs[0], 1)
	put("e2", bs[1], 1)

	static := poolOf("static", bs[3])
	var fleet []*sluice
	for range 2 {
		p := discovered(&config.Discovery{Etcd: &config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix}})
		fleet = append(fleet, startSluice(t, oneListener(p, static)))
	}
	// converged waits until both instances show want.
	converged := func(what, want string) {
		t.Helper()
		for i, s := range fleet {
			eventually(t, 15*time.Second, fmt.Sprintf("instance %d: %s: pool web is %s", i, what, want), func() bool {
				return s.pool(t, c, "web").members() == want
			})
		}
	}
	u := func(b *demoBackend) string { return b.URL() }
	converged("at start", memberList(u(bs[0])+" etcd w1 healthy", u(bs[1])+" etcd w1 healthy"))

	h := &hits{}
	stop := backgroundLoad(t, fleet[0].URL("public")+"/", 4, h)
	defer stop()
	put("e3", bs[2], 1)
	converged("e3 added", memberList(u(bs[0])+" etcd w1 healthy", u(bs[1])+" etcd w1 healthy", u(bs[2])+" etcd w1 healthy"))
	eventually(t, 15*time.Second, "e3 answers", func() bool { return h.get("e3") > 0 })
	put("e1", bs[0], 3)
	converged("e1's weight changed", memberList(u(bs[0])+" etcd w3 healthy", u(bs[1])+" etcd w1 healthy", u(bs[2])+" etcd w1 healthy"))
	del("e2")
	converged("e2 deleted", memberList(u(bs[0])+" etcd w3 healthy", u(bs[2])+" etcd w1 healthy"))

	// A fleet-wide drain through instance 0 reaches instance 1.
	drain := fleet[0].adminURL() + "/api/v1/pools/web/backends/" + url.PathEscape(u(bs[2])) + "/drain?scope=fleet"
	r, err := c.Post(drain, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ State, Scope string }
	json.NewDecoder(r.Body).Decode(&v)
	r.Body.Close()
	if r.StatusCode != 200 || v.State != "draining" || v.Scope != "fleet" {
		t.Errorf("POST %s = %d %+v, want 200, state draining, scope fleet", drain, r.StatusCode, v)
	}
	converged("fleet-wide drain of e3", memberList(u(bs[0])+" etcd w3 healthy", u(bs[2])+" etcd w1 draining"))
	// A pool without etcd has no fleet.
	r, err = c.Post(fleet[0].adminURL()+"/api/v1/pools/static/backends/"+url.PathEscape(u(bs[3]))+"/drain?scope=fleet", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var e400 struct{ Error string }
	json.NewDecoder(r.Body).Decode(&e400)
	r.Body.Close()
	if wantErr := `pool "static" has no etcd discovery, so there is no fleet-wide store: drop ?scope=fleet to change this instance only, or add discovery.etcd to the pool`; r.StatusCode != 400 || e400.Error != wantErr {
		t.Errorf("fleet drain in pool static = %d %q, want 400 %q", r.StatusCode, e400.Error, wantErr)
	}

	// etcd killed: nothing changes but the status and the error count.
	e.Kill()
	for i, s := range fleet {
		eventually(t, 15*time.Second, fmt.Sprintf("instance %d shows the etcd failure", i), func() bool {
			pl := s.pool(t, c, "web")
			return len(pl.Discovery) == 1 && !pl.Discovery[0].OK
		})
		if got, want := s.pool(t, c, "web").members(), memberList(u(bs[0])+" etcd w3 healthy", u(bs[2])+" etcd w1 draining"); got != want {
			t.Errorf("instance %d while etcd is down: %s, want %s", i, got, want)
		}
		if n := metricValue(t, c, s, `sluice_discovery_errors_total{pool="web",source="etcd"}`); n < 1 {
			t.Errorf("instance %d: sluice_discovery_errors_total{pool=web,source=etcd} = %v, want at least 1", i, n)
		}
	}
	r, err = c.Post(fleet[1].adminURL()+"/api/v1/pools/web/backends/"+url.PathEscape(u(bs[0]))+"/drain?scope=fleet", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 503 {
		t.Errorf("fleet drain while etcd is down = %d, want 503", r.StatusCode)
	}
	if got := fleet[1].pool(t, c, "web").state(u(bs[0])); got != "healthy" {
		t.Errorf("e1 after a fleet drain that could not be written: %s, want healthy (nothing changed)", got)
	}

	// etcd back: the watches resume and see what comes next.
	e.Start()
	put("e4", bs[3], 2)
	converged("e4 added after etcd came back", memberList(u(bs[0])+" etcd w3 healthy", u(bs[2])+" etcd w1 draining", u(bs[3])+" etcd w2 healthy"))
	for i, s := range fleet {
		eventually(t, 15*time.Second, fmt.Sprintf("instance %d shows etcd answering again", i), func() bool {
			pl := s.pool(t, c, "web")
			return len(pl.Discovery) == 1 && pl.Discovery[0].OK
		})
	}
	errs := stop()
	reportErrors(t, "GETs while etcd's keys changed and etcd restarted", 100000, errs)
}
