package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-lb/sluice/internal/config"
)

var diffCommand = &command{
	name:     "diff",
	summary:  "show what a reload to a config file would change, and what it would drain",
	synopsis: []string{"diff [-config FILE] [OLD]"},
	about: `Compares the config FILE (default ./sluice.yaml) with the config of the running sluice, ` +
		`asked at FILE's admin.address (GET /api/v1/config, with admin.token_file's token), or with ` +
		`the file OLD: listeners, routes, pools and backends added, removed or changed, key by key ` +
		`with defaults applied, and what a reload (SIGHUP) would do to open connections: which ` +
		`listeners would be bound, moved or restarted, and which connections and backends would ` +
		`drain. Secrets (sticky.secret) are not compared with the running instance, which does not ` +
		`show them. Exits 0 whether or not something changed, 1 when a config is invalid or the ` +
		`running instance cannot be asked.`,
	args:     "[OLD]",
	maxArgs:  1,
	argFiles: true,
	setup: func(fs *flag.FlagSet) action {
		path := fs.String("config", defaultConfig, "the new config `FILE`, the one a reload would read")
		return func(ctx context.Context, out streams, args []string) error {
			next, err := config.Load(*path)
			if err != nil {
				return problems(err, *path, out.stderr)
			}
			if len(args) == 0 {
				prev, err := runningConfig(ctx, next)
				if err != nil {
					return err
				}
				// Through the same JSON as the running config, so that both
				// sides leave the same secrets out.
				if next, err = config.Parse(*path, next.PublicJSON()); err != nil {
					return err
				}
				writeDiff(out.stdout, prev, next)
				return nil
			}
			prev, err := config.Load(args[0])
			if err != nil {
				return problems(err, args[0], out.stderr)
			}
			writeDiff(out.stdout, prev, next)
			return nil
		}
	},
}

// runningConfig asks the sluice serving at cfg's admin address for its
// config (GET /api/v1/config), with the token of admin.token_file.
func runningConfig(ctx context.Context, cfg *config.Config) (*config.Config, error) {
	addr := dialAddress(cfg.Admin.Address)
	url := "http://" + addr + "/api/v1/config"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("admin.address %q: %w", cfg.Admin.Address, err)
	}
	if f := cfg.Admin.TokenFile; f != "" {
		tok, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w (check admin.token_file)", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no sluice answers at %s (admin.address of %s): %w; is it running? To compare with a file, pass it as OLD",
			addr, cfg.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%s refused the request (401): set admin.token_file to the file holding the running instance's token", url)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%s: 404: the sluice running there is older than GET /api/v1/config; pass a copy of its config file as OLD", url)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	prev, err := config.Parse(url, body)
	if err != nil {
		return nil, fmt.Errorf("the running instance's config, as %s shows it, does not load here: %w", url, err)
	}
	return prev, nil
}

