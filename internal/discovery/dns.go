package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/miekg/dns"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

// DNS timing: a TTL shorter than refresh brings the next look-up forward,
// but to no sooner than minRefresh (or refresh, when that is shorter), each query gets queryTimeout per
// server, and after a failure the next try comes after retryBase, doubling
// up to refresh.
const (
	minRefresh   = time.Second
	queryTimeout = 2 * time.Second
	retryBase    = time.Second
)

// ednsSize is the UDP payload size sluice offers (the DNS flag day 2020
// value); a larger answer comes truncated and is asked again over TCP.
const ednsSize = 1232

// Exchanger sends one DNS query to a server (ip:port) and returns the
// answer. The zero DNSOptions use miekg/dns over UDP, then TCP when the
// answer was truncated.
type Exchanger func(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error)

// DNSOptions tune a DNS source; the zero value is what sluice runs with.
type DNSOptions struct {
	// ResolvConf is the file naming the system's DNS servers and search
	// domains when the config gives no resolver; "" means
	// /etc/resolv.conf. It is read before every look-up.
	ResolvConf string
	// Exchange replaces the network (tests on fake time).
	Exchange Exchanger
}

// DNS is a Source that resolves a name (A, AAAA or SRV) every refresh,
// sooner when the records' TTL is shorter.
type DNS struct {
	cfg      config.DNSDiscovery
	conf     string
	exchange Exchanger
}

var _ Source = (*DNS)(nil)

// NewDNS returns a source for cfg (which Validate has checked).
func NewDNS(cfg config.DNSDiscovery, o DNSOptions) *DNS {
	d := &DNS{cfg: cfg, conf: o.ResolvConf, exchange: o.Exchange}
	if d.conf == "" {
		d.conf = "/etc/resolv.conf"
	}
	if d.exchange == nil {
		d.exchange = exchange
	}
	return d
}

// Kind implements Source.
func (d *DNS) Kind() pool.Source { return pool.SourceDNS }

// Describe implements Source.
func (d *DNS) Describe() string {
	s := d.cfg.Type + " " + d.cfg.Name
	if d.cfg.Resolver != "" {
		s += " at " + d.cfg.Resolver
	}
	return s
}

