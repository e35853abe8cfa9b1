package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a config.
type Error struct {
	// File is the config file. For a config built in Go (Config.Path is ""
	// and it was not decoded from a file) it is the field path instead, so
	// Error() still says where the problem is.
	File string
	// Line and Col are 1-based positions in File of the offending key or
	// value; both are 0 for a config built in Go.
	Line, Col int
	// Path is the field path, e.g. "pools[0].backends[1].address"; "" for a
	// YAML syntax error.
	Path string
	// Msg says what is wrong and what to do.
	Msg string
}

// Error returns "FILE:LINE:COL: message", or "FIELD: message" for a config
// built in Go.
func (e *Error) Error() string {
	switch {
	case e.Line > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	default:
		return e.Msg
	}
}

// Errors is every problem found in a config, in file order. Load, Parse and
// Validate return it; callers print one Error per line.
type Errors []*Error

// Error joins the problems, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// maxErrors bounds how many problems decoding, and then validation, report.
const maxErrors = 1000

// collector gathers problems, dropping repeats (an anchor used in many
// places reports its problems once) and stopping after maxErrors.
type collector struct {
	errs Errors
	seen map[Error]bool // errs without their Path
}

func (c *collector) add(e *Error) {
	key := *e
	key.Path = ""
	if c.seen[key] || len(c.errs) > maxErrors {
		return
	}
	if c.seen == nil {
		c.seen = map[Error]bool{}
	}
	c.seen[key] = true
	if len(c.errs) == maxErrors {
		e = &Error{File: e.File, Line: e.Line, Col: e.Col, Msg: "too many problems: fix these first"}
	}
	c.errs = append(c.errs, e)
}

// tidy sorts problems by position, keeping the order of equal ones, so a
// config built in Go reports in field order.
func (es Errors) tidy() Errors {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return es
}

// didYouMean returns ` (did you mean "x"?)`, or "" when guess is "".
func didYouMean(guess string) string {
	if guess == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", guess)
}

// closest returns the candidate closest to s by edit distance, or "" when
// none is close enough to be a likely typo.
func closest(s string, candidates []string) string {
	if len(s) > 64 {
		return ""
	}
	best, bestDist := "", 0
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if best == "" || d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" || bestDist > max(1, len(best)/3) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b,
// in bytes: insertions, deletions, substitutions and transpositions of
// adjacent bytes ("nmae" is one from "name").
func editDistance(a, b string) int {
	rows := make([][]int, len(a)+1)
	for i := range rows {
		rows[i] = make([]int, len(b)+1)
		rows[i][0] = i
	}
	for j := range rows[0] {
		rows[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d := min(rows[i-1][j]+1, rows[i][j-1]+1, rows[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d = min(d, rows[i-2][j-2]+1)
			}
			rows[i][j] = d
		}
	}
	return rows[len(a)][len(b)]
}
