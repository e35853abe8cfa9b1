package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/config"
)

// regenerate is the command that rewrites the generated parts of docs/
// (make docs runs it).
const regenerate = "go test ./cmd/sluice -run '^(TestCLIReference|TestConfigReference)$' -update"

// TestConfigReference keeps the reference tables of docs/config.md equal
// to what the config types, ApplyDefaults and config.KeyDocs generate.
// Each table sits between markers:
//
//	<!-- generated from internal/config (make docs): pools.health_check -->
//	…
//	<!-- end generated -->
//
// and everything outside the markers is written by hand. With -update the
// tables are rewritten, and a block that has none yet (a new one in the
// types) gets one after its parent's. A key without a KeyDoc, or a KeyDoc
// for a key that no longer exists, fails the test by name.
func TestConfigReference(t *testing.T) {
	blocks, problems := configReference()
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		t.Fatalf("describe each key in internal/config/keydoc_*.go (config.KeyDocs), then run make docs (%s)", regenerate)
	}
	path := filepath.Join(repoRoot, "docs", "config.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := withReference(string(doc), blocks)
	if err != nil {
		t.Fatal(err)
	}
	if *update && want != string(doc) {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		doc = []byte(want)
	}
	if string(doc) != want {
		t.Errorf("docs/config.md is stale: its reference tables differ from what internal/config generates; run: make docs (%s)", regenerate)
	}

	// The checks themselves: a field without a description, and a stale
	// table, are caught.
	type probe struct {
		Documented int `yaml:"documented"`
		Fresh      int `yaml:"fresh_key"`
	}
	var rows []refRow
	_, missing := refTable(reflect.TypeFor[probe](), reflect.ValueOf(probe{}), "probe",
		map[string]config.KeyDoc{"probe.documented": {Meaning: "m"}}, &rows)
	if len(missing) != 1 || !strings.Contains(missing[0], `"probe.fresh_key"`) || !strings.Contains(missing[0], "Fresh") {
		t.Errorf("a field without a description gave %q, want one problem naming probe.fresh_key and the field", missing)
	}
	stale := strings.Replace(want, "| `interval` |", "| `interval_old` |", 1)
	if got, _ := withReference(stale, blocks); got != want {
		t.Errorf("regenerating a stale table does not restore it")
	}
}

// refRow is one key of a reference table.
type refRow struct{ key, typ, def, meaning string }

// refBlock is the table of one block of the file ("" is the top level).
type refBlock struct {
	path string
	rows []refRow
}

// configReference builds the reference tables from the config types,
// the defaults of a config with one of every block, and config.KeyDocs; it
// returns what is missing or stale.
func configReference() ([]refBlock, []string) {
	sample := &config.Config{}
	fillBlocks(reflect.ValueOf(sample).Elem())
	sample.ApplyDefaults()
	docs := config.KeyDocs()
	var blocks []refBlock
	var problems []string
	var walk func(t reflect.Type, v reflect.Value, path string)
	walk = func(t reflect.Type, v reflect.Value, path string) {
		var rows []refRow
		nested, missing := refTable(t, v, path, docs, &rows)
		problems = append(problems, missing...)
		blocks = append(blocks, refBlock{path: path, rows: rows})
		for _, n := range nested {
			walk(n.t, n.v, n.path)
		}
	}
	walk(reflect.TypeFor[config.Config](), reflect.ValueOf(sample).Elem(), "")
	known := map[string]bool{}
	for _, b := range blocks {
		for _, r := range b.rows {
			known[join(b.path, r.key)] = true
		}
	}
	for k := range docs {
		if !known[k] {
			problems = append(problems, fmt.Sprintf("config.KeyDocs describes %q, which is not a key of the config types: remove or rename it", k))
		}
	}
	slices.Sort(problems)
	return blocks, problems
}

type nestedBlock struct {
	t    reflect.Type
	v    reflect.Value
	path string
}

// refTable appends the rows of the block of type t (its value v, defaults
// applied) at path, and returns its nested blocks and the keys without a
// description.
func refTable(t reflect.Type, v reflect.Value, path string, docs map[string]config.KeyDoc, rows *[]refRow) ([]nestedBlock, []string) {
	var nested []nestedBlock
	var missing []string
	for i := range t.NumField() {
		f := t.Field(i)
		key := yamlKey(f)
		if key == "" {
			continue
		}
		p := join(path, key)
		d, ok := docs[p]
		if !ok || d.Meaning == "" {
			missing = append(missing, fmt.Sprintf("no description for %q (field %s.%s)", p, t.Name(), f.Name))
		}
		fv := v.Field(i)
		if et, ev := blockOf(f.Type, fv); et != nil {
			nested = append(nested, nestedBlock{t: et, v: ev, path: p})
		}
		*rows = append(*rows, refRow{key: key, typ: cmp.Or(d.Type, typeName(f.Type)), def: defaultCell(f.Type, fv, d), meaning: d.Meaning})
	}
	return nested, missing
}

