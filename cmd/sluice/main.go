// Command sluice is an HTTP load balancer. Run `sluice demo` to see it work,
// `sluice run -config sluice.yaml` to run it for real, and `sluice -h` for
// every command.
//
// This package is the command line only: flags, signals and wiring. Every
// command, its synopsis and its flags are defined once, in the table of
// cli.go; -h, the usage text, the shell completion scripts and the manual
// page are all generated from that table, so they cannot disagree.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// exit codes (DESIGN.md)
const (
	exitOK     = 0
	exitFailed = 1 // bad config, start-up failure
	exitUsage  = 2 // bad command line, including a bad value of a quick-form flag
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText())
		return exitOK
	case "-version", "--version":
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		msg := fmt.Sprintf("unknown command %q", name)
		if len(name) > 1 && name[0] == '-' {
			msg = fmt.Sprintf("unknown flag %q: flags follow a command", name)
		}
		fmt.Fprintf(stderr, "sluice: %s\n\n%s", msg, usageText())
		return exitUsage
	}
	return c.execute(ctx, rest, stdout, stderr)
}

// usageError is a bad command line (exit 2). Its message names the flag or
// argument at fault.
type usageError struct{ error }

// usagef returns a usageError.
func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// exitCode maps a command's error to the exit code and prints it, once.
func exitCode(name string, err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
		return exitFailed
	}
}
