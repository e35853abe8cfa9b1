package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// fakeSource reports what the test tells it to.
type fakeSource struct {
	kind pool.Source
	do   chan func(discovery.Reporter)
}

func newFake(kind pool.Source) *fakeSource {
	return &fakeSource{kind: kind, do: make(chan func(discovery.Reporter))}
}

func (f *fakeSource) Kind() pool.Source { return f.kind }
func (f *fakeSource) Describe() string  { return "fake " + string(f.kind) }
func (f *fakeSource) Run(ctx context.Context, r discovery.Reporter) {
	for {
		select {
		case <-ctx.Done():
			return
		case fn := <-f.do:
			fn(r)
		}
	}
}

// found reports a set and waits (on fake time) until Members applied it.
func (f *fakeSource) found(s discovery.Set) {
	f.do <- func(r discovery.Reporter) { r.Found(s) }
	synctest.Wait()
}

func (f *fakeSource) failed(err error) {
	f.do <- func(r discovery.Reporter) { r.Failed(err) }
	synctest.Wait()
}

func set(weights map[string]int) discovery.Set {
	var s discovery.Set
	for _, addr := range slices.Sorted(func(yield func(string) bool) {
		for a := range weights {
			if !yield(a) {
				return
			}
		}
	}) {
		u, _ := url.Parse(addr)
		s.Backends = append(s.Backends, discovery.Backend{Address: addr, URL: u, Weight: weights[addr]})
	}
	return s
}

// members describes the pool: "address source weight state".
func members(p *pool.Pool) []string {
	var out []string
	for _, b := range p.Backends() {
		out = append(out, fmt.Sprintf("%s %s w%d %s", b.Address, b.Source, b.Weight(), b.State()))
	}
	return out
}

func kinds(l *events.Log) []string {
	evs, _ := l.Since(0)
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Kind)+" "+e.Backend)
	}
	return out
}

func staticPool() *pool.Pool {
	u, _ := url.Parse("http://127.0.0.1:9000")
	return pool.New("web", balance.RoundRobin{}, []*pool.Backend{pool.NewBackend(u.String(), u, 2)})
}

func TestMembersFollowSources(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := staticPool()
		ev := events.New(0, nil)
		dnsErrs := new(atomic.Uint64)
		src := newFake(pool.SourceDNS)
		m := discovery.NewMembers("web", []discovery.Source{src}, discovery.Options{Events: ev,
			Errors: map[pool.Source]*atomic.Uint64{pool.SourceDNS: dnsErrs}})
		kicks := 0
		m.Start(context.Background(), discovery.Target{Pool: p, Kick: func() { kicks++ }, DrainTimeout: 30 * time.Second})
		defer m.Close()

		// Found: added beside the static backend, which discovery never
		// duplicates.
		src.found(set(map[string]int{"http://127.0.0.1:9001": 1, "http://127.0.0.1:9002": 3, "http://127.0.0.1:9000": 5}))
		want := []string{"http://127.0.0.1:9000 config w2 healthy", "http://127.0.0.1:9001 dns w1 healthy", "http://127.0.0.1:9002 dns w3 healthy"}
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Fatalf("after the first answer (-want +got):\n%s", diff)
		}
		if kicks == 0 {
			t.Errorf("the health checker was not kicked after backends joined")
		}
		if r := p.Find("http://127.0.0.1:9002").Reason(); r.Text != "found by dns (fake dns) with weight 3" || r.Since.IsZero() {
			t.Errorf("reason of 9002: %+v, want where it was found, and since when", r)
		}

		// A failure changes nothing, is counted each time and published
		// once per run of failures.
		src.failed(errors.New("SERVFAIL"))
		src.failed(errors.New("SERVFAIL"))
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Errorf("after failures (-want +got):\n%s", diff)
		}
		if n := dnsErrs.Load(); n != 2 {
			t.Errorf("errors counted: %d, want 2", n)
		}
		st := m.Status()[0]
		if st.OK || st.LastError != "SERVFAIL" || st.Errors != 2 || st.Backends != 3 {
			t.Errorf("status after failures: %+v, want not OK, last error SERVFAIL, 2 errors, 3 backends", st)
		}

		// Gone: drained at once, removed when its requests finish.
		b2 := p.Find("http://127.0.0.1:9002")
		b2.InFlight.Add(1)
		src.found(set(map[string]int{"http://127.0.0.1:9001": 4}))
		want = []string{"http://127.0.0.1:9000 config w2 healthy", "http://127.0.0.1:9001 dns w4 healthy", "http://127.0.0.1:9002 dns w3 draining"}
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Errorf("after 9002 left (-want +got):\n%s", diff)
		}
		if !m.Status()[0].OK {
			t.Errorf("status not OK after an answer")
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if p.Find(b2.Address) == nil {
			t.Fatalf("9002 removed while a request was still in flight on it")
		}
		b2.InFlight.Add(-1)
		time.Sleep(time.Second)
		synctest.Wait()
		want = want[:2]
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Errorf("after 9002's last request (-want +got):\n%s", diff)
		}

		wantEvents := []string{"added http://127.0.0.1:9001", "added http://127.0.0.1:9002", "discovery_error ",
			"weight_changed http://127.0.0.1:9001", "drained http://127.0.0.1:9002", "removed http://127.0.0.1:9002"}
		if diff := cmp.Diff(wantEvents, kinds(ev)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

// TestMembersDrainTimeout: a backend whose requests do not finish is
// removed when the drain time is up (its requests go on on their own).
func TestMembersDrainTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := staticPool()
		src := newFake(pool.SourceEtcd)
		m := discovery.NewMembers("web", []discovery.Source{src}, discovery.Options{})
		m.Start(context.Background(), discovery.Target{Pool: p, DrainTimeout: 10 * time.Second})
		defer m.Close()
		src.found(set(map[string]int{"http://127.0.0.1:9001": 1}))
		p.Find("http://127.0.0.1:9001").InFlight.Add(1)
		src.found(discovery.Set{})
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if p.Find("http://127.0.0.1:9001") == nil {
			t.Fatalf("removed before the drain time was up")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if p.Find("http://127.0.0.1:9001") != nil {
			t.Errorf("still in the pool after the drain time")
		}
	})
}