// blockOf returns the block type a field of type t holds, looking through
// a pointer or a list, with its value in v (the zero value when there is
// none); nil when the field is not a block.
func blockOf(t reflect.Type, v reflect.Value) (reflect.Type, reflect.Value) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		if v.Kind() == reflect.Pointer && !v.IsNil() || v.Kind() == reflect.Slice && v.Len() > 0 {
			if v.Kind() == reflect.Pointer {
				v = v.Elem()
			} else {
				v = v.Index(0)
			}
		} else {
			v = reflect.Zero(t.Elem())
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil, reflect.Value{}
	}
	return t, v
}

// fillBlocks gives the config at v one of every block (a listener, a pool,
// a backend, a tls block…), so that ApplyDefaults fills the defaults of
// every key.
func fillBlocks(v reflect.Value) {
	for i := range v.NumField() {
		if yamlKey(v.Type().Field(i)) == "" {
			continue
		}
		f := v.Field(i)
		t, _ := blockOf(f.Type(), reflect.Value{})
		if t == nil {
			continue
		}
		switch f.Kind() {
		case reflect.Pointer:
			f.Set(reflect.New(t))
			fillBlocks(f.Elem())
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
			fillBlocks(f.Index(0))
		case reflect.Struct:
			fillBlocks(f)
		}
	}
}

// typeName is what a key of Go type t takes, when its KeyDoc does not say.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Pointer:
		return typeName(t.Elem())
	case t.Kind() == reflect.Struct:
		return "block"
	case t.Kind() == reflect.Slice:
		if bt, _ := blockOf(t, reflect.Value{}); bt != nil {
			return "list of blocks"
		}
		return "list of " + typeName(t.Elem()) + "s"
	case t.Kind() == reflect.Map:
		return "mapping"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	}
	return t.Kind().String()
}

// defaultCell is the default column of a key of Go type t whose value
// after ApplyDefaults is v.
func defaultCell(t reflect.Type, v reflect.Value, d config.KeyDoc) string {
	if d.Default != "" {
		return d.Default
	}
	var cell string
	switch bt, _ := blockOf(t, reflect.Value{}); {
	case bt != nil && t.Kind() == reflect.Pointer:
		cell = "absent"
	case bt != nil && t.Kind() == reflect.Slice:
		cell = "`[]`"
	case bt != nil:
		cell = ""
	default:
		cell = "`" + formatValue(v) + "`"
	}
	return strings.TrimSpace(cell + " " + d.Note)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// The markers around a generated table; the top level's is named
// topLevel.
const (
	refBegin = "<!-- generated from internal/config (make docs): %s -->\n"
	refEnd   = "<!-- end generated -->"
	topLevel = "top level"
)

var refRegion = regexp.MustCompile(`(?s)<!-- generated from internal/config \(make docs\): ([a-z0-9_.]+|top level) -->\n.*?<!-- end generated -->`)

// withReference returns doc with every generated table rewritten from
// blocks: a block without a table gets one after the table of the block
// before it, and a table of a block that no longer exists is removed.
func withReference(doc string, blocks []refBlock) (string, error) {
	known := map[string]bool{}
	for _, b := range blocks {
		known[cmp.Or(b.path, topLevel)] = true
	}
	doc = refRegion.ReplaceAllStringFunc(doc, func(region string) string {
		if name := refRegion.FindStringSubmatch(region)[1]; !known[name] {
			return ""
		}
		return region
	})
	prev := ""
	for _, b := range blocks {
		name := cmp.Or(b.path, topLevel)
		table := renderRegion(name, b.rows)
		if loc := regionOf(doc, name); loc != nil {
			doc = doc[:loc[0]] + table + doc[loc[1]:]
		} else {
			after := regionOf(doc, prev)
			if after == nil {
				return "", fmt.Errorf("docs/config.md has no generated table for %q, after which to put the one of %q", prev, name)
			}
			parent, key := "the top level", b.path
			if i := strings.LastIndex(b.path, "."); i >= 0 {
				parent, key = "`"+b.path[:i]+"`", b.path[i+1:]
			}
			doc = doc[:after[1]] + "\n\n`" + key + "` (in " + parent + "):\n\n" + table + doc[after[1]:]
		}
		prev = name
	}
	return doc, nil
}

// regionOf returns the start and end of the generated table named name.
func regionOf(doc, name string) []int {
	for _, loc := range refRegion.FindAllStringSubmatchIndex(doc, -1) {
		if doc[loc[2]:loc[3]] == name {
			return loc[:2]
		}
	}
	return nil
}

func renderRegion(name string, rows []refRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, refBegin, name)
	b.WriteString("| key | type | default | meaning |\n| --- | --- | --- | --- |\n")
	cell := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.key, cell.Replace(r.typ), cell.Replace(r.def), cell.Replace(r.meaning))
	}
	b.WriteString(refEnd)
	return b.String()
}
