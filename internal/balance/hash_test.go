package balance

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluice-lb/sluice/internal/pool"
)

func hashPolicy(t testing.TB, name string, o Options) pool.Policy {
	t.Helper()
	if o.Rand == nil {
		o.Rand = seeded()
	}
	pol, err := New(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// keyMap picks every key once and returns key index → backend.
func keyMap(pk pool.Picker, n int) []*pool.Backend {
	m := make([]*pool.Backend, n)
	for i := range m {
		m[i] = pk.Pick(&pool.PickInfo{Key: fmt.Sprintf("user-%d", i)})
	}
	return m
}

func count(m []*pool.Backend) map[*pool.Backend]int {
	c := map[*pool.Backend]int{}
	for _, b := range m {
		c[b]++
	}
	return c
}

func TestConsistentHashSameKeySameBackend(t *testing.T) {
	bs := backends(1, 1, 1, 1, 1)
	pk := hashPolicy(t, "consistent_hash", Options{}).Build(pool.Set{All: bs, Ready: bs})
	first, second := keyMap(pk, 1000), keyMap(pk, 1000)
	for i := range first {
		if first[i] != second[i] {
			t.Fatalf("key user-%d: first %s, then %s", i, first[i].Address, second[i].Address)
		}
	}
	// Another sluice instance, which lists the same backends in another
	// order, sends every key to the same address.
	other := slices.Clone(bs)
	slices.Reverse(other)
	pk2 := hashPolicy(t, "consistent_hash", Options{}).Build(pool.Set{All: other, Ready: other})
	for i, b := range keyMap(pk2, 1000) {
		if b.Address != first[i].Address {
			t.Fatalf("key user-%d: %s in one instance, %s in another", i, first[i].Address, b.Address)
		}
	}
}

func TestConsistentHashDistribution(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		want    []int // expected keys of 10,000 per backend
		tol     float64
	}{
		{"five equal", []int{1, 1, 1, 1, 1}, []int{2000, 2000, 2000, 2000, 2000}, 0.20},
		{"one to two", []int{1, 2}, []int{3333, 6667}, 0.15},
		{"mixed", []int{1, 2, 3, 4}, []int{1000, 2000, 3000, 4000}, 0.15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			pk := hashPolicy(t, "consistent_hash", Options{}).Build(pool.Set{All: bs, Ready: bs})
			c := count(keyMap(pk, 10000))
			for i, b := range bs {
				want := float64(tt.want[i])
				if got := float64(c[b]); math.Abs(got-want) > tt.tol*want {
					t.Errorf("backend %d (weight %d) got %v keys, want %v±%v%%", i, tt.weights[i], got, want, tt.tol*100)
				}
			}
		})
	}
}

func TestConsistentHashRemovalMovesOneNth(t *testing.T) {
	const keys, n = 10000, 5
	for removed := range n {
		t.Run(fmt.Sprintf("remove %d", removed), func(t *testing.T) {
			bs := backends(1, 1, 1, 1, 1)
			pol := hashPolicy(t, "consistent_hash", Options{})
			before := keyMap(pol.Build(pool.Set{All: bs, Ready: bs}), keys)
			rest := slices.Delete(slices.Clone(bs), removed, removed+1)
			after := keyMap(pol.Build(pool.Set{All: rest, Ready: rest}), keys)
			moved := 0
			for i := range before {
				if before[i] != after[i] {
					moved++
				}
			}
			if lo, hi := keys/(2*n), keys*3/(2*n); moved < lo || moved > hi {
				t.Errorf("removing 1 of %d backends moved %d of %d keys, want %d..%d", n, moved, keys, lo, hi)
			}
		})
	}
}

