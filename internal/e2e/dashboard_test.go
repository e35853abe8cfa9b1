package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// TestDashboardInChromium drives the dashboard in headless Chromium against
// the sluice binary with three backends behind an admin token: the page asks
// for the token, shows the three healthy, shows one that stopped as
// unhealthy with the reason, drains another from its button, lists the
// events as they happen, shows the discovery status of a pool found by DNS
// (what it watches, its members, when it last answered, its last error
// while the DNS server fails and after it recovers), and, once sluice has
// stopped, says that nothing it shows is live any more. Screenshots (light, dark, phone, stale) go to the
// test's temp dir and, with SLUICE_SCREENSHOTS=DIR, to DIR as well.
func TestDashboardInChromium(t *testing.T) {
	chrome := needProgram(t, "chromium", "apt-get install chromium")
	bs := startBackends(t, "one", "two", "three", "found")
	dnsSrv := testenv.StartDNS(t)
	dnsSrv.Set(t, "found.test", dns.TypeA, "found.test. 1 IN A 127.0.0.1")
	_, foundPort, _ := net.SplitHostPort(bs[3].Addr)
	dir := t.TempDir()
	const token = "dashboard-test-token"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`listeners:
  - name: public
    address: "127.0.0.1:0"
    pool: web
pools:
  - name: web
    backends:
      - address: %q
      - address: %q
      - address: %q
    health_check: {path: /health, interval: 500ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2}
  - name: found
    discovery:
      dns: {name: found.test, type: A, port: %s, resolver: %q, refresh: 500ms}
admin:
  address: "127.0.0.1:0"
  token_file: %q
access_log: {format: "off"}
shutdown_timeout: 5s
`, bs[0].URL(), bs[1].URL(), bs[2].URL(), foundPort, dnsSrv.Addr, tokenFile)
	p, _, addr, admin := runConfig(t, yaml)

	stopTraffic := traffic(t, "http://"+addr)
	defer stopTraffic()

	pg := openPage(t, chrome)
	pg.do("open the dashboard", chromedp.Navigate("http://"+admin+"/"))
	// With a token, the page asks for it and sends it on every API call
	// (the events stream included, which is why it is read with fetch).
	pg.waitFor("the token form", `!document.getElementById("login").hidden`)
	pg.do("sign in", chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))

	row := func(b *demoBackend) string {
		return `document.querySelector('tr[data-pool="web"][data-backend=` + strconv.Quote(b.URL()) + `]')`
	}
	stateIs := func(b *demoBackend, st string) string {
		r := row(b)
		return fmt.Sprintf(`!!%s && %s.dataset.state === %q && %s.querySelector(".state").textContent === %q`, r, r, st, r, st)
	}
	for _, b := range bs[:3] {
		pg.waitFor(b.Name+" healthy", stateIs(b, "healthy"))
	}
	pg.waitFor("the live indicator", `document.getElementById("live").classList.contains("on") && !document.body.classList.contains("stale")`)
	pg.waitFor("a request rate in the chart", `document.querySelectorAll("#c-rate path").length > 0 && document.querySelectorAll("#c-lat path").length > 0`)
	pg.waitFor("the listener with its bound address", `document.getElementById("listeners").textContent.includes(`+strconv.Quote(addr)+`)`)
	pg.waitFor("the reload status", `document.getElementById("reloadstate").textContent === "config ok"`)

	// The pool found by DNS says where its backends come from: the source,
	// what it watches, how many it found and when it last answered.
	disc := `document.querySelector('section[data-pool="found"] .disc li[data-source="dns"]')`
	pg.waitFor("the DNS discovery status", fmt.Sprintf(`!!%[1]s && %[1]s.dataset.ok === "true" && %[1]s.textContent.includes("dns ok")
		&& %[1]s.textContent.includes("A found.test at %[2]s") && %[1]s.textContent.includes("1 member") && /refreshed \d+s ago/.test(%[1]s.textContent)`, disc, dnsSrv.Addr))
	pg.waitFor("the discovered backend, tagged dns", fmt.Sprintf(`(() => { const r = document.querySelector('tr[data-pool="found"][data-backend=%q]'); return !!r && r.querySelector(".tag").textContent === "dns"; })()`, bs[3].URL()))
	// The DNS server fails: the status turns red with the error, the
	// backend stays, and a discovery_error event appears.
	dnsSrv.Fail(dns.RcodeServerFailure)
	pg.waitFor("the DNS discovery failing", fmt.Sprintf(`!!%[1]s && %[1]s.dataset.ok === "false" && %[1]s.textContent.includes("dns failing")
		&& /last error \d+s ago: .*SERVFAIL/.test(%[1]s.querySelector(".err.hot").textContent)`, disc))
	pg.waitFor("its discovery_error event", `[...document.querySelectorAll('#events li[data-kind="discovery_error"]')].some((li) => li.textContent.includes("found"))`)
	pg.waitFor("the discovered backend kept", fmt.Sprintf(`!!document.querySelector('tr[data-pool="found"][data-backend=%q]')`, bs[3].URL()))
	// It answers again: ok, the last error kept but no longer red.
	dnsSrv.Fail(dns.RcodeSuccess)
	pg.waitFor("the DNS discovery answering again", fmt.Sprintf(`!!%[1]s && %[1]s.dataset.ok === "true" && %[1]s.textContent.includes("dns ok")
		&& /SERVFAIL/.test(%[1]s.querySelector(".err").textContent) && !%[1]s.querySelector(".err.hot")`, disc))

	// A backend that stops turns unhealthy, with the reason.
	bs[0].Stop()
	pg.waitFor(bs[0].Name+" unhealthy", stateIs(bs[0], "unhealthy"))
	pg.waitFor(bs[0].Name+"'s reason", fmt.Sprintf(`(() => { const t = %s.querySelector(".reason").textContent.trim(); return t !== "" && t !== "–"; })()`, row(bs[0])))
	pg.waitFor("its backend_down event", fmt.Sprintf(`[...document.querySelectorAll('#events li[data-kind="backend_down"]')].some((li) => li.textContent.includes(%q))`, bs[0].URL()))

	// The drain button drains (a live page: on a stale one buttons are inert).
	pg.waitFor("a live page", `!document.body.classList.contains("stale")`)
	pg.do("click drain", chromedp.Click(chromedp.CSS(`tr[data-pool="web"][data-backend=`+strconv.Quote(bs[1].URL())+`] button[data-action="drain"]`)))
	pg.waitFor(bs[1].Name+" draining", stateIs(bs[1], "draining"))
	pg.waitFor("the drained event", fmt.Sprintf(`[...document.querySelectorAll('#events li[data-kind="drained"]')].some((li) => li.textContent.includes(%q))`, bs[1].URL()))
	pg.waitFor(bs[2].Name+" still healthy", stateIs(bs[2], "healthy"))

	pg.shot("dashboard-light")
	pg.scheme("dark")
	pg.shot("dashboard-dark")
	pg.do("phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	pg.shot("dashboard-phone-dark")
	pg.scheme("light")
	pg.shot("dashboard-phone-light")
	if w := evalJS[float64](pg, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("at phone width the page is %v px wide, want at most 390 (no sideways scrolling)", w)
	}
	pg.do("laptop width", chromedp.EmulateViewport(1280, 900))

	// sluice stops: nothing may look live any more.
	stopTraffic()
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("sluice exited %d after SIGTERM, want 0", code)
	}
	pg.waitFor("the stale state", `document.body.classList.contains("stale") && !document.getElementById("stale").hidden`)
	banner := evalJS[string](pg, `document.getElementById("stale").textContent`)
	last := evalJS[string](pg, `new Date(lastOK).toLocaleTimeString([], {hour12: false})`)
	if !strings.Contains(banner, "Not live") || last == "" || !strings.Contains(banner, last) {
		t.Errorf("stale banner %q, want it to say Not live and name the last update (%s)", banner, last)
	}
	// No badge keeps a colour that claims health: each is the grey of --off.
	colours := evalJS[[]string](pg, `(() => {
		const probe = document.createElement("span");
		probe.style.background = "var(--off)";
		document.body.appendChild(probe);
		const grey = getComputedStyle(probe).backgroundColor;
		probe.remove();
		return [...document.querySelectorAll(".state, .kind, .badge")].filter((e) => e.offsetParent !== null)
			.map((e) => getComputedStyle(e).backgroundColor === grey ? "grey" : e.textContent + " " + getComputedStyle(e).backgroundColor);
	})()`)
	if len(colours) == 0 {
		t.Errorf("no badge on the stale page")
	}
	for _, c := range colours {
		if c != "grey" {
			t.Errorf("badge %q is coloured on the stale page, want grey", c)
		}
	}
	if n := evalJS[int](pg, `[...document.querySelectorAll("main button:not([inert])")].filter((b) => !b.closest("#login")).length`); n != 0 {
		t.Errorf("%d buttons still act on the stale page, want none", n)
	}
	pg.shot("dashboard-stale")
}

