package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// found is a backend as the tests compare it: address, weight, level.
type found struct {
	Address  string
	Weight   int
	Priority int
}

func summary(bs []discovery.Backend) []found {
	var out []found
	for _, b := range bs {
		if b.URL == nil || b.URL.String() != b.Address {
			panic(fmt.Sprintf("backend %q has URL %v", b.Address, b.URL))
		}
		out = append(out, found{b.Address, b.Weight, b.Priority})
	}
	return out
}

// TestDNSLookup resolves against a DNS server on loopback.
func TestDNSLookup(t *testing.T) {
	srv := testenv.StartDNS(t)
	srv.Set(t, "web.test", dns.TypeA, "web.test. 30 IN A 127.0.0.2", "web.test. 10 IN A 127.0.0.1")
	srv.Set(t, "v6.test", dns.TypeAAAA, "v6.test. 60 IN AAAA ::1")
	srv.Set(t, "alias.test", dns.TypeA, "alias.test. 5 IN CNAME web.test.", "web.test. 30 IN A 127.0.0.1")
	srv.Set(t, "_http._tcp.web.test", dns.TypeSRV,
		"_http._tcp.web.test. 20 IN SRV 10 5 8081 a.test.",
		"_http._tcp.web.test. 20 IN SRV 10 0 8082 b.test.",
		"_http._tcp.web.test. 20 IN SRV 30 1 8083 c.test.",
		"_http._tcp.web.test. 20 IN SRV 20 65535 8084 a.test.",
	)
	srv.Set(t, "a.test", dns.TypeA, "a.test. 3 IN A 127.0.0.1")
	srv.Set(t, "b.test", dns.TypeA, "b.test. 300 IN A 127.0.0.1")
	srv.Set(t, "c.test", dns.TypeAAAA, "c.test. 300 IN AAAA ::1")
	srv.Set(t, "_http._tcp.gone.test", dns.TypeSRV,
		"_http._tcp.gone.test. 20 IN SRV 10 1 8081 a.test.",
		"_http._tcp.gone.test. 20 IN SRV 10 1 8082 nowhere.test.")
	srv.Set(t, "_http._tcp.none.test", dns.TypeSRV, "_http._tcp.none.test. 20 IN SRV 10 1 8081 nowhere.test.")
	var many []string
	for i := range 120 {
		many = append(many, fmt.Sprintf("big.test. 30 IN A 127.0.1.%d", i+1))
	}
	srv.Set(t, "big.test", dns.TypeA, many...)

	srvSet := []found{
		{"http://127.0.0.1:8081", 5, 0},
		{"http://127.0.0.1:8082", 1, 0},
		{"http://127.0.0.1:8084", 1000, 1},
		{"http://[::1]:8083", 1, 2},
	}
	tests := []struct {
		name     string
		cfg      config.DNSDiscovery
		noExtra  bool
		want     []found
		wantTTL  time.Duration
		wantErr  string
		wantSize int // instead of want: only the count
	}{
		{name: "A", cfg: config.DNSDiscovery{Name: "web.test", Type: "A", Port: 8080, Scheme: "http"},
			want: []found{{"http://127.0.0.1:8080", 1, 0}, {"http://127.0.0.2:8080", 1, 0}}, wantTTL: 10 * time.Second},
		{name: "AAAA", cfg: config.DNSDiscovery{Name: "v6.test", Type: "AAAA", Port: 443, Scheme: "https"},
			want: []found{{"https://[::1]:443", 1, 0}}, wantTTL: 60 * time.Second},
		{name: "A through a CNAME", cfg: config.DNSDiscovery{Name: "alias.test", Type: "A", Port: 80, Scheme: "http"},
			want: []found{{"http://127.0.0.1:80", 1, 0}}, wantTTL: 5 * time.Second},
		{name: "SRV with additional records", cfg: config.DNSDiscovery{Name: "_http._tcp.web.test", Type: "SRV", Scheme: "http"},
			want: srvSet, wantTTL: 3 * time.Second},
		{name: "SRV, targets asked for", cfg: config.DNSDiscovery{Name: "_http._tcp.web.test", Type: "SRV", Scheme: "http"},
			noExtra: true, want: srvSet, wantTTL: 3 * time.Second},
		{name: "SRV target without address left out", cfg: config.DNSDiscovery{Name: "_http._tcp.gone.test", Type: "SRV", Scheme: "http"},
			want: []found{{"http://127.0.0.1:8081", 1, 0}}, wantTTL: 3 * time.Second},
		{name: "truncated over UDP, asked again over TCP", cfg: config.DNSDiscovery{Name: "big.test", Type: "A", Port: 80, Scheme: "http"},
			wantSize: 120, wantTTL: 30 * time.Second},

		{name: "NXDOMAIN", cfg: config.DNSDiscovery{Name: "nothing.test", Type: "A", Port: 80, Scheme: "http"},
			wantErr: "A nothing.test.: no such record (NXDOMAIN)"},
		{name: "no record of the type", cfg: config.DNSDiscovery{Name: "web.test", Type: "AAAA", Port: 80, Scheme: "http"},
			wantErr: "AAAA web.test.: no such record"},
		{name: "no SRV target resolves", cfg: config.DNSDiscovery{Name: "_http._tcp.none.test", Type: "SRV", Scheme: "http"},
			wantErr: "SRV _http._tcp.none.test.: no target could be resolved: target nowhere.test.: AAAA nowhere.test.: no such record (NXDOMAIN)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noExtra {
				srv.NoAdditional()
			}
			tt.cfg.Resolver = srv.Addr
			set, ttl, err := discovery.NewDNS(tt.cfg, discovery.DNSOptions{}).Lookup(context.Background())
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Lookup error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if tt.wantSize > 0 {
				if len(set.Backends) != tt.wantSize {
					t.Errorf("Lookup found %d backends, want %d", len(set.Backends), tt.wantSize)
				}
			} else if diff := cmp.Diff(tt.want, summary(set.Backends)); diff != "" {
				t.Errorf("Lookup backends (-want +got):\n%s", diff)
			}
			if ttl != tt.wantTTL {
				t.Errorf("Lookup TTL = %v, want %v", ttl, tt.wantTTL)
			}
		})
	}
	if n := srv.Queries("b.test", dns.TypeA); n != 1 {
		t.Errorf("b.test A was asked %d times, want 1 (by the one test without additional records)", n)
	}
}