func TestConsistentHashIneligibleMovesOnlyItsKeys(t *testing.T) {
	const keys = 10000
	bs := backends(1, 1, 1, 1, 1)
	p := pool.New("web", hashPolicy(t, "consistent_hash", Options{}), bs)
	pick := func() []*pool.Backend {
		m := make([]*pool.Backend, keys)
		for i := range m {
			m[i] = p.Pick(&pool.PickInfo{Key: fmt.Sprintf("user-%d", i)})
		}
		return m
	}
	before := pick()
	for _, state := range []string{"unhealthy", "draining"} {
		t.Run(state, func(t *testing.T) {
			gone := bs[2]
			if state == "unhealthy" {
				p.SetHealth(gone, pool.Unhealthy, timeZero)
				defer p.SetHealth(gone, pool.Healthy, timeZero)
			} else {
				p.SetAdmin(gone, pool.Draining)
				defer p.SetAdmin(gone, pool.Enabled)
			}
			after := pick()
			heirs := map[*pool.Backend]int{}
			for i := range before {
				switch {
				case before[i] != gone && after[i] != before[i]:
					t.Fatalf("key user-%d moved from healthy %s to %s", i, before[i].Address, after[i].Address)
				case after[i] == gone:
					t.Fatalf("key user-%d still on %s backend", i, state)
				case before[i] == gone:
					heirs[after[i]]++
				}
			}
			// The orphaned keys spread over the others rather than piling on one.
			if len(heirs) != 4 {
				t.Errorf("orphaned keys went to %d backends, want all 4 others: %v", len(heirs), heirs)
			}
		})
		if got := pick(); !slices.Equal(got, before) {
			t.Errorf("after the backend came back, keys did not return to it")
		}
	}
}

func TestConsistentHashRetryWalksOn(t *testing.T) {
	bs := backends(1, 1, 1, 1, 1)
	pol := hashPolicy(t, "consistent_hash", Options{})
	pk := pol.Build(pool.Set{All: bs, Ready: bs})
	for k := range 100 {
		key := fmt.Sprintf("user-%d", k)
		info := pool.PickInfo{Key: key}
		var seq []*pool.Backend
		for range len(bs) {
			b := pk.Pick(&info)
			if info.Tried(b) {
				t.Fatalf("key %s: retry returned tried %s (sequence %s)", key, b.Address, names(bs, seq))
			}
			info.MarkTried(b)
			seq = append(seq, b)
		}
		// A retry goes where the key would go if the first backend were down.
		down := slices.DeleteFunc(slices.Clone(bs), func(b *pool.Backend) bool { return b == seq[0] })
		want := pol.Build(pool.Set{All: bs, Ready: down}).Pick(&pool.PickInfo{Key: key})
		if seq[1] != want {
			t.Fatalf("key %s: retry went to %s, want %s (its backend without %s)", key, seq[1].Address, want.Address, seq[0].Address)
		}
	}
}

func TestConsistentHashBoundedLoad(t *testing.T) {
	bs := backends(1, 1, 1, 1, 1)
	pk := hashPolicy(t, "consistent_hash", Options{HashBalanceFactor: 1.25}).Build(pool.Set{All: bs, Ready: bs})
	home := pk.Pick(&pool.PickInfo{Key: "hot"})
	// Requests that never finish: in-flight counts only grow.
	for range 1000 {
		pk.Pick(&pool.PickInfo{Key: "hot"}).InFlight.Add(1)
	}
	var total int64
	for _, b := range bs {
		total += b.InFlight.Load()
	}
	limit := int64(math.Ceil(1.25*float64(total)/float64(len(bs)))) + 1
	for i, b := range bs {
		if got := b.InFlight.Load(); got > limit {
			t.Errorf("backend %d has %d in flight, want ≤ %d", i, got, limit)
		}
	}
	if got, most := home.InFlight.Load(), slices.MaxFunc(bs, func(a, b *pool.Backend) int {
		return int(a.InFlight.Load() - b.InFlight.Load())
	}).InFlight.Load(); got != most {
		t.Errorf("the hot key's own backend has %d in flight, want the most (%d)", got, most)
	}
}

func TestConsistentHashWithoutBoundKeepsHotKey(t *testing.T) {
	bs := backends(1, 1, 1)
	pk := hashPolicy(t, "consistent_hash", Options{}).Build(pool.Set{All: bs, Ready: bs})
	home := pk.Pick(&pool.PickInfo{Key: "hot"})
	for range 100 {
		b := pk.Pick(&pool.PickInfo{Key: "hot"})
		b.InFlight.Add(1)
		if b != home {
			t.Fatalf("hot key moved to %s without a balance factor", b.Address)
		}
	}
}

