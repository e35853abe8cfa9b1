package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated docs: docs/cli.md from the command table, the reference tables of docs/config.md from internal/config (make docs)")

// TestCLIReference keeps docs/cli.md equal to what the command table
// generates; run `make docs` after changing a command or a flag.
func TestCLIReference(t *testing.T) {
	path := filepath.Join(repoRoot, "docs", "cli.md")
	want := cliMarkdown(docs())
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("docs/cli.md is stale: run make docs (%s)", regenerate)
	}
}

func cliMarkdown(cs []cmdDoc) string {
	var b strings.Builder
	b.WriteString(`# Command line

<!-- Generated from the command table of cmd/sluice (the one -h, the completion scripts and the
manual page come from) by make docs. Edit cmd/sluice. -->

sluice is one binary. Every command takes ` + "`-h`" + ` (help on standard output, exit 0); flags take
one dash or two (` + "`-config`" + `, ` + "`--config`" + `) and may come before or after the positional
arguments. ` + "`sluice -h`" + ` lists every command; ` + "`sluice -version`" + ` and ` + "`--version`" + ` are
` + "`sluice version`" + `.

| command | what it does |
| --- | --- |
`)
	for _, c := range cs {
		fmt.Fprintf(&b, "| [`%s`](#sluice-%s) | %s |\n", c.name, c.name, c.summary)
	}
	b.WriteString(`
**Exit codes.** 0: a clean exit (after a graceful shutdown; a valid config; a diff, whether or not
it found changes). 1: a bad config or a start-up failure (an address in use, an unreadable file),
with a message on standard error saying what to change. 2: a bad command line, including a bad value
given to a flag of the quick form; the message names the flag, and an unknown flag is reported once,
followed by the command's synopsis.

**Signals** (sluice run and demo). SIGHUP reloads the config file: it is validated first, and an
invalid one is logged while the old config keeps serving. SIGTERM and SIGINT shut down gracefully;
a second one exits at once. See [operations](operations.md).

**Environment.** NOTIFY_SOCKET (set by systemd for Type=notify units): sluice sends READY=1 once
every listener is bound, RELOADING=1 with MONOTONIC_USEC= and then READY=1 around each SIGHUP reload,
and STOPPING=1 when shutdown begins. JOURNAL_STREAM (set by systemd when standard error goes to the
journal): each log line carries its syslog priority (so ` + "`journalctl -p warning`" + ` works) and the
text format leaves out its time=, which the journal records.

**Completion and manual page.** ` + "`sluice completion bash|zsh|fish`" + ` prints a completion script and
` + "`sluice man`" + ` the manual page, both generated from the same flag definitions as -h; ` + "`make completion`" + `
and ` + "`make man`" + ` write them to bin/. To install:

` + "```sh" + `
sluice completion bash > /usr/share/bash-completion/completions/sluice   # or: source <(sluice completion bash)
sluice completion zsh > "${fpath[1]}/_sluice"                           # or: source <(sluice completion zsh)
sluice completion fish > ~/.config/fish/completions/sluice.fish
sluice man > /usr/local/share/man/man1/sluice.1
` + "```" + `
`)
	for _, c := range cs {
		fmt.Fprintf(&b, "\n## sluice %s\n\n```\n", c.name)
		for _, s := range c.synopsis {
			b.WriteString(synopsisPlain(s) + "\n")
		}
		fmt.Fprintf(&b, "```\n\n%s\n", wrap(c.about, 100, ""))
		if len(c.flags) == 0 {
			continue
		}
		b.WriteString("\n| flag | default | meaning |\n| --- | --- | --- |\n")
		for _, f := range c.flags {
			def := strings.TrimSuffix(strings.TrimPrefix(f.defaultNote(), " (default "), ")")
			if def != "" {
				def = "`" + def + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.head(), def, strings.ReplaceAll(f.usage, "|", `\|`))
		}
	}
	return b.String()
}