// dialAddress turns a listening address into one to connect to: an
// unspecified or missing host means this machine.
func dialAddress(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() == nil:
		host = "::1"
	case ip != nil && ip.IsUnspecified():
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// writeDiff prints what changes from prev to next and what a reload would
// do about it. The effects mirror server.Reload (reload.go and build.go;
// change both together): a listener whose address changed is bound anew
// and the old socket drains; one whose protocol, timeouts, limits, engine,
// h2c, http3, proxy_protocol or tls changed gets a new server on the same
// socket and its open connections drain, except a tcp listener that stays
// tcp, which changes in place and keeps them; anything else in a listener
// is swapped in place. A backend kept (same pool, same address) keeps its
// health, counters and connections; a pool whose timeouts, upstream_tls,
// upstream_http2 or send_proxy_protocol changed opens new backend
// connections.
func writeDiff(w io.Writer, prev, next *config.Config) {
	fmt.Fprintf(w, "--- %s\n+++ %s\n", prev.Path, next.Path)
	var effects []string
	grace := next.ShutdownTimeout
	changed := false

	section := func(name string, lines []string) {
		if len(lines) == 0 {
			return
		}
		changed = true
		fmt.Fprintln(w, name)
		for _, l := range lines {
			fmt.Fprintln(w, "  "+l)
		}
	}

	// Listeners, by name.
	var lines []string
	for _, l := range next.Listeners {
		old := prev.Listener(l.Name)
		if old == nil {
			lines = append(lines, fmt.Sprintf("+ listener %q on %s", l.Name, l.Address))
			effects = append(effects, fmt.Sprintf("bind listener %q on %s", l.Name, l.Address))
			continue
		}
		ch := fieldChanges("", reflect.ValueOf(*old), reflect.ValueOf(l), "routes")
		rs := listChanges("route", old.Routes, l.Routes)
		if len(ch)+len(rs) == 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("~ listener %q", l.Name))
		lines = append(lines, indent("    ", ch)...)
		lines = append(lines, indent("    ", rs)...)
		switch {
		case old.Address != l.Address:
			effects = append(effects, fmt.Sprintf("move listener %q from %s to %s: connections open on %s drain (up to %s)",
				l.Name, old.Address, l.Address, old.Address, grace))
		case old.Protocol == "tcp" && l.Protocol == "tcp":
			// Changed in place: open connections stay (server/tcp.go).
		case old.Protocol != l.Protocol || old.Timeouts != l.Timeouts || old.Limits != l.Limits || old.Engine != l.Engine ||
			old.H2C != l.H2C || old.HTTP3 != l.HTTP3 || old.ProxyProtocol != l.ProxyProtocol || !reflect.DeepEqual(old.TLS, l.TLS):
			effects = append(effects, fmt.Sprintf("restart listener %q on the same socket (its protocol, timeouts, limits, engine, h2c, http3, proxy_protocol or tls changed): "+
				"new connections get the new settings, open ones drain (up to %s)", l.Name, grace))
		}
	}
	for _, l := range prev.Listeners {
		if next.Listener(l.Name) == nil {
			lines = append(lines, fmt.Sprintf("- listener %q on %s", l.Name, l.Address))
			effects = append(effects, fmt.Sprintf("close listener %q on %s: it stops accepting, its open connections drain (up to %s)",
				l.Name, l.Address, grace))
		}
	}
	section("listeners", lines)

	// Pools, by name; backends by address.
	lines = nil
	for _, p := range next.Pools {
		old := prev.Pool(p.Name)
		if old == nil {
			lines = append(lines, fmt.Sprintf("+ pool %q (%s, %d backend%s)", p.Name, p.Balance, len(p.Backends), plural(len(p.Backends))))
			continue
		}
		ch := fieldChanges("", reflect.ValueOf(*old), reflect.ValueOf(p), "backends")
		var bs []string
		for _, b := range p.Backends {
			ob := old.Backend(b.Address)
			switch {
			case ob == nil:
				bs = append(bs, fmt.Sprintf("+ backend %s (weight %d)", b.Address, b.Weight))
			case ob.Weight != b.Weight:
				bs = append(bs, fmt.Sprintf("~ backend %s: weight %d → %d", b.Address, ob.Weight, b.Weight))
			}
		}
		for _, b := range old.Backends {
			if p.Backend(b.Address) == nil {
				bs = append(bs, "- backend "+b.Address)
				effects = append(effects, fmt.Sprintf("drain backend %s of pool %q: requests in flight finish, WebSockets to it get %s",
					b.Address, p.Name, grace))
			}
		}
		if len(ch)+len(bs) == 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("~ pool %q", p.Name))
		lines = append(lines, indent("    ", ch)...)
		lines = append(lines, indent("    ", bs)...)
		if old.Timeouts != p.Timeouts || old.UpstreamTLS != p.UpstreamTLS || old.UpstreamHTTP2 != p.UpstreamHTTP2 ||
			old.SendProxyProtocol != p.SendProxyProtocol {
			effects = append(effects, fmt.Sprintf("open new connections to the backends of pool %q (timeouts, upstream_tls, upstream_http2 or send_proxy_protocol changed): "+
				"idle ones close, busy ones finish their request", p.Name))
		}
	}
	for _, p := range prev.Pools {
		if next.Pool(p.Name) == nil {
			lines = append(lines, fmt.Sprintf("- pool %q (%d backend%s)", p.Name, len(p.Backends), plural(len(p.Backends))))
			effects = append(effects, fmt.Sprintf("remove pool %q: requests in flight to its backends finish, WebSockets get %s",
				p.Name, grace))
		}
	}
	section("pools", lines)

	// Everything else, key by key.
	rest := fieldChanges("", reflect.ValueOf(*prev), reflect.ValueOf(*next), "listeners", "pools")
	var restart []string
	for _, key := range []string{"admin", "access_log", "log"} {
		if slices.ContainsFunc(rest, func(l string) bool { return strings.HasPrefix(l, key+".") }) {
			restart = append(restart, key)
		}
	}
	section("settings", rest)
	if len(restart) > 0 {
		effects = append(effects, "not apply "+strings.Join(restart, ", ")+": those take effect at the next restart")
	}

	if !changed {
		fmt.Fprintln(w, "no changes: a reload would keep every listener, pool, backend and connection as it is")
		return
	}
	fmt.Fprintln(w, "\na reload would")
	if len(effects) == 0 {
		fmt.Fprintln(w, "  apply every change in place: no listener is restarted and no connection or backend drains")
		return
	}
	for _, e := range effects {
		fmt.Fprintln(w, "  "+e)
	}
	fmt.Fprintln(w, "and keep every other connection open: backends kept keep their health, counters and connections")
}