func TestConsistentHashWithoutKeyIsRandom(t *testing.T) {
	bs := backends(1, 1, 1)
	pk := hashPolicy(t, "consistent_hash", Options{}).Build(pool.Set{All: bs, Ready: bs})
	c := map[*pool.Backend]int{}
	for range 3000 {
		c[pk.Pick(&pool.PickInfo{})]++
	}
	for i, b := range bs {
		if got := c[b]; got < 800 || got > 1200 {
			t.Errorf("backend %d got %d of 3000 keyless picks, want 1000±200", i, got)
		}
	}
}

func TestConsistentHashNothingReady(t *testing.T) {
	bs := backends(1, 1)
	pk := hashPolicy(t, "consistent_hash", Options{}).Build(pool.Set{All: bs})
	if got := pk.Pick(&pool.PickInfo{Key: "k"}); got != nil {
		t.Errorf("pick with nothing ready = %s, want nil", got.Address)
	}
}

func TestIPHash(t *testing.T) {
	bs := backends(1, 1, 1, 1, 1)
	ipHash := hashPolicy(t, "ip_hash", Options{}).Build(pool.Set{All: bs, Ready: bs})
	byKey := hashPolicy(t, "consistent_hash", Options{HashKey: "client_ip"}).Build(pool.Set{All: bs, Ready: bs})
	tests := []struct {
		name string
		ip   string
		same string // another form of the same address, "" if none
	}{
		{"IPv4", "192.0.2.10", "::ffff:192.0.2.10"},
		{"IPv6", "2001:db8::1", "2001:db8:0:0:0:0:0:1"},
		{"IPv6 zone ignored", "fe80::1", "fe80::1%eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := pool.PickInfo{ClientIP: netip.MustParseAddr(tt.ip)}
			want := ipHash.Pick(&info)
			for range 10 {
				if got := ipHash.Pick(&pool.PickInfo{ClientIP: netip.MustParseAddr(tt.ip)}); got != want {
					t.Fatalf("%s: got %s, then %s", tt.ip, want.Address, got.Address)
				}
			}
			if got := byKey.Pick(&info); got != want {
				t.Errorf("consistent_hash on client_ip: %s, ip_hash: %s", got.Address, want.Address)
			}
			if got := ipHash.Pick(&pool.PickInfo{ClientIP: netip.MustParseAddr(tt.same)}); got != want {
				t.Errorf("%s: %s, but %s: %s", tt.ip, want.Address, tt.same, got.Address)
			}
		})
	}
	// Many clients spread over every backend.
	c := map[*pool.Backend]int{}
	for i := range 1000 {
		c[ipHash.Pick(&pool.PickInfo{ClientIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})})]++
	}
	for i, b := range bs {
		if got := c[b]; got < 140 || got > 260 {
			t.Errorf("backend %d got %d of 1000 client addresses, want 200±60", i, got)
		}
	}
}

func TestNewRejectsBadBalanceFactor(t *testing.T) {
	for _, f := range []float64{0.5, -1, 100.5, math.NaN(), math.Inf(1)} {
		if _, err := New("consistent_hash", Options{HashBalanceFactor: f}); err == nil {
			t.Errorf("New(consistent_hash, factor %v) = nil error, want one", f)
		}
	}
	for _, f := range []float64{0, 1, 1.25, 100} {
		if _, err := New("ip_hash", Options{HashBalanceFactor: f}); err != nil {
			t.Errorf("New(ip_hash, factor %v) = %v, want no error", f, err)
		}
	}
}

func TestMaglevTableIsPrimeAndWeighted(t *testing.T) {
	bs := backends(1, 2, 3)
	table := maglevTable(bs)
	if !isPrime(uint64(len(table))) || len(table) < 100*len(bs) {
		t.Errorf("table size %d, want a prime ≥ %d", len(table), 100*len(bs))
	}
	c := make([]int, len(bs))
	for _, k := range table {
		c[k]++
	}
	for i, w := range []int{1, 2, 3} {
		want := len(table) * w / 6
		if d := c[i] - want; d < -len(bs) || d > len(bs) {
			t.Errorf("backend %d (weight %d) has %d slots, want %d±%d", i, w, c[i], want, len(bs))
		}
	}
}
