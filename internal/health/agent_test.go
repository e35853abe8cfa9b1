package health

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// fakeAgent answers agent checks with a line tests change.
type fakeAgent struct {
	mu   sync.Mutex
	line map[*pool.Backend]string
	err  error
}

func (f *fakeAgent) ask(_ context.Context, b *pool.Backend) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.line[b], f.err
}

func (f *fakeAgent) say(b *pool.Backend, line string) {
	f.mu.Lock()
	f.line[b] = line
	f.mu.Unlock()
}

// told returns kind/backend/reason of the events after id.
func told(ev *events.Log, after uint64) []string {
	evs, _ := ev.Since(after)
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Kind)+" "+e.Backend+" "+e.Reason)
	}
	return out
}

func TestAgentDrainWeightMaintDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		b := bs[0]
		fa := &fakeAgent{line: map[*pool.Backend]string{bs[0]: "up\n", bs[1]: "up\n"}}
		ev := events.New(0, nil)
		c := New(p, hc(), discard, Options{Prober: (&fakeProbe{fail: map[*pool.Backend]bool{}}).probe,
			Rand: func() uint64 { return 0 }, AgentPort: 9999, Agent: fa.ask, Events: ev})
		stop := start(t, c)
		defer stop()
		synctest.Wait()

		step := func(line string, want ...string) {
			t.Helper()
			last := ev.Last()
			fa.say(b, line)
			time.Sleep(hc().Interval) // the next check asks the agent
			synctest.Wait()
			if diff := cmp.Diff(want, told(ev, last)); diff != "" {
				t.Errorf("agent %q: events (-want +got):\n%s", line, diff)
			}
		}
		a := b.Address
		step("drain\n", `drained `+a+` agent: "drain"`)
		if got := b.AdminState(); got != pool.Draining {
			t.Errorf("after drain: %v, want draining", got)
		}
		step("drain\n") // nothing new: told once
		step("ready 50%\n", `weight_changed `+a+` agent: "ready 50%": 50% of weight 1`, `enabled `+a+` agent: "ready 50%"`)
		if got, want := b.EffectiveWeight(), pool.WeightScale/2; got != want || b.AdminState() != pool.Enabled {
			t.Errorf("after ready 50%%: weight %d (want %d), %v", got, want, b.AdminState())
		}
		step("maint\n", `disabled `+a+` agent: "maint"`)
		// A disabled backend is not checked, but its agent is still asked.
		step("up 100%\n", `weight_changed `+a+` agent: "up 100%": 100% of weight 1`, `enabled `+a+` agent: "up 100%"`)
		step("down # disk full\n", `backend_down `+a+` agent: "down # disk full"`)
		if got := b.Health(); got != pool.Unhealthy {
			t.Errorf("after down: %v, want unhealthy", got)
		}
		// Passing checks do not bring back a backend its agent says is down.
		time.Sleep(3 * hc().Interval)
		synctest.Wait()
		if got := b.Health(); got != pool.Unhealthy {
			t.Errorf("agent down, checks passing: %v, want unhealthy", got)
		}
		step("up\n", `backend_up `+a+` agent: "up"`)
		if !b.Eligible() {
			t.Errorf("after up: %v/%v, want eligible", b.Health(), b.AdminState())
		}
	})
}

func TestAgentLeavesAnOperatorsStateAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 1)
		b := bs[0]
		fa := &fakeAgent{line: map[*pool.Backend]string{b: "ready\n"}}
		ev := events.New(0, nil)
		c := New(p, hc(), discard, Options{Prober: (&fakeProbe{fail: map[*pool.Backend]bool{}}).probe,
			Rand: func() uint64 { return 0 }, AgentPort: 9999, Agent: fa.ask, Events: ev})
		stop := start(t, c)
		defer stop()
		synctest.Wait()
		first := ev.Last()
		p.SetAdmin(b, pool.Draining) // the operator
		time.Sleep(2 * hc().Interval)
		synctest.Wait()
		if got := b.AdminState(); got != pool.Draining {
			t.Errorf("agent says ready after an operator's drain: %v, want draining (the operator's)", got)
		}
		// An agent that cannot be reached changes nothing.
		fa.mu.Lock()
		fa.err = errors.New("connection refused")
		fa.mu.Unlock()
		p.SetAdmin(b, pool.Enabled)
		time.Sleep(2 * hc().Interval)
		synctest.Wait()
		if !b.Eligible() {
			t.Errorf("agent unreachable: %v/%v, want eligible as it was", b.Health(), b.AdminState())
		}
		if got := told(ev, first); len(got) != 0 {
			t.Errorf("events %q, want none from the agent", got)
		}
	})
}

func TestDialAgent(t *testing.T) {
	for _, tt := range []struct {
		name, send, want string
		fail             bool
	}{
		{"line", "drain 50%\n", "drain 50%\n", false},
		{"closed without newline", "up", "up", false},
		{"empty", "", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte(tt.send))
				c.Close()
			}()
			port := ln.Addr().(*net.TCPAddr).Port
			u := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
			b := pool.NewBackend(u.String(), u, 1)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			got, err := dialAgent(port)(ctx, b)
			if (err != nil) != tt.fail || got != tt.want {
				t.Errorf("agent on port %s sending %q: %q, %v; want %q, error %v", strconv.Itoa(port), tt.send, got, err, tt.want, tt.fail)
			}
		})
	}
}

func TestReloadWithoutAgentUndoesWhatItSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, bs := newPool(t, 2)
		fa := &fakeAgent{line: map[*pool.Backend]string{bs[0]: "drain 50%\n", bs[1]: "up\n"}}
		ev := events.New(0, nil)
		probe := (&fakeProbe{fail: map[*pool.Backend]bool{}}).probe
		c := New(p, hc(), discard, Options{Prober: probe, Rand: func() uint64 { return 0 }, AgentPort: 9999, Agent: fa.ask, Events: ev})
		stop := start(t, c)
		synctest.Wait()
		stop()
		p.SetAdmin(bs[1], pool.Disabled) // an operator's
		if bs[0].AdminState() != pool.Draining || bs[0].AgentWeight() != 50 {
			t.Fatalf("agent's drain 50%%: %v at %d%%", bs[0].AdminState(), bs[0].AgentWeight())
		}
		last := ev.Last()
		// The reload leaves the health check as it was and drops the agent.
		next := New(p, hc(), discard, Options{Prober: probe, Events: ev})
		next.Inherit(c)
		if bs[0].AdminState() != pool.Enabled || bs[0].AgentWeight() != 100 {
			t.Errorf("after a reload without an agent: %v at %d%%, want enabled at 100%%", bs[0].AdminState(), bs[0].AgentWeight())
		}
		if bs[1].AdminState() != pool.Disabled {
			t.Errorf("the operator's disable became %v, want it kept", bs[1].AdminState())
		}
		if got := told(ev, last); len(got) != 2 {
			t.Errorf("events %q, want enabled and weight for %s", got, bs[0].Address)
		}
	})
}
