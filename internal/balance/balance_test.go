package balance

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

var timeZero time.Time

func backends(weights ...int) []*pool.Backend {
	bs := make([]*pool.Backend, len(weights))
	for i, w := range weights {
		addr := fmt.Sprintf("http://127.0.0.1:%d", 8081+i)
		u, _ := url.Parse(addr)
		bs[i] = pool.NewBackend(addr, u, w)
	}
	return bs
}

func names(bs []*pool.Backend, seq []*pool.Backend) string {
	var sb strings.Builder
	for _, b := range seq {
		for i, c := range bs {
			if c == b {
				sb.WriteByte(byte('a' + i))
			}
		}
	}
	return sb.String()
}

func TestRoundRobinSequence(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		n       int
		want    string
	}{
		{"equal", []int{1, 1, 1}, 9, "abcabcabc"},
		{"one to three", []int{1, 3}, 8, "babbbabb"},
		{"nginx example 5,1,1", []int{5, 1, 1}, 7, "aabacaa"},
		{"common divisor", []int{2, 6}, 8, "babbbabb"},
		{"single", []int{4}, 3, "aaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			pk := RoundRobin{}.Build(pool.Set{All: bs, Ready: bs})
			var seq []*pool.Backend
			for range tt.n {
				seq = append(seq, pk.Pick(&pool.PickInfo{}))
			}
			if got := names(bs, seq); got != tt.want {
				t.Errorf("sequence = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRoundRobinSkipsIneligible(t *testing.T) {
	bs := backends(1, 1, 1)
	p := pool.New("web", RoundRobin{}, bs)
	p.SetHealth(bs[1], pool.Unhealthy, timeZero)
	var seq []*pool.Backend
	for range 4 {
		seq = append(seq, p.Pick(&pool.PickInfo{}))
	}
	if got, want := names(bs, seq), "acac"; got != want {
		t.Errorf("sequence = %q, want %q", got, want)
	}
	p.SetHealth(bs[0], pool.Down, timeZero)
	p.SetHealth(bs[2], pool.Unhealthy, timeZero)
	if got := p.Pick(&pool.PickInfo{}); got != nil {
		t.Errorf("pick with nothing ready = %v, want nil", got.Address)
	}
}

func TestRetryPicksDifferentBackend(t *testing.T) {
	bs := backends(1, 1, 1)
	p := pool.New("web", RoundRobin{}, bs)
	for start := range 3 {
		var info pool.PickInfo
		seen := map[*pool.Backend]bool{}
		for range 3 {
			b := p.Pick(&info)
			if seen[b] {
				t.Fatalf("start %d: backend %s picked twice within one request", start, b.Address)
			}
			seen[b] = true
			info.MarkTried(b)
		}
		// All tried: a fourth pick still returns a backend.
		if b := p.Pick(&info); b == nil {
			t.Fatalf("pick after all tried = nil, want a backend")
		}
	}
}

func TestRandomWeighted(t *testing.T) {
	bs := backends(1, 3)
	r := rand.New(rand.NewPCG(1, 2))
	pk := Random{Rand: r.Uint64}.Build(pool.Set{All: bs, Ready: bs})
	const n = 40000
	counts := map[*pool.Backend]int{}
	for range n {
		counts[pk.Pick(&pool.PickInfo{})]++
	}
	// Expected 10000 and 30000; a seeded source gives an exact result, and
	// the bounds are ±3% which is over 10 standard deviations.
	if got := counts[bs[0]]; got < 9700 || got > 10300 {
		t.Errorf("weight-1 backend got %d of %d picks, want 10000±300", got, n)
	}
	if got := counts[bs[1]]; got < 29700 || got > 30300 {
		t.Errorf("weight-3 backend got %d of %d picks, want 30000±300", got, n)
	}
}

func BenchmarkPick(b *testing.B) {
	type bench struct {
		name, policy string
		o            Options
	}
	var benches []bench
	for _, name := range Names(nil) {
		benches = append(benches, bench{name, name, Options{}})
	}
	benches = append(benches, bench{"consistent_hash_bounded", "consistent_hash", Options{HashBalanceFactor: 1.25}})
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			pol, err := New(bb.policy, bb.o)
			if err != nil {
				b.Fatal(err)
			}
			bs := backends(1, 2, 3, 1, 1)
			// A pool at work: requests in flight and latency averages, so
			// that load-aware policies do their full comparison.
			for i, be := range bs {
				be.InFlight.Store(int64(i%3 + 1))
				be.Stats.ObserveLatency(time.Duration(i+1) * time.Millisecond)
			}
			p := pool.New("bench", pol, bs)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				info := pool.PickInfo{
					ClientIP: netip.AddrFrom4([4]byte{192, 0, 2, 7}),
					Key:      "session=5f2b9c41e07d",
				}
				for pb.Next() {
					if p.Pick(&info) == nil {
						b.Fatal("nil pick")
					}
				}
			})
		})
	}
}

// TestSpecs checks the policy table: every name builds the policy it
// describes, "" builds Default, and the properties the config validates
// against match what the policies do.
func TestSpecs(t *testing.T) {
	want := map[string]struct {
		policy                                pool.Policy
		hashKey, balanceFactor, ramping, load bool
	}{
		"round_robin":     {RoundRobin{}, false, false, true, false},
		"random":          {Random{}, false, false, true, false},
		"least_requests":  {LeastRequests{}, false, false, true, true},
		"p2c":             {P2C{}, false, false, true, true},
		"consistent_hash": {&ConsistentHash{}, true, true, false, false},
		"ip_hash":         {&ConsistentHash{}, false, true, false, false},
	}
	names := Names(nil)
	if len(names) != len(want) {
		t.Errorf("Names(nil) = %q, want the %d policies of DESIGN.md", names, len(want))
	}
	for _, name := range names {
		w, ok := want[name]
		s, found := Lookup(name)
		if !ok || !found {
			t.Errorf("policy %q: in want %v, found by Lookup %v", name, ok, found)
			continue
		}
		if s.Name != name || s.HashKey != w.hashKey || s.BalanceFactor != w.balanceFactor || s.SlowStart != w.ramping || s.Load != w.load {
			t.Errorf("Lookup(%q) = %+v, want HashKey %v, BalanceFactor %v, SlowStart %v, Load %v", name, s, w.hashKey, w.balanceFactor, w.ramping, w.load)
		}
		pol, err := New(name, Options{HashKey: "header:X-User"})
		if err != nil {
			t.Errorf("New(%q) = %v", name, err)
			continue
		}
		if got, want := fmt.Sprintf("%T", pol), fmt.Sprintf("%T", w.policy); got != want {
			t.Errorf("New(%q) = %s, want %s", name, got, want)
		}
		if h, ok := pol.(*ConsistentHash); ok && h.ClientIP == s.HashKey {
			t.Errorf("New(%q, hash_key header:X-User).ClientIP = %v, want %v", name, h.ClientIP, !s.HashKey)
		}
	}
	if pol, err := New("", Options{}); err != nil || pol != (RoundRobin{}) || Default != "round_robin" {
		t.Errorf(`New("") = %#v, %v; want %s`, pol, err, Default)
	}
	if _, err := New("round_robbin", Options{}); err == nil {
		t.Error("New(round_robbin) = nil error, want one")
	}
	if _, ok := Lookup(""); ok {
		t.Error(`Lookup("") found a policy; "" is only New's default`)
	}
	if got, want := Names(func(s Spec) bool { return s.BalanceFactor }), []string{"consistent_hash", "ip_hash"}; !slices.Equal(got, want) {
		t.Errorf("Names(BalanceFactor) = %q, want %q", got, want)
	}
}