// traffic sends requests to url (mostly 200, some 404 and 500, some slow)
// every 20ms until the returned function is called (at most 2 minutes).
func traffic(t *testing.T, url string) (stop func()) {
	c := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		paths := []string{"/", "/", "/", "/delay/30ms", "/", "/status/404", "/", "/delay/5ms", "/", "/status/500"}
		for i := 0; ctx.Err() == nil; i++ {
			req, _ := http.NewRequestWithContext(ctx, "GET", url+paths[i%len(paths)], nil)
			if res, err := c.Do(req); err == nil {
				res.Body.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	stop = sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	return stop
}

// page is one tab of a headless Chromium.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string // the test's temp dir for screenshots
}

// openPage starts Chromium (a profile of its own in a temp dir) with one
// tab at laptop size; both end with the test.
func openPage(t *testing.T, chrome string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first Run starts the browser, which lives as long as its context:
	// this one is not bounded (the test's cleanup ends it).
	if _, err := chromedp.Run(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &page{t: t, ctx: ctx, dir: t.TempDir()}
}

// do runs steps, each bounded, and fails the test with what when one fails.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		_, err := chromedp.Run(ctx, s)
		cancel()
		if err != nil {
			p.t.Fatalf("%s: %v", what, err)
		}
	}
}

func evalJS[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls the JavaScript condition cond until it is true; after 20s
// it saves a screenshot and fails with what and the page's text.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !evalJS[bool](p, "!!("+cond+")") {
		if time.Now().After(deadline) {
			p.shot("failed")
			p.t.Fatalf("dashboard: not true within 20s: %s\n(%s)\npage text:\n%s", what, cond, evalJS[string](p, "document.body.innerText"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scheme sets prefers-color-scheme.
func (p *page) scheme(s string) {
	p.t.Helper()
	p.do("prefers-color-scheme "+s, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: s}},
		})
		return err
	}), chromedp.Sleep(300*time.Millisecond)) // a poll redraws the charts
}

// shot saves a full-page PNG as name.png in the test's temp dir and in
// $SLUICE_SCREENSHOTS when set.
func (p *page) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	cancel()
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dirs := []string{p.dir}
	if d := os.Getenv("SLUICE_SCREENSHOTS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		f := filepath.Join(d, name+".png")
		if err := os.WriteFile(f, png, 0o644); err != nil {
			p.t.Errorf("screenshot %s: %v", name, err)
			continue
		}
		p.t.Logf("screenshot %s", f)
	}
}
