package proxy

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/pool"
)

func stickyPool(n int) (*pool.Pool, []*pool.Backend, *Sticky) {
	var bs []*pool.Backend
	for i := range n {
		u := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", 9000+i)}
		bs = append(bs, pool.NewBackend(u.String(), u, 1))
	}
	return pool.New("web", balance.RoundRobin{}, bs), bs, NewSticky("S", time.Hour, StickyKey("k"))
}

func TestStickyLookupFollowsMembership(t *testing.T) {
	p, bs, st := stickyPool(50)
	id := st.index(p).ids[bs[7]]
	if got := st.lookup(p, id); got != bs[7] {
		t.Fatalf("lookup = %v, want backend 7", got)
	}
	if n := testing.AllocsPerRun(100, func() { st.lookup(p, id) }); n != 0 {
		t.Errorf("lookup allocates %v times, want 0", n)
	}
	// A new membership rebuilds the index; a removed backend is not found.
	p.Remove(bs[7])
	if got := st.lookup(p, id); got != nil {
		t.Errorf("lookup of a removed backend = %v, want nil", got.Address)
	}
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:9999"}
	nb := pool.NewBackend(u.String(), u, 1)
	p.Add(nb)
	if got := st.lookup(p, st.index(p).ids[nb]); got != nb {
		t.Errorf("lookup of an added backend = %v, want it", got)
	}
}

func BenchmarkStickyLookup(b *testing.B) {
	p, bs, st := stickyPool(50)
	id := st.index(p).ids[bs[40]]
	b.ReportAllocs()
	for b.Loop() {
		st.lookup(p, id)
	}
}
