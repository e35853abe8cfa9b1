package config

import (
	"fmt"
	"strings"
)

// source remembers, for a config decoded from a file, which keys the file
// gave and where, keyed by field path ("listeners[0].timeouts.idle"). It
// lets defaults tell "absent" from "zero" (num_retries: 0 stays 0) and lets
// validation point at the offending line. A config built in Go has none.
type source struct {
	file string
	root pos
	// keys holds every key the file gave and every list item, with the
	// position of its value when that is a scalar, else of the key.
	keys map[string]pos
	// bad holds paths that failed to decode (or a misspelt key probably
	// meant); validation stays quiet about them and what is under them, so
	// one mistake is reported once.
	bad map[string]bool
}

type pos struct{ line, col int }

func newSource(file string) *source {
	return &source{file: file, keys: map[string]pos{}, bad: map[string]bool{}}
}

// given reports whether the key at path was set: present in the file, or,
// for a config built in Go, nonZero.
func (s *source) given(path string, nonZero bool) bool {
	if s == nil {
		return nonZero
	}
	_, ok := s.keys[path]
	return ok
}

// at returns the position recorded for path or its nearest recorded
// ancestor (a missing key is reported at the block that lacks it).
func (s *source) at(path string) pos {
	for {
		if p, ok := s.keys[path]; ok {
			return p
		}
		if path == "" {
			return s.root
		}
		path = parent(path)
	}
}

// isBad reports whether path or one of its ancestors failed to decode.
func (s *source) isBad(path string) bool {
	for {
		if s.bad[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parent(path)
	}
}

// parent strips the last ".key" or "[i]" from a field path.
func parent(path string) string {
	return path[:max(0, strings.LastIndexAny(path, ".["))]
}

// join appends a key to a field path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends a list index to a field path.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
