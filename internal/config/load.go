package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Load reads, decodes, defaults and validates the config file at path. A bad
// config returns Errors with every problem; an unreadable file returns a
// plain error naming the path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for a file already in memory; path is only used in messages
// and as Config.Path.
func Parse(path string, data []byte) (*Config, error) {
	c, errs := decode(path, data)
	if c != nil {
		c.ApplyDefaults()
		var verrs Errors
		if errors.As(c.Validate(), &verrs) {
			errs = append(errs, verrs...)
		}
	}
	if len(errs) > 0 {
		return nil, errs.tidy()
	}
	return c, nil
}

func decode(path string, data []byte) (*Config, Errors) {
	d := &decoder{src: newSource(path)}
	root, err := parseYAML(data)
	switch {
	case err != nil:
		// The parser's own message for a tab ("found character that cannot
		// start any token") does not tell a newcomer what to change.
		if tabs := tabIndents(path, data); len(tabs) > 0 {
			return nil, tabs
		}
		return nil, Errors{syntaxError(path, err)}
	case root == nil || root.ShortTag() == "!!null":
		d.src.root = pos{1, 1}
		d.errorf(root, "", "the config is empty: it needs at least listeners and pools")
		return nil, d.errs
	}
	d.src.root = pos{root.Line, root.Column}
	if resolve(root).Kind != yaml.MappingNode {
		d.errorf(root, "", "the config must be a mapping with keys such as listeners and pools, not %s", describe(root))
		return nil, d.errs
	}
	c := &Config{Path: path, src: d.src}
	d.value(root, reflect.ValueOf(c).Elem(), "", "")
	if d.nodes > maxNodes {
		return nil, d.errs
	}
	return c, d.errs
}

// parseYAML returns the single document's root node, nil for an empty file.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The YAML parser is third-party code fed untrusted bytes: a panic
		// there must become a bad config, not a crashed reload.
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, err
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("yaml: line %d: a second YAML document starts here: put the whole config in one document", next.Line)
	case err != io.EOF:
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// tabIndents returns a problem for every line whose indentation holds a
// tab; blank lines and comments are left alone. It is asked only once the
// parser has refused the file (a tab inside a value is fine).
func tabIndents(path string, data []byte) Errors {
	var errs Errors
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := len(line) - len(bytes.TrimLeft(line, " \t"))
		rest := bytes.TrimSpace(line[indent:])
		if len(rest) == 0 || rest[0] == '#' {
			continue
		}
		if col := bytes.IndexByte(line[:indent], '\t'); col >= 0 {
			errs = append(errs, &Error{File: path, Line: i + 1, Col: col + 1,
				Msg: "tabs are not allowed, indent with spaces"})
		}
	}
	return errs
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// syntaxError turns the YAML parser's error into an Error. The parser gives
// a line (not always) but no column.
func syntaxError(file string, err error) *Error {
	msg := err.Error()
	line := 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		msg = msg[len(m[0]):]
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
			line = n
		}
	}
	return &Error{File: file, Line: line, Col: 1, Msg: "invalid YAML: " + msg}
}
