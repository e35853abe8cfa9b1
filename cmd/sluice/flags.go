package main

import (
	"errors"
	"flag"
	"strings"
	"time"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// durationFlag is a non-negative duration whose parse error says what is
// expected (the flag package's own says only "parse error").
type durationFlag time.Duration

func durationVar(fs *flag.FlagSet, name string, value time.Duration, usage string) *time.Duration {
	d := value
	fs.Var((*durationFlag)(&d), name, usage)
	return &d
}

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	switch {
	case s == "0":
		v, err = 0, nil
	case err != nil:
		return errors.New("want a duration with a unit, such as 500ms, 10s or 1m")
	case v < 0:
		return errors.New("want a duration of 0 or more")
	}
	*d = durationFlag(v)
	return nil
}