// TestDNSServerFailure: a server that fails (SERVFAIL) is a failure, not an
// empty answer, and so is one that does not answer; an SRV target whose
// look-up fails fails the whole look-up rather than losing that target.
func TestDNSServerFailure(t *testing.T) {
	srv := testenv.StartDNS(t)
	srv.Set(t, "web.test", dns.TypeA, "web.test. 30 IN A 127.0.0.1")
	srv.Fail(dns.RcodeServerFailure)
	d := discovery.NewDNS(config.DNSDiscovery{Name: "web.test", Type: "A", Port: 80, Scheme: "http", Resolver: srv.Addr}, discovery.DNSOptions{})
	if _, _, err := d.Lookup(context.Background()); err == nil || err.Error() != "A web.test.: the server answered SERVFAIL" {
		t.Errorf("Lookup with SERVFAIL: error %v, want the server's answer named", err)
	}

	// A resolver that is not there: the query times out.
	dead := discovery.NewDNS(config.DNSDiscovery{Name: "web.test", Type: "A", Port: 80, Scheme: "http", Resolver: "127.0.0.1:9"}, discovery.DNSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := dead.Lookup(ctx); err == nil || !strings.HasPrefix(err.Error(), "A web.test.: ") {
		t.Errorf("Lookup from a dead resolver: error %v, want one naming the query", err)
	}

	ex := func(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetReply(q)
		switch q.Question[0].Qtype {
		case dns.TypeSRV:
			rr, _ := dns.NewRR("_h._tcp.x.test. 30 IN SRV 1 1 80 a.test.")
			m.Answer = append(m.Answer, rr)
		default:
			return nil, errors.New("i/o timeout")
		}
		return m, nil
	}
	d = discovery.NewDNS(config.DNSDiscovery{Name: "_h._tcp.x.test", Type: "SRV", Scheme: "http", Resolver: "127.0.0.1:53"}, discovery.DNSOptions{Exchange: ex})
	if _, _, err := d.Lookup(context.Background()); err == nil || err.Error() != "SRV _h._tcp.x.test.: target a.test.: A a.test.: i/o timeout" {
		t.Errorf("Lookup with a target that cannot be asked: error %v, want the whole look-up to fail", err)
	}
}

// TestDNSSystemResolver: without a configured resolver, the servers and
// search domains of resolv.conf are used, each server in turn.
func TestDNSSystemResolver(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.1\nnameserver ::1\nsearch corp.test test\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	ex := func(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
		mu.Lock()
		defer mu.Unlock()
		name := q.Question[0].Name
		asked = append(asked, name+"@"+server)
		if server == "127.0.0.1:53" {
			return nil, errors.New("connection refused")
		}
		m := new(dns.Msg)
		m.SetReply(q)
		if name == "web.test." {
			rr, _ := dns.NewRR("web.test. 30 IN A 127.0.0.1")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		return m, nil
	}
	d := discovery.NewDNS(config.DNSDiscovery{Name: "web", Type: "A", Port: 80, Scheme: "http"},
		discovery.DNSOptions{ResolvConf: conf, Exchange: ex})
	set, _, err := d.Lookup(context.Background())
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if diff := cmp.Diff([]found{{"http://127.0.0.1:80", 1, 0}}, summary(set.Backends)); diff != "" {
		t.Errorf("Lookup backends (-want +got):\n%s", diff)
	}
	want := []string{"web.corp.test.@127.0.0.1:53", "web.corp.test.@[::1]:53", "web.test.@127.0.0.1:53", "web.test.@[::1]:53"}
	if diff := cmp.Diff(want, asked); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}

	missing := discovery.NewDNS(config.DNSDiscovery{Name: "web", Type: "A", Port: 80, Scheme: "http"},
		discovery.DNSOptions{ResolvConf: filepath.Join(t.TempDir(), "none")})
	if _, _, err := missing.Lookup(context.Background()); err == nil || !strings.Contains(err.Error(), "or set discovery.dns.resolver") {
		t.Errorf("Lookup without resolv.conf: error %v, want one that says to set a resolver", err)
	}
}

// recorder is a discovery.Reporter that keeps what it was told, with the
// (fake) time.
type recorder struct {
	mu     sync.Mutex
	start  time.Time
	events []string
}

func (r *recorder) Found(s discovery.Set) {
	r.add(fmt.Sprintf("found %d", len(s.Backends)))
}

func (r *recorder) Failed(err error) { r.add("failed: " + err.Error()) }

func (r *recorder) add(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%v %s", time.Since(r.start), what))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// TestDNSRefresh checks, on fake time, when the name is resolved again:
// every refresh, sooner when the TTL is shorter (but not more than once a
// second), and after a failure sooner, doubling up to refresh.
func TestDNSRefresh(t *testing.T) {
	type step struct {
		ttl  uint32
		fail bool
	}
	tests := []struct {
		name    string
		refresh time.Duration
		answers []step // one per query; the last repeats
		until   time.Duration
		want    []string
	}{
		{"refresh shorter than TTL", 30 * time.Second, []step{{ttl: 300}}, 70 * time.Second,
			[]string{"0s found 1", "30s found 1", "1m0s found 1"}},
		{"TTL shorter than refresh", 30 * time.Second, []step{{ttl: 10}, {ttl: 4}, {ttl: 100}}, 50 * time.Second,
			[]string{"0s found 1", "10s found 1", "14s found 1", "44s found 1"}},
		{"TTL 0 waits a second", 30 * time.Second, []step{{ttl: 0}}, 2500 * time.Millisecond,
			[]string{"0s found 1", "1s found 1", "2s found 1"}},
		{"failures back off up to refresh", 5 * time.Second, []step{{fail: true}}, 20 * time.Second,
			[]string{"0s failed: A web.test.: the server answered SERVFAIL", "1s failed: A web.test.: the server answered SERVFAIL",
				"3s failed: A web.test.: the server answered SERVFAIL", "7s failed: A web.test.: the server answered SERVFAIL",
				"12s failed: A web.test.: the server answered SERVFAIL", "17s failed: A web.test.: the server answered SERVFAIL"}},
		{"refresh shorter than a second", 300 * time.Millisecond, []step{{ttl: 0}}, 700 * time.Millisecond,
			[]string{"0s found 1", "300ms found 1", "600ms found 1"}},
		{"a success after failures", 30 * time.Second, []step{{fail: true}, {ttl: 300}}, 40 * time.Second,
			[]string{"0s failed: A web.test.: the server answered SERVFAIL", "1s found 1", "31s found 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := 0
				ex := func(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
					st := tt.answers[min(n, len(tt.answers)-1)]
					n++
					m := new(dns.Msg)
					m.SetReply(q)
					if st.fail {
						m.Rcode = dns.RcodeServerFailure
						return m, nil
					}
					rr, _ := dns.NewRR(fmt.Sprintf("web.test. %d IN A 127.0.0.1", st.ttl))
					m.Answer = append(m.Answer, rr)
					return m, nil
				}
				d := discovery.NewDNS(config.DNSDiscovery{Name: "web.test", Type: "A", Port: 80, Scheme: "http",
					Refresh: tt.refresh, Resolver: "127.0.0.1:53"}, discovery.DNSOptions{Exchange: ex})
				r := &recorder{start: time.Now()}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					d.Run(ctx, r)
				}()
				time.Sleep(tt.until)
				synctest.Wait()
				cancel()
				<-done
				if diff := cmp.Diff(tt.want, r.take()); diff != "" {
					t.Errorf("look-ups (-want +got):\n%s", diff)
				}
			})
		})
	}
}
