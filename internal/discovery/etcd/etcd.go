// Package etcd is a discovery source that watches a key prefix in etcd
// with the official client (go.etcd.io/etcd/client/v3).
//
// Under the prefix, each key is one backend and its value is JSON
// {"address": "http://10.0.0.5:8080", "weight": 1} (weight 1 to 1000,
// default 1; other fields are ignored, so registrars may add their own).
// Keys under PREFIX + "_fleet/" are not backends: each holds the
// fleet-wide admin state of the backend whose address, path-escaped
// (url.PathEscape), follows, as JSON {"state": "draining", "weight": 3}
// (see discovery.Fleet). Every sluice watching the prefix applies it; the
// admin API's ?scope=fleet writes it.
//
// The source lists the prefix, then watches it from the next revision:
// puts and deletes arrive as etcd sends them. When the connection breaks,
// the watch resumes from the last revision seen; when that revision was
// compacted meanwhile, the prefix is listed again. A probe while the watch
// is quiet notices an etcd that stopped answering, which is reported as a
// failure while the last set found stays.
package etcd

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/pool"
)

// FleetDir is the part of a key, after the prefix, under which the
// fleet-wide admin state is kept.
const FleetDir = "_fleet/"

// FleetKey returns the key that holds the fleet-wide state of the backend
// at address under prefix.
func FleetKey(prefix, address string) string {
	return prefix + FleetDir + url.PathEscape(address)
}

// Timing: how long a connection attempt, a probe and a fleet write may
// take, and the longest wait before trying again after a failure.
const (
	dialTimeout  = 5 * time.Second
	probeTimeout = time.Second
	writeTries   = 5
	maxBackoff   = 5 * time.Second
)

// Options tune a Source; the zero value is what sluice runs with.
type Options struct {
	// Probe is how often the source asks etcd whether it answers, so that
	// an outage shows while nothing changes; 0 means 2s.
	Probe time.Duration
}

// Source watches one prefix. Create it with New.
type Source struct {
	cfg   config.EtcdDiscovery
	probe time.Duration
	cli   atomic.Pointer[clientv3.Client] // while Run is connected
}

var (
	_ discovery.Source      = (*Source)(nil)
	_ discovery.FleetWriter = (*Source)(nil)
)

// New returns a source for cfg (which Validate has checked). It connects
// when it runs.
func New(cfg config.EtcdDiscovery, o Options) *Source {
	s := &Source{cfg: cfg, probe: o.Probe}
	if s.probe <= 0 {
		s.probe = 2 * time.Second
	}
	return s
}

// Kind implements discovery.Source.
func (s *Source) Kind() pool.Source { return pool.SourceEtcd }

// Describe implements discovery.Source.
func (s *Source) Describe() string {
	return "prefix " + s.cfg.Prefix + " at " + strings.Join(s.cfg.Endpoints, ",")
}

// Run implements discovery.Source.
func (s *Source) Run(ctx context.Context, r discovery.Reporter) {
	var cli *clientv3.Client
	for failures := 0; cli == nil; failures++ {
		var err error
		if cli, err = s.connect(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.Failed(err)
			if !sleep(ctx, backoffFor(failures)) {
				return
			}
		}
	}
	s.cli.Store(cli)
	defer func() {
		s.cli.Store(nil)
		cli.Close()
	}()
	st := &state{prefix: s.cfg.Prefix}
	var rev int64 // 0: list the prefix
	for failures := 0; ctx.Err() == nil; {
		var err error
		if rev == 0 {
			if rev, err = s.list(ctx, cli, st, r); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.Failed(fmt.Errorf("list %s: %w%s", s.cfg.Prefix, err, s.diagnose(ctx, err)))
				failures++
				sleep(ctx, backoffFor(failures))
				continue
			}
		}
		failures = 0
		if rev, err = s.watch(ctx, cli, rev, st, r); err != nil && ctx.Err() == nil {
			r.Failed(fmt.Errorf("watch %s: %w", s.cfg.Prefix, err))
			failures++
			sleep(ctx, backoffFor(failures))
		}
	}
}

// connect returns a client for the configured endpoints. Without
// credentials it does not wait for a connection; with them it logs in,
// which fails when etcd cannot be reached within dialTimeout.
func (s *Source) connect(ctx context.Context) (*clientv3.Client, error) {
	pw, err := s.cfg.Password()
	if err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:            s.cfg.Endpoints,
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Username:             s.cfg.Username,
		Password:             pw,
		Logger:               zap.NewNop(),
		Context:              ctx,
		// Reconnect within seconds of etcd coming back, not after gRPC's
		// default backoff of up to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
	if s.cfg.TLS != nil {
		if cc.TLS, err = s.cfg.TLS.ClientConfig(); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %s: %w", strings.Join(s.cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// list reads the whole prefix into st, reports it and returns its
// revision.
func (s *Source) list(ctx context.Context, cli *clientv3.Client, st *state, r discovery.Reporter) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	resp, err := cli.Get(lctx, s.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	st.reset()
	var bad []error
	for _, kv := range resp.Kvs {
		if err := st.put(string(kv.Key), kv.Value); err != nil {
			bad = append(bad, err)
		}
	}
	st.report(r, bad)
	return resp.Header.Revision, nil
}

// watch follows the prefix from rev+1 and returns the last revision seen:
// 0 when that revision was compacted (list again), with an error when the
// watch failed.
func (s *Source) watch(ctx context.Context, cli *clientv3.Client, rev int64, st *state, r discovery.Reporter) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	// Watch returns only once its stream is up: with etcd unreachable it
	// waits, so it runs aside while the probe goes on.
	ready := make(chan clientv3.WatchChan, 1)
	go func() { ready <- cli.Watch(wctx, s.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) }()
	var wch clientv3.WatchChan // nil until ready
	defer func() {
		cancel()
		if wch == nil {
			<-ready
		}
	}()
	probe := time.NewTicker(s.probe)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return rev, nil
		case wch = <-ready:
			ready = nil
		case wr, ok := <-wch:
			switch {
			case !ok:
				return rev, errors.New("the watch ended")
			case wr.CompactRevision != 0:
				return 0, nil // resuming is impossible: list again
			case wr.Err() != nil:
				return rev, wr.Err()
			case wr.IsProgressNotify():
				rev = max(rev, wr.Header.Revision) // every event up to it was sent
				continue
			case len(wr.Events) == 0:
				continue
			}
			var bad []error
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					st.delete(key)
				} else if err := st.put(key, ev.Kv.Value); err != nil {
					bad = append(bad, err)
				}
			}
			// Not the header's revision: while the watch catches up, that is
			// the store's, ahead of the events sent so far.
			rev = wr.Events[len(wr.Events)-1].Kv.ModRevision
			st.report(r, bad)
		case <-probe.C:
			pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
			_, err := cli.Get(pctx, s.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			pcancel()
			switch {
			case err != nil && ctx.Err() == nil:
				r.Failed(fmt.Errorf("etcd at %s does not answer: %w%s", strings.Join(s.cfg.Endpoints, ","), err, s.diagnose(ctx, err)))
			case err == nil:
				st.report(r, nil) // it answers (again): the status says when it last did
			}
		}
	}
}

// diagnose says, when err is a time-out (the etcd client retries what
// fails to connect until the deadline, which hides why), why the first
// endpoint cannot be reached: connection refused, a TLS handshake refused.
// It returns "" when the endpoint can be reached or err is something else.
func (s *Source) diagnose(ctx context.Context, err error) string {
	if !errors.Is(err, context.DeadlineExceeded) || len(s.cfg.Endpoints) == 0 {
		return ""
	}
	ep := s.cfg.Endpoints[0]
	host := ep
	if u, err := url.Parse(ep); err == nil && u.Host != "" {
		host = u.Host
	}
	dctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, derr := (&net.Dialer{}).DialContext(dctx, "tcp", host)
	if derr == nil && s.cfg.TLS != nil {
		tc, _ := s.cfg.TLS.ClientConfig()
		if tc != nil {
			tc.ServerName, _, _ = net.SplitHostPort(host)
			tconn := tls.Client(conn, tc)
			derr = tconn.HandshakeContext(dctx)
			if derr == nil {
				// TLS 1.3 servers refuse a client certificate after the
				// handshake: a read shows it.
				tconn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, rerr := tconn.Read(make([]byte, 1)); rerr != nil && !isTimeout(rerr) {
					derr = rerr
				}
			}
			conn = tconn
		}
	}
	if conn != nil {
		conn.Close()
	}
	if derr == nil {
		return ""
	}
	return fmt.Sprintf(" (%s: %v)", ep, derr)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// WriteFleet implements discovery.FleetWriter: a read, then a write that
// succeeds only if nobody wrote the key in between (tried a few times).
func (s *Source) WriteFleet(ctx context.Context, address string, change discovery.Fleet) error {
	cli := s.cli.Load()
	if cli == nil {
		return fmt.Errorf("not connected to etcd at %s yet", strings.Join(s.cfg.Endpoints, ","))
	}
	key := FleetKey(s.cfg.Prefix, address)
	for range writeTries {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		var cur discovery.Fleet
		var modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			json.Unmarshal(resp.Kvs[0].Value, &cur) // an unreadable record is replaced
		}
		if change.State != "" {
			cur.State = change.State
		}
		if change.Weight != 0 {
			cur.Weight = change.Weight
		}
		body, _ := json.Marshal(cur)
		tr, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpPut(key, string(body))).
			Commit()
		if err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("write %s: changed concurrently %d times: try again", key, writeTries)
}