// TestMembersBackAfterLeaving: a backend found again while it drains
// serves again.
func TestMembersBackAfterLeaving(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := staticPool()
		src := newFake(pool.SourceDNS)
		m := discovery.NewMembers("web", []discovery.Source{src}, discovery.Options{})
		m.Start(context.Background(), discovery.Target{Pool: p})
		defer m.Close()
		src.found(set(map[string]int{"http://127.0.0.1:9001": 1}))
		b := p.Find("http://127.0.0.1:9001")
		b.InFlight.Add(1)
		src.found(discovery.Set{})
		src.found(set(map[string]int{"http://127.0.0.1:9001": 1}))
		if got := p.Find("http://127.0.0.1:9001"); got != b || b.State() != "healthy" {
			t.Errorf("found again while draining: state %s, want the same backend healthy", b.State())
		}
		b.InFlight.Add(-1)
		time.Sleep(time.Second)
		synctest.Wait()
		if p.Find("http://127.0.0.1:9001") == nil {
			t.Errorf("removed after it was found again")
		}
	})
}

// TestMembersAttach: after a reload, the new pool holds the backends the
// server carried over; a source that has not answered since leaves them
// alone, one that answers brings the pool in step.
func TestMembersAttach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := staticPool()
		dnsSrc, etcdSrc := newFake(pool.SourceDNS), newFake(pool.SourceEtcd)
		m := discovery.NewMembers("web", []discovery.Source{dnsSrc, etcdSrc}, discovery.Options{})
		m.Start(context.Background(), discovery.Target{Pool: p})
		defer m.Close()
		dnsSrc.found(set(map[string]int{"http://127.0.0.1:9001": 1}))

		// The previous Members of this pool (a changed discovery config)
		// had found 9005 through etcd; the server carried it over.
		u, _ := url.Parse("http://127.0.0.1:9005")
		carried := pool.NewBackend(u.String(), u, 1)
		carried.Source = pool.SourceEtcd
		np := pool.New("web", balance.RoundRobin{}, []*pool.Backend{p.Backends()[0], carried})
		m.Attach(discovery.Target{Pool: np})
		want := []string{"http://127.0.0.1:9000 config w2 healthy", "http://127.0.0.1:9005 etcd w1 healthy", "http://127.0.0.1:9001 dns w1 healthy"}
		if diff := cmp.Diff(want, members(np)); diff != "" {
			t.Errorf("after Attach (-want +got):\n%s", diff)
		}
		etcdSrc.found(set(map[string]int{"http://127.0.0.1:9001": 7, "http://127.0.0.1:9006": 1}))
		want = []string{"http://127.0.0.1:9000 config w2 healthy", "http://127.0.0.1:9001 dns w1 healthy", "http://127.0.0.1:9006 etcd w1 healthy"}
		time.Sleep(time.Second)
		synctest.Wait()
		if diff := cmp.Diff(want, members(np)); diff != "" {
			t.Errorf("after etcd answered (-want +got):\n%s", diff)
		}
	})
}