// Run implements Source: it resolves at once, then again after refresh or
// the shortest TTL of the answer, whichever comes first.
func (d *DNS) Run(ctx context.Context, r Reporter) {
	failures := 0
	for {
		set, ttl, err := d.Lookup(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := d.cfg.Refresh
		if err != nil {
			r.Failed(err)
			failures++
			wait = min(wait, retryBase<<min(failures-1, 10))
		} else {
			failures = 0
			r.Found(set)
			if ttl < wait {
				wait = max(ttl, min(minRefresh, wait))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Lookup resolves the name once and returns the backends it names, sorted
// by address, and the shortest TTL of the records used. An answer without
// a usable record is an error, so that a name that disappears never
// empties a pool.
func (d *DNS) Lookup(ctx context.Context) (Set, time.Duration, error) {
	servers, names, err := d.resolvers()
	if err != nil {
		return Set{}, 0, err
	}
	var set Set
	var ttl time.Duration
	switch d.cfg.Type {
	case "SRV":
		set.Backends, ttl, err = d.srv(ctx, servers, names)
	default:
		qtype := dns.TypeA
		if d.cfg.Type == "AAAA" {
			qtype = dns.TypeAAAA
		}
		var ips []net.IP
		ips, ttl, err = d.addresses(ctx, servers, names, qtype, nil)
		for _, ip := range ips {
			set.Backends = append(set.Backends, d.backend(ip, d.cfg.Port, 1, 0))
		}
	}
	if err != nil {
		return Set{}, 0, err
	}
	slices.SortFunc(set.Backends, func(a, b Backend) int { return cmp.Compare(a.Address, b.Address) })
	set.Backends = slices.CompactFunc(set.Backends, func(a, b Backend) bool { return a.Address == b.Address })
	return set, ttl, nil
}

// resolvers returns the servers to ask and the names to try: the
// configured resolver and the name as given, or the servers and search
// list of resolv.conf.
func (d *DNS) resolvers() (servers, names []string, err error) {
	if d.cfg.Resolver != "" {
		return []string{d.cfg.Resolver}, []string{dns.Fqdn(d.cfg.Name)}, nil
	}
	cc, err := dns.ClientConfigFromFile(d.conf)
	if err != nil {
		return nil, nil, fmt.Errorf("read the system's DNS servers: %w (or set discovery.dns.resolver)", err)
	}
	if len(cc.Servers) == 0 {
		return nil, nil, fmt.Errorf("%s names no nameserver: add one, or set discovery.dns.resolver", d.conf)
	}
	for _, s := range cc.Servers {
		servers = append(servers, net.JoinHostPort(s, cc.Port))
	}
	return servers, cc.NameList(d.cfg.Name), nil
}

// backend returns the backend at ip:port.
func (d *DNS) backend(ip net.IP, port, weight, priority int) Backend {
	addr := d.cfg.Scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
	u, _ := url.Parse(addr) // an IP and a port: it parses
	return Backend{Address: addr, URL: u, Weight: weight, Priority: priority}
}

// srv resolves SRV records and their targets' addresses (from the
// answer's additional section when it has them; A, else AAAA). A target
// that definitely has no address is left out; one whose look-up failed
// fails the whole look-up, so that the last set found stays. Priorities become levels
// in ascending order: the lowest priority value is level 0. Weights are
// kept within 1 to 1000 (SRV weight 0, "rarely", becomes 1).
func (d *DNS) srv(ctx context.Context, servers, names []string) ([]Backend, time.Duration, error) {
	var recs []*dns.SRV
	ans, name, err := d.query(ctx, servers, names, dns.TypeSRV, func(ans *dns.Msg) bool {
		recs = recs[:0]
		for _, rr := range ans.Answer {
			if s, ok := rr.(*dns.SRV); ok && s.Target != "." {
				recs = append(recs, s)
			}
		}
		return len(recs) > 0
	})
	if err != nil {
		return nil, 0, err
	}
	ttl := minTTL(ans.Answer)
	levels := map[uint16]int{}
	var prios []uint16
	for _, s := range recs {
		if _, ok := levels[s.Priority]; !ok {
			levels[s.Priority] = 0
			prios = append(prios, s.Priority)
		}
	}
	slices.Sort(prios)
	for i, p := range prios {
		levels[p] = i
	}
	var out []Backend
	var failed []error
	for _, s := range recs {
		ips, t, err := d.addresses(ctx, servers, []string{s.Target}, dns.TypeA, ans.Extra)
		if errors.Is(err, errNoRecords) {
			ips, t, err = d.addresses(ctx, servers, []string{s.Target}, dns.TypeAAAA, ans.Extra)
		}
		if err != nil && !errors.Is(err, errNoRecords) {
			// Not an answer but a failure: the last set found stays.
			return nil, 0, fmt.Errorf("SRV %s: target %s: %w", name, s.Target, err)
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("target %s: %w", s.Target, err))
			continue // a target without an address has no backend
		}
		ttl = min(ttl, t)
		w := min(max(int(s.Weight), 1), 1000)
		for _, ip := range ips {
			out = append(out, d.backend(ip, int(s.Port), w, levels[s.Priority]))
		}
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("SRV %s: no target could be resolved: %w", name, errors.Join(failed...))
	}
	return out, ttl, nil
}

// addresses returns the addresses of the first of names that has records
// of qtype, and the shortest TTL of the records that led to them (a CNAME
// included). A single name's records are taken from extra (an SRV
// answer's additional section) when it holds them, else asked for.
func (d *DNS) addresses(ctx context.Context, servers, names []string, qtype uint16, extra []dns.RR) ([]net.IP, time.Duration, error) {
	pick := func(rrs []dns.RR, name string) ([]net.IP, []dns.RR) {
		var ips []net.IP
		var used []dns.RR
		for _, rr := range rrs {
			if name != "" && !equalName(rr.Header().Name, name) {
				continue
			}
			switch a := rr.(type) {
			case *dns.A:
				if qtype == dns.TypeA {
					ips, used = append(ips, a.A), append(used, rr)
				}
			case *dns.AAAA:
				if qtype == dns.TypeAAAA {
					ips, used = append(ips, a.AAAA), append(used, rr)
				}
			case *dns.CNAME:
				used = append(used, rr)
			}
		}
		return ips, used
	}
	if len(names) == 1 {
		if ips, used := pick(extra, names[0]); len(ips) > 0 {
			return ips, minTTL(used), nil
		}
	}
	var ips []net.IP
	var used []dns.RR
	_, _, err := d.query(ctx, servers, names, qtype, func(ans *dns.Msg) bool {
		ips, used = pick(ans.Answer, "")
		return len(ips) > 0
	})
	return ips, minTTL(used), err
}

// query asks for each name in turn, each of the servers in turn until one
// answers, and returns the first answer that use accepts, with the name
// it answers for.
func (d *DNS) query(ctx context.Context, servers, names []string, qtype uint16, use func(*dns.Msg) bool) (*dns.Msg, string, error) {
	typ := dns.TypeToString[qtype]
	var errs []error
	for _, name := range names {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), qtype)
		q.SetEdns0(ednsSize, false)
		var ans *dns.Msg
		var err error
		for _, srv := range servers {
			qctx, cancel := context.WithTimeout(ctx, queryTimeout)
			ans, err = d.exchange(qctx, q, srv)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
		}
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", typ, name, err))
		case ans.Rcode == dns.RcodeNameError:
			errs = append(errs, fmt.Errorf("%s %s: %w (NXDOMAIN)", typ, name, errNoRecords))
		case ans.Rcode != dns.RcodeSuccess:
			errs = append(errs, fmt.Errorf("%s %s: the server answered %s", typ, name, dns.RcodeToString[ans.Rcode]))
		case !use(ans):
			errs = append(errs, fmt.Errorf("%s %s: %w", typ, name, errNoRecords))
		default:
			return ans, name, nil
		}
	}
	return nil, "", errors.Join(errs...)
}

// errNoRecords is a definite answer that a name has no record of the type
// asked (NXDOMAIN, or none in the answer), as opposed to a server that
// failed or could not be reached.
var errNoRecords = errors.New("no such record")

// minTTL returns the shortest TTL of rrs.
func minTTL(rrs []dns.RR) time.Duration {
	ttl := time.Duration(1<<63 - 1)
	for _, rr := range rrs {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	return ttl
}

// equalName compares two DNS names, case-insensitively and with or
// without the final dot.
func equalName(a, b string) bool {
	return dns.CanonicalName(a) == dns.CanonicalName(b)
}

// exchange sends q over UDP and, when the answer is truncated, over TCP.
func exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{UDPSize: ednsSize}
	ans, _, err := c.ExchangeContext(ctx, q, server)
	if err == nil && ans.Truncated {
		c.Net = "tcp"
		ans, _, err = c.ExchangeContext(ctx, q, server)
	}
	return ans, err
}
