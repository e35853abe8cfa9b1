// Command sluice is an HTTP load balancer. Run `sluice demo` to see it work,
// `sluice run -config sluice.yaml` to run it for real, and `sluice -h` for
// every command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// Set by the linker (-ldflags "-X main.version=...").
var (
	version = "dev"
	commit  = ""
)

const usage = `sluice — an HTTP load balancer

Usage:
  sluice demo      [-listen ADDR] [-admin ADDR] [-backends N] [-backend-port P]
  sluice run       -config FILE
  sluice run       -listen ADDR -backend URL [-backend URL ...] [-balance P]
                   [-health-path P] [-health-interval D] [-admin ADDR]
  sluice validate  -config FILE
  sluice backend   -listen ADDR [-name NAME]
  sluice version

Run "sluice COMMAND -h" for the flags of a command.
`

// exit codes
const (
	exitOK     = 0
	exitFailed = 1 // bad config, start-up failure
	exitUsage  = 2 // bad command line
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "run":
		err = cmdRun(ctx, rest, stdout, stderr)
	case "validate":
		err = cmdValidate(rest, stdout, stderr)
	case "backend":
		err = cmdBackend(ctx, rest, stdout, stderr)
	case "version":
		err = cmdVersion(rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return exitFailed
	}
}

// usageError is a bad command line (exit 2).
type usageError struct{ error }

// newFlagSet returns a flag set that prints its usage to stderr and reports
// errors as usageError.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sluice %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and turns flag errors into usage errors. Extra
// positional arguments are an error too.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, versionString())
	return nil
}

func versionString() string {
	c, goVersion := commit, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("sluice %s (commit %s, %s)", version, c, goVersion)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
