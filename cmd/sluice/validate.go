package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sluice-lb/sluice/internal/config"
)

var validateCommand = &command{
	name:     "validate",
	summary:  "check a config file; -v also summarises what it does",
	synopsis: []string{"validate [-config FILE] [-v]"},
	about: `Exits 0 when the config file is valid; otherwise exits 1 and prints every problem ` +
		`as FILE:LINE:COL: message. What does not stop sluice (a certificate expired or about to) is ` +
		`printed as a warning. With -v it also prints a one-screen summary: listeners and ` +
		`their routes, pools with their policy, backends and health checks, and the admin address.`,
	setup: func(fs *flag.FlagSet) action {
		path := fs.String("config", defaultConfig, "check config `FILE`")
		verbose := fs.Bool("v", false, "print a summary of what the config does")
		return func(ctx context.Context, out streams, _ []string) error {
			cfg, err := config.Load(*path)
			if err != nil {
				return problems(err, *path, out.stderr)
			}
			// What does not stop sluice (a certificate about to expire)
			// still deserves a look.
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(out.stderr, "warning: "+w)
			}
			fmt.Fprintf(out.stdout, "%s: ok\n", *path)
			if *verbose {
				summarize(out.stdout, cfg)
			}
			return nil
		}
	},
}

// problems prints a config's problems one per line and returns the error
// the command exits with.
func problems(err error, path string, stderr io.Writer) error {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(stderr, e.Error())
		}
		return fmt.Errorf("%s: %d problem%s", path, len(errs), plural(len(errs)))
	}
	return err
}

// maxListed bounds the backends and routes listed per pool or listener, to
// keep the summary on one screen.
const maxListed = 4

// summarize prints what cfg does: who listens where, which requests go to
// which pool, how each pool balances and checks its backends.
func summarize(w io.Writer, cfg *config.Config) {
	nb := 0
	for _, p := range cfg.Pools {
		nb += len(p.Backends)
	}
	fmt.Fprintf(w, "%d listener%s, %d pool%s, %d backend%s\n", len(cfg.Listeners), plural(len(cfg.Listeners)),
		len(cfg.Pools), plural(len(cfg.Pools)), nb, plural(nb))

	fmt.Fprintln(w, "\nlisteners")
	var rows [][]string
	used := map[string]bool{}
	for _, l := range cfg.Listeners {
		def := "404"
		if l.Pool != "" {
			def, used[l.Pool] = "pool "+l.Pool, true
		}
		rows = append(rows, []string{l.Name, l.Address, listenerProto(l), fmt.Sprintf("%d route%s, else %s", len(l.Routes), plural(len(l.Routes)), def)})
		for i, r := range l.Routes {
			used[r.Pool] = true
			if i == maxListed {
				rows = append(rows, []string{"", fmt.Sprintf("  … %d more", len(l.Routes)-i)})
				break
			}
			rows = append(rows, []string{"", "  " + routeMatch(r) + " → pool " + r.Pool})
		}
	}
	columns(w, "  ", rows)

	fmt.Fprintln(w, "\npools")
	rows = nil
	for _, p := range cfg.Pools {
		note := ""
		if !used[p.Name] {
			note = " (no listener or route uses it)"
		}
		rows = append(rows, []string{p.Name, policy(p), fmt.Sprintf("%d backend%s", len(p.Backends), plural(len(p.Backends))), health(p) + note})
		var bs []string
		for i, b := range p.Backends {
			if i == maxListed {
				bs = append(bs, fmt.Sprintf("… %d more", len(p.Backends)-i))
				break
			}
			if b.Weight != 1 {
				bs = append(bs, fmt.Sprintf("%s ×%d", b.Address, b.Weight))
			} else {
				bs = append(bs, b.Address)
			}
		}
		if len(bs) > 0 {
			rows = append(rows, []string{"", "  " + strings.Join(bs, ", ")})
		}
	}
	columns(w, "  ", rows)

	token := "no token"
	if cfg.Admin.TokenFile != "" {
		token = "token from " + cfg.Admin.TokenFile
	}
	fmt.Fprintf(w, "\nadmin       %s (%s)\n", cfg.Admin.Address, token)
	fmt.Fprintf(w, "logs        access log %s (%s), process log %s (%s)\n", cfg.AccessLog.Path, cfg.AccessLog.Format, cfg.Log.Level, cfg.Log.Format)
	fmt.Fprintf(w, "shutdown    delay %s, timeout %s\n", cfg.ShutdownDelay, cfg.ShutdownTimeout)
}

func listenerProto(l config.Listener) string {
	s := listenerScheme(l)
	if l.ProxyProtocol {
		s += " behind PROXY headers"
	}
	return s
}

func listenerScheme(l config.Listener) string {
	switch {
	case l.Protocol == "tcp" && l.TLS != nil:
		return fmt.Sprintf("tcp, TLS terminated (%d certificate%s)", len(l.TLS.Certificates), plural(len(l.TLS.Certificates)))
	case l.TLS != nil:
		return fmt.Sprintf("https (%d certificate%s)", len(l.TLS.Certificates), plural(len(l.TLS.Certificates)))
	case l.H2C:
		return l.Protocol + " + h2c"
	}
	return l.Protocol
}

// routeMatch describes what a route matches, e.g. `api.example.com/v1*
// [X-Canary: 1]`.
func routeMatch(r config.Route) string {
	if r.SNI != "" {
		return "sni " + r.SNI
	}
	s := r.Host + r.PathPrefix
	if s == "" {
		s = "*"
	} else if r.PathPrefix != "" {
		s += "*"
	}
	var hs []string
	for k, v := range r.Headers {
		hs = append(hs, k+": "+v)
	}
	if len(hs) > 0 {
		slices.Sort(hs)
		s += " [" + strings.Join(hs, ", ") + "]"
	}
	return s
}

func policy(p config.Pool) string {
	s := p.Balance
	if strings.Contains(p.Balance, "hash") {
		s += " on " + p.HashKey
	}
	if p.Sticky != nil {
		s += ", sticky cookie " + p.Sticky.Cookie
	}
	if p.SlowStart > 0 {
		s += ", slow start " + p.SlowStart.String()
	}
	return s
}

func health(p config.Pool) string {
	hc := p.HealthCheck
	s := "passive health only"
	if hc != nil {
		what := hc.Type
		if hc.Type == "http" {
			what = "GET " + hc.Path
		}
		s = fmt.Sprintf("checks %s every %s (rise %d, fall %d)", what, hc.Interval, hc.HealthyThreshold, hc.UnhealthyThreshold)
	}
	if n := p.Retries.NumRetries; n > 0 {
		s += fmt.Sprintf(", %d retr%s", n, map[bool]string{true: "y", false: "ies"}[n == 1])
	} else {
		s += ", no retries"
	}
	return s
}

// columns prints rows with every column but the last padded to its
// widest cell (cells of a row with fewer columns are not padded past it).
func columns(w io.Writer, indent string, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r[:max(len(r)-1, 0)] {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], runeLen(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		b.WriteString(indent)
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-runeLen(c)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }
