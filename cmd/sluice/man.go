package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

var manCommand = &command{
	name:     "man",
	summary:  "print the manual page, sluice(1), in roff",
	synopsis: []string{"man"},
	about: `Prints the manual page, generated from the same flag definitions as -h. ` +
		`Read it with: sluice man | man -l - ; "make man" writes it to bin/sluice.1.`,
	setup: func(fs *flag.FlagSet) action {
		return func(ctx context.Context, out streams, _ []string) error {
			manPage(out.stdout, docs(), buildInfo().Version)
			return nil
		}
	},
}

// roff escapes text for a roff body line: backslashes, hyphens (so a
// flag's dash is a minus, which survives copy and paste) and a leading
// period or quote that roff would take for a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func manPage(w io.Writer, cs []cmdDoc, version string) {
	fmt.Fprintf(w, `.TH SLUICE 1 "" "sluice %s" "User Commands"
.SH NAME
sluice \- an HTTP load balancer
.SH SYNOPSIS
.nf
`, roff(version))
	for _, c := range cs {
		for _, s := range c.synopsis {
			fmt.Fprintln(w, roff(synopsisPlain(s)))
		}
	}
	fmt.Fprint(w, `.fi
.SH DESCRIPTION
sluice spreads HTTP requests over pools of backends, checks their health, takes a failing
backend out of rotation, and shows what it does on an admin API, a dashboard and Prometheus
metrics. It runs from a YAML config file, or from flags in the quick form.
Every command takes
.BR \-h .
Flags are written with one dash or two.
.SH COMMANDS
`)
	for _, c := range cs {
		fmt.Fprintf(w, ".SS %s\n.nf\n", roff("sluice "+c.name))
		for _, s := range c.synopsis {
			fmt.Fprintln(w, roff(synopsisPlain(s)))
		}
		fmt.Fprintf(w, ".fi\n.PP\n%s\n", roff(strings.ReplaceAll(c.about, "\n\n", "\n.PP\n")))
		for _, f := range c.flags {
			if f.arg == "" {
				fmt.Fprintf(w, ".TP\n.B %s\n", roff("-"+f.name))
			} else {
				fmt.Fprintf(w, ".TP\n.BI %s \" %s\"\n", roff("-"+f.name), roff(f.arg))
			}
			fmt.Fprintln(w, roff(f.usage+f.defaultNote()))
		}
	}
	fmt.Fprint(w, `.SH EXIT STATUS
.TP
.B 0
clean exit (after a graceful shutdown, a valid config, a diff whether or not it found changes)
.TP
.B 1
bad config or start\-up failure (an address in use, an unreadable file), with a message on
standard error saying what to change
.TP
.B 2
bad command line, including a bad value given to a flag of the quick form (the message names
the flag)
.SH SIGNALS
.TP
.B SIGHUP
reload the config file: the new config is validated first; an invalid one is logged and the old
one keeps serving. Requests in flight finish on the config they started with; no connection is
dropped by a reload.
.TP
.BR SIGTERM ", " SIGINT
graceful shutdown: /readyz turns 503 at once; after shutdown_delay sluice stops accepting,
requests in flight get up to shutdown_timeout, then idle connections and WebSockets are closed
and sluice exits 0. A second signal exits at once.
.SH ENVIRONMENT
.TP
.B NOTIFY_SOCKET
set by systemd for Type=notify services: sluice sends READY=1 once every listener is bound,
RELOADING=1 with MONOTONIC_USEC= and READY=1 around each SIGHUP reload, and STOPPING=1 when
shutdown begins.
.TP
.B JOURNAL_STREAM
set by systemd when standard error goes to the journal: log lines then carry their syslog
priority and the text format leaves out its own time.
.SH FILES
.TP
.I ./sluice.yaml
the config file sluice run, validate and diff read when not given \-config.
.TP
.I /etc/sluice/sluice.yaml
the config file of the systemd unit shipped in packaging/.
.SH SEE ALSO
The configuration reference (docs/config.md), operations (docs/operations.md) and the
contract of commands, keys, endpoints and metrics (docs/contract.md) in sluice's source.
`)
}