// state is what the prefix holds now, by key.
type state struct {
	prefix   string
	backends map[string]discovery.Backend // by key
	fleet    map[string]discovery.Fleet   // by key
}

func (st *state) reset() {
	st.backends = map[string]discovery.Backend{}
	st.fleet = map[string]discovery.Fleet{}
}

// value is a backend key's JSON.
type value struct {
	Address string `json:"address"`
	Weight  *int   `json:"weight"` // nil: 1
}

// put records one key's value. A value that cannot be used removes what
// the key held and is returned as an error naming the key.
func (st *state) put(key string, v []byte) error {
	if st.backends == nil {
		st.reset()
	}
	delete(st.backends, key)
	delete(st.fleet, key)
	rest := strings.TrimPrefix(key, st.prefix)
	if addr, ok := strings.CutPrefix(rest, FleetDir); ok {
		f, err := parseFleet(addr, v)
		if err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		st.fleet[key] = f
		return nil
	}
	b, err := parseBackend(v)
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	st.backends[key] = b
	return nil
}

func (st *state) delete(key string) {
	delete(st.backends, key)
	delete(st.fleet, key)
}

func parseBackend(v []byte) (discovery.Backend, error) {
	var val value
	if err := json.Unmarshal(v, &val); err != nil {
		return discovery.Backend{}, fmt.Errorf(`value is not JSON {"address": "http://10.0.0.5:8080", "weight": 1}: %v`, err)
	}
	u, err := config.ParseBackendAddress(val.Address)
	if err != nil {
		return discovery.Backend{}, err
	}
	w := 1
	if val.Weight != nil {
		w = *val.Weight
	}
	if w < 1 || w > 1000 {
		return discovery.Backend{}, fmt.Errorf("weight %d out of range: use 1 to 1000", w)
	}
	return discovery.Backend{Address: val.Address, URL: u, Weight: w}, nil
}

func parseFleet(escaped string, v []byte) (discovery.Fleet, error) {
	if _, err := url.PathUnescape(escaped); err != nil {
		return discovery.Fleet{}, fmt.Errorf("the address after %q is not path-escaped: %v", FleetDir, err)
	}
	var f discovery.Fleet
	if err := json.Unmarshal(v, &f); err != nil {
		return discovery.Fleet{}, fmt.Errorf(`value is not JSON {"state": "draining", "weight": 3}: %v`, err)
	}
	if _, ok := f.AdminState(); f.State != "" && !ok {
		return discovery.Fleet{}, fmt.Errorf("state %q is not valid: use enabled, draining or disabled", f.State)
	}
	if f.Weight < 0 || f.Weight > 1000 {
		return discovery.Fleet{}, fmt.Errorf("weight %d out of range: use 1 to 1000, or 0 for the backend's own", f.Weight)
	}
	return f, nil
}

// report hands the current set to r, after the errors of the keys that
// could not be used.
func (st *state) report(r discovery.Reporter, bad []error) {
	if len(bad) > 0 {
		r.Failed(fmt.Errorf("%w; the other keys apply", errors.Join(bad...)))
	}
	keys := make([]string, 0, len(st.backends))
	for k := range st.backends {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	set := discovery.Set{Fleet: map[string]discovery.Fleet{}}
	seen := map[string]bool{}
	for _, k := range keys {
		b := st.backends[k]
		if !seen[b.Address] { // two keys for one backend: the first key wins
			seen[b.Address] = true
			set.Backends = append(set.Backends, b)
		}
	}
	for k, f := range st.fleet {
		addr, _ := url.PathUnescape(strings.TrimPrefix(k, st.prefix+FleetDir))
		set.Fleet[addr] = f
	}
	slices.SortFunc(set.Backends, func(a, b discovery.Backend) int { return cmp.Compare(a.Address, b.Address) })
	r.Found(set)
}

// backoffFor returns the wait after the n-th failure in a row (0-based):
// 250ms doubling up to maxBackoff.
func backoffFor(n int) time.Duration {
	return min(250*time.Millisecond<<min(n, 8), maxBackoff)
}

// sleep waits d, and reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
