package main

import (
	"bytes"
	"errors"
	"os"

	"github.com/sluice-lb/sluice/internal/config"
)

// loadConfig is config.Load, except that a file the YAML parser rejects
// and that indents with tabs gets one problem per such line saying so: the
// parser's own message ("found character that cannot start any token")
// does not tell a newcomer what to change.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	var errs config.Errors
	if err == nil || !errors.As(err, &errs) || !hasSyntaxError(errs) {
		return cfg, err
	}
	data, rerr := os.ReadFile(path)
	if rerr != nil {
		return nil, err
	}
	if tabs := tabIndents(path, data); len(tabs) > 0 {
		return nil, tabs
	}
	return nil, err
}

// hasSyntaxError reports whether the YAML parser rejected the file: its
// problems are the ones without a field path.
func hasSyntaxError(errs config.Errors) bool {
	for _, e := range errs {
		if e.Path == "" && e.Line > 0 {
			return true
		}
	}
	return false
}

// tabIndents returns a problem for every line whose indentation holds a
// tab. Blank lines and comments are left alone.
func tabIndents(path string, data []byte) config.Errors {
	var errs config.Errors
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := len(line) - len(bytes.TrimLeft(line, " \t"))
		rest := bytes.TrimSpace(line[indent:])
		if len(rest) == 0 || rest[0] == '#' {
			continue
		}
		if col := bytes.IndexByte(line[:indent], '\t'); col >= 0 {
			errs = append(errs, &config.Error{File: path, Line: i + 1, Col: col + 1,
				Msg: "tabs are not allowed, indent with spaces"})
		}
	}
	return errs
}
