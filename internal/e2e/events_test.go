package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adminAPI calls the admin API of a sluice process.
type adminAPI struct {
	t     *testing.T
	c     *http.Client
	addr  string // host:port
	token string // "" = none
}

// call sends method path (path as written: an escaped address stays
// escaped) with body and returns the reply.
func (a *adminAPI) call(method, path, body string) reply {
	a.t.Helper()
	req, err := http.NewRequest(method, "http://"+a.addr+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	return do(a.t, a.c, req)
}

// backendPath is the API path of a backend, escaped as encodeURIComponent does.
func backendPath(pool, address string) string {
	return "/api/v1/pools/" + pool + "/backends/" + escapeAddress(address)
}

func escapeAddress(address string) string {
	r := strings.NewReplacer(":", "%3A", "/", "%2F", "[", "%5B", "]", "%5D")
	return r.Replace(address)
}

// apiBackend is a backend as GET /api/v1/pools shows it.
type apiBackend struct {
	Address  string     `json:"address"`
	Weight   int        `json:"weight"`
	State    string     `json:"state"`
	Source   string     `json:"source"`
	Override bool       `json:"override"`
	Reason   string     `json:"reason"`
	Since    *time.Time `json:"since"`
}

// backends returns the backends of pool by address.
func (a *adminAPI) backends(pool string) map[string]apiBackend {
	a.t.Helper()
	r := a.call("GET", "/api/v1/pools/"+pool, "")
	if r.Status != 200 {
		a.t.Fatalf("GET /api/v1/pools/%s = %d %s", pool, r.Status, r.Body)
	}
	var v struct {
		Backends []apiBackend `json:"backends"`
	}
	if err := json.Unmarshal([]byte(r.Body), &v); err != nil {
		a.t.Fatalf("GET /api/v1/pools/%s: %v in %s", pool, err, r.Body)
	}
	out := map[string]apiBackend{}
	for _, b := range v.Backends {
		out[b.Address] = b
	}
	return out
}

// apiEvent is one event of GET /api/v1/events.
type apiEvent struct {
	ID      uint64    `json:"id"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Pool    string    `json:"pool"`
	Backend string    `json:"backend"`
	Reason  string    `json:"reason"`
}

// eventStream is an open GET /api/v1/events.
type eventStream struct {
	t      *testing.T
	events chan apiEvent
	ids    chan string // the id: line of each event, in order
	cancel context.CancelFunc
	done   chan struct{}
}

// events opens the event stream with Last-Event-ID lastID ("" for none).
func (a *adminAPI) events(lastID string) *eventStream {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+a.addr+"/api/v1/events", nil)
	if err != nil {
		a.t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	res, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		cancel()
		a.t.Fatalf("GET /api/v1/events: %v", err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		res.Body.Close()
		cancel()
		a.t.Fatalf("GET /api/v1/events = %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := &eventStream{t: a.t, events: make(chan apiEvent, 256), ids: make(chan string, 256), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.events)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			line := sc.Text()
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				s.ids <- id
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var e apiEvent
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					a.t.Errorf("event data %q: %v", data, err)
					return
				}
				s.events <- e
			}
		}
	}()
	a.t.Cleanup(s.close)
	return s
}

func (s *eventStream) close() {
	s.cancel()
	<-s.done
}

// waitFor reads events until one of kind (and backend, when not "") comes,
// and returns it with the events read on the way.
func (s *eventStream) waitFor(kind, backend string, timeout time.Duration) (apiEvent, []apiEvent) {
	s.t.Helper()
	var seen []apiEvent
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.t.Fatalf("the event stream ended before a %s event (seen %+v)", kind, seen)
			}
			seen = append(seen, e)
			if e.Kind == kind && (backend == "" || e.Backend == backend) {
				return e, seen
			}
		case <-deadline:
			s.t.Fatalf("no %s event for %q within %v (seen %+v)", kind, backend, timeout, seen)
		}
	}
}

// ended waits for the stream to end.
func (s *eventStream) ended(timeout time.Duration) bool {
	select {
	case <-s.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// A backend taken down yields backend_down with the failing check's error,
// the API shows that reason, a broken reload yields reload_failed with the
// config error, a good one reload_ok with what changed, Last-Event-ID
// replays what followed it, each decision is logged once, and the stream
// ends when sluice stops.
func TestProcessEventsStream(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, "a", "b", "c")
	yaml := func(backends ...*demoBackend) string {
		var b strings.Builder
		b.WriteString("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\npools:\n  - name: web\n    backends:\n")
		for _, be := range backends {
			fmt.Fprintf(&b, "      - address: %q\n", be.URL())
		}
		b.WriteString("    health_check: {path: /health, interval: 300ms, timeout: 300ms, healthy_threshold: 1, unhealthy_threshold: 2}\n")
		b.WriteString("admin:\n  address: \"127.0.0.1:0\"\naccess_log: {format: off}\nshutdown_timeout: 5s\n")
		return b.String()
	}
	p, file, addr, admin := runConfig(t, yaml(bs[0], bs[1]))
	c := newClient(t)
	api := &adminAPI{t: t, c: c, addr: admin}
	waitBackends(t, c, "http://"+addr+"/", "a", "b")
	all := api.events("0")
	first, _ := all.waitFor("backend_up", "", 10*time.Second)

	// A backend taken down.
	bs[1].Stop()
	down, _ := all.waitFor("backend_down", bs[1].URL(), 10*time.Second)
	if down.Pool != "web" || !strings.Contains(down.Reason, "2 consecutive health checks failed (unhealthy_threshold 2)") ||
		!strings.Contains(down.Reason, "connection refused") {
		t.Errorf("backend_down = %+v, want pool web and a reason with the failure count and the check's error", down)
	}
	got := api.backends("web")[bs[1].URL()]
	if got.State != "unhealthy" || got.Reason != down.Reason || got.Since == nil || !got.Since.Equal(down.Time) || got.Source != "config" {
		t.Errorf("GET /api/v1/pools/web shows b as %+v, want unhealthy, source config, with the event's reason since its time %v", got, down.Time)
	}

	// A broken reload, then a good one.
	if err := os.WriteFile(file, []byte("listeners:\n  - name: public\n    adress: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := api.call("POST", "/api/v1/reload", ""); r.Status != 400 || !strings.Contains(r.Body, "previous config keeps serving") {
		t.Errorf("POST /api/v1/reload with a broken file = %d %s, want 400 saying the previous config serves", r.Status, r.Body)
	}
	failed, _ := all.waitFor("reload_failed", "", 10*time.Second)
	if !strings.Contains(failed.Reason, "sluice.yaml:3:5: unknown key \"adress\"") {
		t.Errorf("reload_failed reason %q, want the config error with FILE:LINE:COL", failed.Reason)
	}
	if err := os.WriteFile(file, []byte(withEngineYAML(yaml(bs[0], bs[1], bs[2]))), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := api.call("POST", "/api/v1/reload", ""); r.Status != 200 {
		t.Fatalf("POST /api/v1/reload = %d %s", r.Status, r.Body)
	}
	ok, seen := all.waitFor("reload_ok", "", 10*time.Second)
	if want := "backends: 1 added (web " + bs[2].URL() + ")"; ok.Reason != want {
		t.Errorf("reload_ok reason %q, want %q", ok.Reason, want)
	}
	added := false
	for _, e := range seen {
		added = added || e.Kind == "added" && e.Backend == bs[2].URL() && e.Reason == "config reload: new in the config"
	}
	if !added {
		t.Errorf("no added event for %s before reload_ok: %+v", bs[2].URL(), seen)
	}

	// Last-Event-ID: a new stream replays what followed the first event,
	// with the same ids; without it, only what is new.
	again := api.events(strconv.FormatUint(first.ID, 10))
	for id := first.ID + 1; id <= ok.ID; id++ {
		select {
		case e := <-again.events:
			if e.ID != id {
				t.Fatalf("replay after %d: event %d, want %d", first.ID, e.ID, id)
			}
			if gotID := <-again.ids; gotID != strconv.FormatUint(id, 10) {
				t.Errorf("id: line %q for event %d", gotID, id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("replay after %d stopped before %d", first.ID, id)
		}
	}
	fresh := api.events("")
	if r := api.call("POST", backendPath("web", bs[0].URL())+"/drain", ""); r.Status != 200 {
		t.Fatalf("drain = %d %s", r.Status, r.Body)
	}
	if e, _ := fresh.waitFor("drained", "", 10*time.Second); e.ID <= ok.ID || e.Reason != "admin API (until the next reload)" {
		t.Errorf("a stream without Last-Event-ID first got %+v, want the new drained event with the API's reason", e)
	}

	// Each decision is written to the log once.
	re := regexp.MustCompile(`msg=event kind=reload_failed`)
	if n := len(re.FindAllString(p.Stderr.String(), -1)); n != 1 {
		t.Errorf("%d log lines for the failed reload, want 1", n)
	}
	re = regexp.MustCompile(`msg=event kind=backend_down pool=web backend=` + regexp.QuoteMeta(bs[1].URL()))
	if n := len(re.FindAllString(p.Stderr.String(), -1)); n != 1 {
		t.Errorf("%d log lines for backend_down of b, want 1", n)
	}

	// Shutdown ends the streams; sluice exits cleanly.
	p.signal(os.Interrupt)
	for _, s := range []*eventStream{all, again, fresh} {
		if !s.ended(10 * time.Second) {
			t.Errorf("an event stream is still open after SIGINT")
		}
	}
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0", code)
	}
}

// Every kind of API change (add, remove, drain, disable, weight) is in
// admin.state_file before the call returns, and survives a reload and a
// restart of the process; an entry whose backend left the config is
// reported; a change that cannot be written is refused and not applied.
func TestProcessStateFilePersists(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, "a", "b", "c", "d", "e")
	dir := t.TempDir()
	stateFile := dir + "/state.json"
	tokenFile := dir + "/token"
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := func(backends ...*demoBackend) string {
		var b strings.Builder
		b.WriteString("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\npools:\n  - name: web\n    backends:\n")
		for _, be := range backends {
			fmt.Fprintf(&b, "      - address: %q\n", be.URL())
		}
		fmt.Fprintf(&b, "admin:\n  address: \"127.0.0.1:0\"\n  token_file: %q\n  state_file: %q\naccess_log: {format: off}\nshutdown_timeout: 5s\n",
			tokenFile, stateFile)
		return b.String()
	}
	a, b, c, d, e := bs[0], bs[1], bs[2], bs[3], bs[4]
	p, file, addr, admin := runConfig(t, yaml(a, b, c, e))
	client := newClient(t)
	api := &adminAPI{t: t, c: client, addr: admin, token: "s3cret"}

	// The new endpoints need the token; a mutating call from another
	// origin is refused even with it.
	noToken := &adminAPI{t: t, c: client, addr: admin}
	for _, call := range [][3]string{{"GET", "/api/v1/events", ""}, {"GET", "/api/v1/state", ""},
		{"POST", backendPath("web", a.URL()) + "/weight", `{"weight": 2}`}} {
		if r := noToken.call(call[0], call[1], call[2]); r.Status != 401 || !strings.Contains(r.Body, `"error"`) {
			t.Errorf("%s %s without the token = %d %s, want 401 JSON", call[0], call[1], r.Status, r.Body)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+admin+backendPath("web", a.URL())+"/weight", strings.NewReader(`{"weight": 2}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("Origin", "https://evil.example")
	if r := do(t, client, req); r.Status != 403 {
		t.Errorf("cross-origin POST .../weight = %d %s, want 403", r.Status, r.Body)
	}

	// An address that was not escaped: 400 naming the URL to call.
	raw := "/api/v1/pools/web/backends/" + a.URL() + "/drain"
	if r := api.call("POST", raw, ""); r.Status != 400 || !strings.Contains(r.Body, backendPath("web", a.URL())+"/drain") {
		t.Errorf("POST %s = %d %s, want 400 naming the escaped path", raw, r.Status, r.Body)
	}

	changes := []struct{ method, path, body string }{
		{"POST", backendPath("web", a.URL()) + "/drain", ""},
		{"POST", backendPath("web", b.URL()) + "/disable", ""},
		{"POST", backendPath("web", c.URL()) + "/weight", `{"weight": 5}`},
		{"POST", "/api/v1/pools/web/backends", fmt.Sprintf(`{"address": %q, "weight": 2}`, d.URL())},
		{"DELETE", backendPath("web", e.URL()), ""},
	}
	for _, ch := range changes {
		r := api.call(ch.method, ch.path, ch.body)
		if r.Status >= 300 {
			t.Fatalf("%s %s = %d %s", ch.method, ch.path, r.Status, r.Body)
		}
		// Written before the call returned.
		if _, err := os.Stat(stateFile); err != nil {
			t.Fatalf("after %s %s: %v", ch.method, ch.path, err)
		}
	}
	fi, err := os.Stat(stateFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	data, _ := os.ReadFile(stateFile)
	for _, want := range []string{`"state": "draining"`, `"state": "disabled"`, `"weight": 5`, `"added": true`, `"removed": true`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("state file lacks %s:\n%s", want, data)
		}
	}

	check := func(when string) {
		t.Helper()
		eventually(t, 10*time.Second, when+": "+e.URL()+" removed", func() bool {
			_, ok := api.backends("web")[e.URL()]
			return !ok
		})
		got := api.backends("web")
		type view struct {
			state, source string
			weight        int
			override      bool
		}
		want := map[string]view{
			a.URL(): {"draining", "config", 1, true},
			b.URL(): {"disabled", "config", 1, true},
			c.URL(): {"healthy", "config", 5, true},
			d.URL(): {"healthy", "runtime", 2, true},
		}
		if len(got) != len(want) {
			t.Errorf("%s: backends %v, want %v", when, got, want)
		}
		for addr, w := range want {
			g := got[addr]
			if (view{g.State, g.Source, g.Weight, g.Override}) != w {
				t.Errorf("%s: %s is %+v, want %+v", when, addr, g, w)
			}
		}
		// Traffic goes to c and d only.
		for i := range 8 {
			r := get(t, client, "http://"+addr+"/")
			if name := r.Header.Get("X-Backend"); r.Status != 200 || (name != "c" && name != "d") {
				t.Fatalf("%s: request %d went to %q (%d), want c or d", when, i, name, r.Status)
			}
		}
	}
	check("before a reload")
	if r := api.call("POST", "/api/v1/reload", ""); r.Status != 200 {
		t.Fatalf("reload = %d %s", r.Status, r.Body)
	}
	check("after a reload")

	p.signal(os.Interrupt)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	p = startProc(t, "run", "-config", file)
	api.addr = p.waitLog(adminLine, 15*time.Second)[1]
	addr = p.waitLog(listenerLine("public"), 15*time.Second)[1]
	check("after a restart")
	if !strings.Contains(p.Stderr.String(), "kind=drained pool=web backend="+a.URL()+" reason=\"admin.state_file: draining through the admin API at ") {
		t.Errorf("the restart does not log the state file's drain of a:\n%s", p.Stderr.String())
	}

	// c leaves the config: its weight entry is stale, reported and kept.
	events := api.events("")
	if err := os.WriteFile(file, []byte(withEngineYAML(yaml(a, b, e))), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := api.call("POST", "/api/v1/reload", ""); r.Status != 200 {
		t.Fatalf("reload = %d %s", r.Status, r.Body)
	}
	stale, _ := events.waitFor("state_stale", c.URL(), 10*time.Second)
	if !strings.Contains(stale.Reason, `is not in pool "web" of the config`) || !strings.Contains(stale.Reason, stateFile) {
		t.Errorf("state_stale reason %q, want what is missing and the file to edit", stale.Reason)
	}
	var st struct {
		Entries []struct{ Address string } `json:"entries"`
		Stale   []struct {
			Address string `json:"address"`
			Weight  int    `json:"weight"`
			Problem string `json:"problem"`
		} `json:"stale"`
	}
	r := api.call("GET", "/api/v1/state", "")
	if err := json.Unmarshal([]byte(r.Body), &st); err != nil || r.Status != 200 {
		t.Fatalf("GET /api/v1/state = %d %s (%v)", r.Status, r.Body, err)
	}
	if len(st.Entries) != 5 || len(st.Stale) != 1 || st.Stale[0].Address != c.URL() || st.Stale[0].Weight != 5 || st.Stale[0].Problem != stale.Reason {
		t.Errorf("GET /api/v1/state = %s, want 5 entries, c's stale with the event's problem", r.Body)
	}
	if !regexp.MustCompile(`level=WARN msg=event kind=state_stale pool=web backend=` + regexp.QuoteMeta(c.URL())).MatchString(p.Stderr.String()) {
		t.Errorf("no warning in the log for the stale entry")
	}

	// A change that cannot be written is refused and not applied.
	os.Remove(stateFile)
	if err := os.Mkdir(stateFile, 0o700); err != nil {
		t.Fatal(err)
	}
	r = api.call("POST", backendPath("web", a.URL())+"/enable", "")
	if r.Status != 500 || !strings.Contains(r.Body, "not persisted") {
		t.Errorf("enable with an unwritable state file = %d %s, want 500 saying it was not persisted", r.Status, r.Body)
	}
	if got := api.backends("web")[a.URL()].State; got != "draining" {
		t.Errorf("a is %q after the refused enable, want still draining", got)
	}
}