// TestMembersPriority: SRV priority levels reach the pool.
func TestMembersPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := pool.New("web", balance.RoundRobin{}, nil)
		src := newFake(pool.SourceDNS)
		m := discovery.NewMembers("web", []discovery.Source{src}, discovery.Options{})
		m.Start(context.Background(), discovery.Target{Pool: p})
		defer m.Close()
		s := set(map[string]int{"http://127.0.0.1:9001": 1, "http://127.0.0.1:9002": 1})
		s.Backends[1].Priority = 1
		src.found(s)
		if got := p.Pick(&pool.PickInfo{}); got == nil || got.Address != "http://127.0.0.1:9001" {
			t.Fatalf("picked %v, want the level-0 backend", got)
		}
		s.Backends[0].Priority, s.Backends[1].Priority = 1, 0
		src.found(s)
		for range 3 {
			if got := p.Pick(&pool.PickInfo{}); got.Address != "http://127.0.0.1:9002" {
				t.Errorf("after the priorities swapped: picked %s, want 9002", got.Address)
			}
		}
	})
}

// TestMembersFleet: the fleet-wide state is applied once per change, to
// backends that join later too, and a fleet weight gives way to the
// found weight when it is cleared.
func TestMembersFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := staticPool()
		ev := events.New(0, nil)
		src := newFake(pool.SourceEtcd)
		m := discovery.NewMembers("web", []discovery.Source{src}, discovery.Options{Events: ev})
		m.Start(context.Background(), discovery.Target{Pool: p})
		defer m.Close()
		s := set(map[string]int{"http://127.0.0.1:9001": 2})
		s.Fleet = map[string]discovery.Fleet{
			"http://127.0.0.1:9001": {State: "draining"},
			"http://127.0.0.1:9000": {Weight: 9}, // a static backend
			"http://127.0.0.1:9002": {State: "disabled", Weight: 4},
		}
		src.found(s)
		want := []string{"http://127.0.0.1:9000 config w9 healthy", "http://127.0.0.1:9001 etcd w2 draining"}
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Errorf("fleet state applied (-want +got):\n%s", diff)
		}
		// An operator enables 9001 on this instance only: the same
		// fleet state, reported again, does not undo it.
		p.SetAdmin(p.Find("http://127.0.0.1:9001"), pool.Enabled)
		src.found(s)
		if got := p.Find("http://127.0.0.1:9001").State(); got != "healthy" {
			t.Errorf("a local change was undone by an unchanged fleet state: %s", got)
		}
		// 9002 joins: its fleet state applies at once.
		s.Backends = set(map[string]int{"http://127.0.0.1:9001": 2, "http://127.0.0.1:9002": 1}).Backends
		s.Fleet = map[string]discovery.Fleet{
			"http://127.0.0.1:9001": {State: "enabled"},
			"http://127.0.0.1:9002": {State: "disabled", Weight: 4},
		}
		src.found(s)
		want = []string{"http://127.0.0.1:9000 config w9 healthy", "http://127.0.0.1:9001 etcd w2 healthy", "http://127.0.0.1:9002 etcd w4 disabled"}
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Errorf("fleet state of a backend that joined (-want +got):\n%s", diff)
		}
		// The fleet weight of 9002 is cleared: back to the found weight.
		s.Fleet["http://127.0.0.1:9002"] = discovery.Fleet{State: "enabled"}
		src.found(s)
		want[2] = "http://127.0.0.1:9002 etcd w1 healthy"
		if diff := cmp.Diff(want, members(p)); diff != "" {
			t.Errorf("fleet weight cleared (-want +got):\n%s", diff)
		}
		wantEvents := []string{"added http://127.0.0.1:9001", "weight_changed http://127.0.0.1:9000", "drained http://127.0.0.1:9001",
			"added http://127.0.0.1:9002", "disabled http://127.0.0.1:9002", "weight_changed http://127.0.0.1:9002",
			"enabled http://127.0.0.1:9002", "weight_changed http://127.0.0.1:9002"} // 9001 was enabled already
		if diff := cmp.Diff(wantEvents, kinds(ev)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

// TestMembersCloseWaits: Close returns only after the sources' goroutines
// have exited.
func TestMembersCloseWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(pool.SourceDNS)
		m := discovery.NewMembers("web", []discovery.Source{src}, discovery.Options{})
		m.Start(context.Background(), discovery.Target{Pool: staticPool()})
		m.Close()
		// synctest.Test fails when a goroutine of the bubble is left.
	})
}

// TestMembersSettled: Settled closes once every source has answered or
// failed once.
func TestMembersSettled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dnsSrc, etcdSrc := newFake(pool.SourceDNS), newFake(pool.SourceEtcd)
		m := discovery.NewMembers("web", []discovery.Source{dnsSrc, etcdSrc}, discovery.Options{})
		m.Start(context.Background(), discovery.Target{Pool: staticPool()})
		defer m.Close()
		settled := func() bool {
			select {
			case <-m.Settled():
				return true
			default:
				return false
			}
		}
		dnsSrc.found(discovery.Set{})
		if settled() {
			t.Fatalf("settled with etcd silent")
		}
		etcdSrc.failed(errors.New("connection refused"))
		if !settled() {
			t.Errorf("not settled after both sources reported")
		}
	})
}
