package testenv

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is an authoritative DNS server on 127.0.0.1 (UDP and TCP on
// one port) whose records a test sets and changes while it runs.
type DNSServer struct {
	// Addr is its ip:port, for discovery.dns.resolver.
	Addr string

	mu      sync.Mutex
	records map[dnsKey][]dns.RR
	rcode   int // answered to every query when not RcodeSuccess
	noExtra bool
	queries map[dnsKey]int
}

type dnsKey struct {
	name  string // canonical
	qtype uint16
}

// StartDNS starts a DNS server that the test's cleanup stops.
func StartDNS(t testing.TB) *DNSServer {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ln == nil; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		// The same port for TCP; another program may hold it.
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if try == 20 {
				t.Fatalf("dns server: no port free for both UDP and TCP: %v", err)
			}
		}
	}
	s := &DNSServer{Addr: pc.LocalAddr().String(), records: map[dnsKey][]dns.RR{}, queries: map[dnsKey]int{}}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ActivateAndServe()
		}()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("dns server did not start")
		}
	}
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
		wg.Wait()
	})
	return s
}

// Set replaces the records of one name and type with rrs, each in zone
// file form ("web.test. 1 IN A 127.0.0.1"); none removes them.
func (s *DNSServer) Set(t testing.TB, name string, qtype uint16, rrs ...string) {
	t.Helper()
	var parsed []dns.RR
	for _, r := range rrs {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		parsed = append(parsed, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[dnsKey{dns.CanonicalName(name), qtype}] = parsed
}

// Fail makes the server answer every query with rcode (dns.RcodeServerFailure,
// dns.RcodeRefused…); dns.RcodeSuccess answers from the records again.
func (s *DNSServer) Fail(rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode = rcode
}

// NoAdditional stops the server from putting the addresses of SRV
// targets in the additional section, so clients must ask for them.
func (s *DNSServer) NoAdditional() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noExtra = true
}

// Queries returns how many queries for name and qtype the server has
// answered.
func (s *DNSServer) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[dnsKey{dns.CanonicalName(name), qtype}]
}

// ServeDNS answers from the records: NXDOMAIN for a name without any,
// NOERROR with no answer for a type the name lacks, and for SRV the
// targets' A and AAAA records as additional data.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	qn := q.Question[0]
	k := dnsKey{dns.CanonicalName(qn.Name), qn.Qtype}
	s.queries[k]++
	switch {
	case s.rcode != dns.RcodeSuccess:
		m.Rcode = s.rcode
	case !s.known(k.name):
		m.Rcode = dns.RcodeNameError
	default:
		m.Answer = append(m.Answer, s.records[k]...)
		if qn.Qtype == dns.TypeSRV && !s.noExtra {
			for _, rr := range m.Answer {
				if srv, ok := rr.(*dns.SRV); ok {
					target := dns.CanonicalName(srv.Target)
					m.Extra = append(m.Extra, s.records[dnsKey{target, dns.TypeA}]...)
					m.Extra = append(m.Extra, s.records[dnsKey{target, dns.TypeAAAA}]...)
				}
			}
		}
	}
	if o := q.IsEdns0(); o != nil {
		m.SetEdns0(o.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := 512
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// known reports whether any record has the name; called with mu held.
func (s *DNSServer) known(name string) bool {
	for k, rrs := range s.records {
		if k.name == name && len(rrs) > 0 {
			return true
		}
	}
	return false
}