func indent(prefix string, lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = prefix + l
	}
	return out
}

// yamlKey returns the YAML key of a struct field, "" for one that is not
// in the file (yaml:"-" or unexported).
func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || name == "" {
		return ""
	}
	return name
}

var durationType = reflect.TypeFor[time.Duration]()

// fieldChanges lists "key: old → new" for every YAML key that differs
// between structs a and b, descending into nested blocks (so a changed
// timeout reads timeouts.idle: 120s → 60s). Keys in skip are left out at
// the top level.
func fieldChanges(prefix string, a, b reflect.Value, skip ...string) []string {
	var out []string
	for i := range a.NumField() {
		key := yamlKey(a.Type().Field(i))
		if key == "" || (prefix == "" && slices.Contains(skip, key)) {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		switch {
		case fa.Kind() == reflect.Struct:
			out = append(out, fieldChanges(prefix+key+".", fa, fb)...)
		case fa.Kind() == reflect.Pointer && !fa.IsNil() && !fb.IsNil() && fa.Elem().Kind() == reflect.Struct:
			out = append(out, fieldChanges(prefix+key+".", fa.Elem(), fb.Elem())...)
		default:
			out = append(out, fmt.Sprintf("%s%s: %s → %s", prefix, key, formatValue(fa), formatValue(fb)))
		}
	}
	return out
}

// listChanges compares two lists whose items have no name (routes): items
// only in a are removed, items only in b added; the same items in another
// order are reported as a reordering, which matters when first match wins.
func listChanges[T any](what string, a, b []T) []string {
	fa, fb := formatAll(a), formatAll(b)
	var out []string
	for _, s := range fa {
		if !slices.Contains(fb, s) {
			out = append(out, fmt.Sprintf("- %s %s", what, s))
		}
	}
	for _, s := range fb {
		if !slices.Contains(fa, s) {
			out = append(out, fmt.Sprintf("+ %s %s", what, s))
		}
	}
	common := func(xs, other []string) []string {
		return slices.DeleteFunc(slices.Clone(xs), func(s string) bool { return !slices.Contains(other, s) })
	}
	if !slices.Equal(common(fa, fb), common(fb, fa)) {
		out = append(out, fmt.Sprintf("~ %ss reordered (the first match wins): now %s", what, strings.Join(fb, ", ")))
	}
	return out
}

func formatAll[T any](items []T) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = formatValue(reflect.ValueOf(it))
	}
	return out
}

// formatValue writes a value as YAML would, on one line: durations as
// 10s, strings quoted, blocks in flow style; an absent block is "absent".
func formatValue(v reflect.Value) string {
	switch {
	case v.Kind() == reflect.Pointer && v.IsNil():
		return "absent"
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		return fmt.Sprintf("%q", v.String())
	case v.Kind() == reflect.Slice && v.Len() == 0:
		return "[]"
	}
	var n yaml.Node
	if err := n.Encode(v.Interface()); err != nil {
		return fmt.Sprint(v.Interface())
	}
	flow(&n)
	b, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Sprint(v.Interface())
	}
	return strings.TrimSpace(string(b))
}

// flow turns every block of n into flow style, and drops empty values so
// a route reads {path_prefix: /v1, pool: api}.
func flow(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style = yaml.FlowStyle
	}
	if n.Kind == yaml.MappingNode {
		var kept []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			v := n.Content[i+1]
			if isEmpty(v) {
				continue
			}
			kept = append(kept, n.Content[i], v)
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		flow(c)
	}
}

func isEmpty(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value == "" || n.Value == "0" || n.Value == "false" || n.Tag == "!!null"
	case yaml.MappingNode, yaml.SequenceNode:
		return len(n.Content) == 0
	}
	return false
}
