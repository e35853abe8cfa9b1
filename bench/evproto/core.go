package main

// -core: each request goes through the per-request work of sluice's core,
// with sluice's own packages, as the engine does it with a default config:
// the listener view's Resolve (client address, rate limit, route), the
// pool's retry budget, pick and connection slot, the backend's latency
// histogram at the response head, passive health, and the listener's
// counters and histograms (proxy.Listener.Finish), so that the prototype's
// figures include what the product's features cost per request on a loop,
// not only the I/O model. The attempt loop is the core's own, as steps that
// never block (proxy.Attempts: Next, Done, Result), of which the prototype
// takes the first attempt: a full pool is a 503 here, where the product
// would keep the request in a wait list, and retries beyond the HTTP/1.1
// path's one re-send are left out as before. Every pool object is safe for
// use by several loops at once, as it is by the engine's goroutines.

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	sconfig "github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/health"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
	"golang.org/x/net/http2/hpack"
)

// core is the product's view of the prototype's one listener and pool.
type core struct {
	view  *proxy.Listener
	index map[*pool.Backend]int // a backend's position in cfg.backends
}

func newCore(addrs []string, perBackend int64) *core {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	k := &core{index: map[*pool.Backend]int{}}
	var bs []*pool.Backend
	for i, a := range addrs {
		u := &url.URL{Scheme: "http", Host: a}
		b := pool.NewBackend(u.String(), u, 1)
		bs = append(bs, b)
		k.index[b] = i
	}
	p := pool.New("web", balance.RoundRobin{}, bs)
	t := &proxy.Target{Pool: p, Health: health.New(p, nil, logger, health.Options{}),
		Retries: sconfig.Retries{NumRetries: 2, BudgetPercent: 20, OnConnectFailure: true, OnReset: true}, RetryAfter: "1"}
	p.Budget.SetPercent(20)
	p.Limit.PerBackend = perBackend
	k.view = &proxy.Listener{Name: "bench", Routes: route.Compile(nil, "web", func(string) int { return 0 }),
		Targets: []*proxy.Target{t}, NoPool: &pool.Stats{}, Stats: &proxy.ListenerStats{}}
	return k
}

// coreReq is one request's part in the core: its record and attempts.
type coreReq struct {
	rec    proxy.Record
	info   pool.PickInfo
	x      proxy.Attempts
	b      *pool.Backend // the backend of the attempt under way
	head   time.Duration
	replay replay
}

// replay says whether a request may be sent again (proxy.Replayer).
type replay bool

func (r replay) Replayable() bool { return bool(r) }
func (r replay) Resendable() bool { return bool(r) }

// begin resolves the request and takes a slot on the picked backend: its
// index in cfg.backends, or -1 and the status the client gets.
func (k *core) begin(q *coreReq, v proxy.Version, replayable bool, host, path, query string, h proxy.Fields, peer netip.Addr) (int, int) {
	q.rec = proxy.Record{Start: time.Now(), Info: &q.info, Version: v}
	q.info = pool.PickInfo{}
	q.b, q.head, q.replay = nil, 0, replay(replayable)
	t, lim := k.view.Resolve(context.Background(), &q.rec, host, path, query, h, peer)
	if lim.Refused() {
		return -1, 429
	}
	if t == nil {
		return -1, 404
	}
	q.x.Start(&q.rec, q.replay)
	b, _ := q.x.Next()
	if b == nil {
		return -1, 503 // full (the product would wait), or nothing eligible
	}
	q.b = b
	return k.index[b], 0
}

// header records the response head's arrival.
func (k *core) header(q *coreReq) {
	if q.b != nil && q.head == 0 {
		q.head = time.Since(q.rec.Start)
		q.b.Stats.ObserveLatency(q.head)
	}
}

// finish accounts for the request's end: the slot, passive health, the
// listener's counters.
func (k *core) finish(q *coreReq, status int, bytes int64) {
	if b := q.b; b != nil {
		o := proxy.Outcome{Class: proxy.Done, Status: status, Header: q.head}
		if status == 499 {
			o.Class = proxy.ClientGone
		}
		q.x.Done(context.Background(), b, o) // the prototype's attempt is its last
		q.rec.Result = q.x.Result()
		q.b = nil
	}
	q.rec.Status, q.rec.Bytes = status, bytes
	k.view.Finish(&q.rec)
}

// answered is the status a client got: the prototype's own (failed, when
// not 0), the backend's once its head was relayed, else 499 (the client
// left, or reset its stream, first).
func answered(failed int, relayed bool, rh *edge.ResponseHead) int {
	switch {
	case failed != 0:
		return failed
	case relayed:
		return rh.Status
	}
	return 499
}

// headFields reads an HTTP/1.1 head's fields (proxy.Fields).
type headFields struct {
	head  []byte
	first int
}

func (f headFields) Get(name string) string { v, _ := f.Value(name, 0); return v }

func (f headFields) Value(name string, i int) (string, bool) {
	for fl := range edge.Fields(f.head, f.first) {
		if len(fl.Name) == len(name) && edge.EqualFold(fl.Name, name) {
			if i == 0 {
				return bstr(fl.Value), true
			}
			i--
		}
	}
	return "", false
}

// h2Fields reads a decoded HTTP/2 header list (proxy.Fields); its names
// are in lower case.
type h2Fields []hpack.HeaderField

func (f h2Fields) Get(name string) string { v, _ := f.Value(name, 0); return v }

func (f h2Fields) Value(name string, i int) (string, bool) {
	for _, hf := range f {
		if len(hf.Name) == len(name) && strings.EqualFold(hf.Name, name) {
			if i == 0 {
				return hf.Value, true
			}
			i--
		}
	}
	return "", false
}
