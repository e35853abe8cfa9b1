package server

import (
	"net/textproto"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/ratelimit"
	"github.com/sluice-lb/sluice/internal/ratelimit/redisstore"
)

// limits are the rate limits of one snapshot, by name, and the store they
// share (nil: each instance counts alone).
type limits struct {
	byName map[string]*ratelimit.Limit
	store  *redisstore.Redis
	// storeKey is what the store was built from: a store is kept by a
	// reload only when it did not change.
	storeKey redisKey
}

type redisKey struct {
	cfg      config.RedisStore
	password string
}

// buildLimits builds the rate limits of cfg. A limit of prev whose name,
// numbers and store did not change is kept, with its buckets; so is prev's
// store when its settings (and password) did not change.
func (s *Server) buildLimits(cfg *config.Config, prev *limits) *limits {
	l := &limits{byName: map[string]*ratelimit.Limit{}}
	if st := cfg.RateLimitStore; st != nil && st.Redis != nil {
		pw, err := config.ReadPassword(st.Redis.PasswordFile)
		if err != nil {
			s.logger.Error("rate_limit_store.redis.password_file could not be read; connecting without a password", "error", err)
		}
		l.storeKey = redisKey{cfg: *st.Redis, password: pw}
		if prev != nil && prev.store != nil && prev.storeKey == l.storeKey {
			l.store = prev.store
		} else {
			l.store = redisstore.NewRedis(redisstore.RedisOptions{Address: st.Redis.Address, Password: pw,
				Prefix: st.Redis.Prefix, Timeout: st.Redis.Timeout, Events: s.events})
		}
	}
	add := func(rl *config.RateLimit) {
		if rl == nil {
			return
		}
		p := ratelimit.Params{Rate: rl.Rate, Per: rl.Per, Burst: rl.Burst}
		o := ratelimit.Options{Name: rl.Name, MaxKeys: rl.MaxKeys}
		if l.store != nil {
			o.Store = l.store
		}
		if prev != nil {
			if old := prev.byName[rl.Name]; old != nil && old.Same(p, o) {
				l.byName[rl.Name] = old
				return
			}
		}
		l.byName[rl.Name] = ratelimit.New(p, o)
	}
	for _, lc := range cfg.Listeners {
		add(lc.RateLimit)
		for _, r := range lc.Routes {
			add(r.RateLimit)
		}
	}
	return l
}

// rule returns the request path's form of rl (nil: none).
func (l *limits) rule(rl *config.RateLimit) *proxy.RateLimit {
	if rl == nil || l.byName[rl.Name] == nil {
		return nil
	}
	return &proxy.RateLimit{Key: proxy.ParseHashKey(rl.Key), Limit: l.byName[rl.Name]}
}

// retireStore closes the store of l unless keep uses it too (keep may be
// nil), keeping its error count for the counter.
func (s *Server) retireStore(l, keep *limits) {
	if l == nil || l.store == nil || keep != nil && keep.store == l.store {
		return
	}
	l.store.Close()
	s.storeErrors.Add(l.store.Errors())
}

// views sets the rate limits of listener lc on its view v.
func (l *limits) views(lc config.Listener, v *proxy.Listener) {
	v.RateLimit = l.rule(lc.RateLimit)
	for i, r := range lc.Routes {
		if r.RateLimit == nil {
			continue
		}
		if v.RouteLimits == nil {
			v.RouteLimits = make([]*proxy.RateLimit, len(lc.Routes))
		}
		v.RouteLimits[i] = l.rule(r.RateLimit)
	}
}

// RateLimitStore implements metrics.Source.
// errors counts the failed calls of every store this process had.
func (s *Server) RateLimitStore() (errors uint64, configured, up bool) {
	errors = s.storeErrors.Load()
	snap := s.snap.Load()
	if snap == nil || snap.limits.store == nil {
		return errors, false, false
	}
	st := snap.limits.store
	return errors + st.Errors(), true, st.Up()
}

// loadHeader is the canonical form of a pool's load field ("" for none).
func loadHeader(pc config.Pool) string {
	if pc.LoadReport == nil || pc.LoadReport.Header == "" {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(pc.LoadReport.Header)
}

// agentPort is a pool's agent port (0: none).
func agentPort(pc config.Pool) int {
	if pc.LoadReport == nil {
		return 0
	}
	return pc.LoadReport.AgentPort
}
