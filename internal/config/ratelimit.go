package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/ratelimit"
)

// rateLimit checks a listener's or route's rate_limit at p (nil: none).
func (v *validator) rateLimit(p string, rl *RateLimit) {
	if rl == nil {
		return
	}
	v.limits++
	if !validHashKey(rl.Key) {
		v.errorf(p+".key", "rate_limit.key %q is not valid: use client_ip, path, header:NAME, cookie:NAME or query:NAME", rl.Key)
	}
	ok := true
	if rl.Rate < 1 {
		v.errorf(p+".rate", "rate_limit.rate must be 1 or more, got %d: give the requests allowed per `per`", rl.Rate)
		ok = false
	}
	ok = v.positive(p+".per", rl.Per, "") && ok
	if rl.Burst < 1 && !(rl.Rate < 1 && rl.Burst == rl.Rate) { // a burst defaulted from a bad rate is that one error
		v.errorf(p+".burst", "rate_limit.burst must be 1 or more, got %d (leave it out to use the rate)", rl.Burst)
		ok = false
	}
	if ok {
		if err := (ratelimit.Params{Rate: rl.Rate, Per: rl.Per, Burst: rl.Burst}).Check(); err != nil {
			v.errorf(p+".rate", "rate_limit: %v: lower the rate or the burst, or change per", err)
		}
	}
	atLeast(v, p+".max_keys", rl.MaxKeys, 1, "")
	if rl.MaxKeys > maxLimitKeys {
		v.errorf(p+".max_keys", "rate_limit.max_keys %d is over %d (16 bytes each): lower it", rl.MaxKeys, maxLimitKeys)
	}
	switch {
	case rl.Name == "":
		v.errorf(p+".name", "rate_limit.name is empty: name the limit, or leave the key out")
	case !printableName(rl.Name):
		v.errorf(p+".name", "rate_limit.name %q must be printable ASCII without \" or \\: clients read it in the RateLimit fields", rl.Name)
	default:
		if first, dup := v.limitNames[rl.Name]; dup {
			v.errorf(p+".name", "duplicate rate_limit name %q (first at %s): each limit needs its own, or they would share counts in the store", rl.Name, v.where(first))
		} else {
			v.limitNames[rl.Name] = p + ".name"
		}
	}
}

// maxLimitKeys bounds rate_limit.max_keys: 256 MiB of table.
const maxLimitKeys = 1 << 24

// printableName reports whether s can go in a quoted RateLimit field as it
// is.
func printableName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// rateLimitStore checks rate_limit_store (nil: none). It reads the password
// file to check it is usable.
func (v *validator) rateLimitStore(st *RateLimitStore) {
	if st == nil {
		return
	}
	r := st.Redis
	if r == nil {
		v.errorf("rate_limit_store", "rate_limit_store has no store: add redis: {address: HOST:PORT}, or remove the block")
		return
	}
	if r.Address == "" {
		v.errorf("rate_limit_store.redis.address", `rate_limit_store.redis needs an address, e.g. "127.0.0.1:6379"`)
	} else if err := checkHostPort("redis address", r.Address); err != nil {
		v.errorf("rate_limit_store.redis.address", "%v", err)
	} else if strings.HasSuffix(r.Address, ":0") {
		v.errorf("rate_limit_store.redis.address", "redis address %q has port 0: give Redis's port, e.g. 6379", r.Address)
	}
	if r.PasswordFile != "" {
		pw, err := readSmallFile(r.PasswordFile)
		if err == nil && strings.TrimSpace(string(pw)) == "" {
			err = fmt.Errorf("%s is empty", r.PasswordFile)
		}
		if err != nil {
			v.errorf("rate_limit_store.redis.password_file", "rate_limit_store.redis.password_file: %v", err)
		}
	}
	if v.positive("rate_limit_store.redis.timeout", r.Timeout, "") && r.Timeout > 5*time.Second {
		v.errorf("rate_limit_store.redis.timeout", "rate_limit_store.redis.timeout %v is over 5s, which every request may wait: shorten it", r.Timeout)
	}
	if v.limits == 0 {
		v.warnf("rate_limit_store", "rate_limit_store is set but no listener or route has a rate_limit: it is connected to for nothing")
	}
}

// ReadPassword returns the password in a password file, without the line
// end; "" for no file.
func ReadPassword(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := readSmallFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
