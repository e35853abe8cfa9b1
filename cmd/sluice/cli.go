package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one sluice command. The table in commands is the one place a
// command's synopsis and flags are written: -h, the usage text, the
// completion scripts and the manual page are generated from it.
type command struct {
	name     string
	summary  string   // one line, for lists
	synopsis []string // each form of the command line, after "sluice "
	about    string   // what -h and the manual page say beneath the synopsis
	// args describes the positional arguments ("" for none), maxArgs bounds
	// them, argChoices lists their values when they are a fixed set and
	// argFiles says they name files (both for completion).
	args       string
	maxArgs    int
	argChoices []string
	argFiles   bool
	// choices lists the values of flags that take one of a fixed set, by
	// flag name (completion offers them).
	choices func() map[string][]string
	// setup defines the command's flags on fs and returns what runs it
	// once they are parsed.
	setup func(fs *flag.FlagSet) action
}

// action runs a command with its parsed flags and positional arguments.
type action func(ctx context.Context, out streams, args []string) error

// streams are a command's standard output and error.
type streams struct{ stdout, stderr io.Writer }

var commands []*command

func init() {
	// Assigned in init: the help and completion commands read the table.
	commands = []*command{
		demoCommand, runCommand, validateCommand, diffCommand, backendCommand,
		versionCommand, completionCommand, manCommand, helpCommand,
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// flagSet returns the command's flags, defined and quiet: the flag package
// prints nothing itself, so an error is reported once, by execute.
func (c *command) flagSet() (*flag.FlagSet, action) {
	fs := flag.NewFlagSet("sluice "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	act := c.setup(fs)
	return fs, act
}

// execute parses args and runs the command; it returns the exit code.
func (c *command) execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, act := c.flagSet()
	pos, err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.printHelp(stdout, fs)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "sluice %s: %v\n", c.name, err)
		c.printShortUsage(stderr)
		return exitUsage
	case len(pos) > c.maxArgs:
		fmt.Fprintf(stderr, "sluice %s: unexpected argument %q\n", c.name, pos[c.maxArgs])
		c.printShortUsage(stderr)
		return exitUsage
	}
	return exitCode(c.name, act(ctx, streams{stdout, stderr}, pos), stderr)
}

// parseInterleaved parses flags placed before, between or after positional
// arguments (`sluice diff OLD -config NEW` as well as `-config NEW OLD`);
// "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stops at the first non-flag, or just after "--".
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *command) printShortUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage:")
	for _, s := range c.synopsis {
		fmt.Fprintln(w, synopsisLine(s))
	}
	fmt.Fprintf(w, "Run \"sluice %s -h\" for every flag.\n", c.name)
}

// printHelp prints what -h shows: synopsis, description and every flag.
func (c *command) printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage:")
	for _, s := range c.synopsis {
		fmt.Fprintln(w, synopsisLine(s))
	}
	fmt.Fprintf(w, "\n%s\n", wrap(c.about, 76, ""))
	flags := flagsOf(fs)
	if len(flags) == 0 {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	for _, f := range flags {
		fmt.Fprintf(w, "  %s\n%s\n", f.head(), wrap(f.usage+f.defaultNote(), 72, "        "))
	}
}

// flagDoc is one flag as the help, completion and manual page show it.
type flagDoc struct {
	name, arg, usage, def string
	isBool, repeat        bool
}

func (f flagDoc) head() string {
	if f.arg == "" {
		return "-" + f.name
	}
	return "-" + f.name + " " + f.arg
}

func (f flagDoc) defaultNote() string {
	switch f.def {
	case "", "0", "0s", "false":
		return ""
	}
	return fmt.Sprintf(" (default %s)", f.def)
}

// flagsOf lists fs's flags in name order. A flag's argument name is the
// backquoted word of its usage (`FILE`), as flag.UnquoteUsage reads it.
func flagsOf(fs *flag.FlagSet) []flagDoc {
	var out []flagDoc
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		bf, isBool := f.Value.(interface{ IsBoolFlag() bool })
		isBool = isBool && bf.IsBoolFlag()
		if isBool {
			arg = ""
		}
		out = append(out, flagDoc{name: f.Name, arg: arg, usage: usage, def: f.DefValue, isBool: isBool})
	})
	return out
}

// wrap fills text to width columns, each line starting with indent.
// Paragraphs are separated by blank lines; lines starting with two spaces
// are kept as they are (examples).
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			b.WriteString("\n\n")
		}
		if strings.HasPrefix(para, "  ") {
			for j, l := range strings.Split(para, "\n") {
				if j > 0 {
					b.WriteByte('\n')
				}
				b.WriteString(indent + l)
			}
			continue
		}
		col := 0
		for j, word := range strings.Fields(para) {
			switch {
			case j == 0:
				b.WriteString(indent + word)
				col = len(indent) + len(word)
			case col+1+len(word) > width:
				b.WriteString("\n" + indent + word)
				col = len(indent) + len(word)
			default:
				b.WriteString(" " + word)
				col += 1 + len(word)
			}
		}
	}
	return b.String()
}

// synopsisLine writes one form of a command line, indented by two and
// wrapped at 80 columns beneath the command's first argument, never inside
// a bracketed group.
func synopsisLine(s string) string {
	var groups []string
	depth := 0
	for _, w := range strings.Fields(s) {
		if depth > 0 {
			groups[len(groups)-1] += " " + w
		} else {
			groups = append(groups, w)
		}
		depth += strings.Count(w, "[") - strings.Count(w, "]")
	}
	var b strings.Builder
	b.WriteString("  sluice " + groups[0])
	col := b.Len()
	indent := strings.Repeat(" ", col+1)
	for _, g := range groups[1:] {
		if col+1+len(g) > 80 {
			b.WriteString("\n" + indent + g)
			col = len(indent) + len(g)
			continue
		}
		b.WriteString(" " + g)
		col += 1 + len(g)
	}
	return b.String()
}

// synopsisPlain is synopsisLine without the indent, for the manual page
// and docs/cli.md.
func synopsisPlain(s string) string {
	return strings.ReplaceAll(synopsisLine(s), "\n  ", "\n")[2:]
}

// usageText is what `sluice -h` prints: every command with every form of
// its command line.
func usageText() string {
	var b strings.Builder
	b.WriteString("sluice — an HTTP load balancer\n\nUsage:\n")
	for _, c := range commands {
		for _, s := range c.synopsis {
			fmt.Fprintln(&b, synopsisLine(s))
		}
	}
	b.WriteString("\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-11s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun \"sluice COMMAND -h\" for what a command and each of its flags do.\n")
	return b.String()
}

var helpCommand = &command{
	name:     "help",
	summary:  "print the usage, or the help of one command",
	synopsis: []string{"help [COMMAND]"},
	about:    `Prints the list of commands and their synopses, or with COMMAND the same as "sluice COMMAND -h".`,
	args:     "[COMMAND]",
	maxArgs:  1,
	// argChoices: the command names, filled in by init.
	setup: func(fs *flag.FlagSet) action {
		return func(ctx context.Context, out streams, args []string) error {
			if len(args) == 0 {
				fmt.Fprint(out.stdout, usageText())
				return nil
			}
			c := lookup(args[0])
			if c == nil {
				return usagef("unknown command %q", args[0])
			}
			fs, _ := c.flagSet()
			c.printHelp(out.stdout, fs)
			return nil
		}
	},
}

func init() {
	for _, c := range commands {
		helpCommand.argChoices = append(helpCommand.argChoices, c.name)
	}
}
