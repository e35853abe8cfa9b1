package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the work one file may cause, so aliases that expand
// exponentially ("billion laughs") fail fast instead of eating the machine.
const maxNodes = 1 << 18

// decoder walks a yaml.Node tree into a Config through the yaml struct tags,
// strictly: unknown and duplicate keys and wrong types are errors, and every
// error is collected rather than stopping at the first.
type decoder struct {
	collector
	src   *source
	nodes int
}

// errorf records a problem at node n (nil: the start of the file) and marks
// path bad so validation does not report it again.
func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.src.bad[path] = true
	p := d.src.root
	if n != nil {
		p = pos{n.Line, n.Column}
	}
	d.add(&Error{File: d.src.file, Line: p.line, Col: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// count counts a node against maxNodes, and reports whether there is budget
// left for it.
func (d *decoder) count(n *yaml.Node, path string) bool {
	d.nodes++
	if d.nodes == maxNodes+1 {
		d.errorf(n, path, "the config is too large or its aliases expand too much")
	}
	return d.nodes <= maxNodes
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	configType   = reflect.TypeFor[Config]()
)

// value decodes n into v. name is the key or item as the user wrote it
// ("weight", "backends[1]"), for messages.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path, name string) {
	if !d.count(n, path) {
		return
	}
	n = resolve(n)
	null := n.ShortTag() == "!!null"
	switch k := v.Kind(); {
	case null && !collection(v):
		d.errorf(n, path, "%s has no value: give one or remove the key", name)
	case v.Type() == durationType:
		d.duration(n, v, path, name)
	case null:
		// An empty block or list, as if written {} or [].
		if k == reflect.Pointer {
			v.Set(reflect.New(v.Type().Elem()))
		}
	case k == reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path, name)
		v.Set(p)
	case k == reflect.Struct:
		d.block(n, v, path, name)
	case k == reflect.Slice:
		d.list(n, v, path, name)
	case k == reflect.Map:
		d.stringMap(n, v, path, name)
	default:
		d.scalar(n, v, path, name)
	}
}

// collection reports whether v is a block or a list, for which a null
// value means empty.
func collection(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Struct, reflect.Pointer, reflect.Slice, reflect.Map:
		return v.Type() != durationType
	}
	return false
}

// block decodes a mapping into a struct, field by field through the yaml
// tags.
func (d *decoder) block(n *yaml.Node, v reflect.Value, path, name string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "%s must be a mapping of keys, not %s", name, describe(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var keys []string
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
			fields[tag] = i
			keys = append(keys, tag)
		}
	}
	pairs := d.pairs(n, path, blockNames[t])
	var guesses []string
	for _, e := range pairs {
		key := e.name
		i, known := fields[key]
		if !known && t == configType && strings.HasPrefix(key, "x-") {
			continue // a place for anchors, as in Compose files
		}
		if !known {
			guess := closest(key, keys)
			d.errorf(e.key, join(path, key), "unknown key %q %s%s", key, blockNames[t], didYouMean(guess))
			if guess != "" {
				guesses = append(guesses, guess)
			}
			continue
		}
		child := join(path, key)
		rv := resolve(e.value)
		null := rv.ShortTag() == "!!null"
		if null && !collection(v.Field(i)) {
			d.errorf(e.key, child, "%s has no value: give one or remove the key", key)
			continue
		}
		at := e.key
		if rv.Kind == yaml.ScalarNode && !null {
			at = e.value
		}
		d.src.keys[child] = pos{at.Line, at.Column}
		d.value(e.value, v.Field(i), child, key)
	}
	// A misspelt key was probably meant as the suggestion: do not also
	// report that one as missing.
	for _, g := range guesses {
		if !slices.ContainsFunc(pairs, func(e pair) bool { return e.name == g }) {
			d.src.bad[join(path, g)] = true
		}
	}
}

// pair is an entry of a mapping with its key's text.
type pair struct {
	name string
	entry
}

// pairs returns the entries of mapping n, merge keys expanded, whose keys
// are plain words given once, reporting the others. where says where n is,
// for messages: "in pool", "at the top level".
func (d *decoder) pairs(n *yaml.Node, path, where string) []pair {
	var ps []pair
	seen := map[string]*yaml.Node{}
	for _, e := range d.entries(n, path, 0) {
		key, ok := d.key(e.key, path)
		if !ok {
			continue
		}
		if first, dup := seen[key]; dup {
			d.errorf(e.key, join(path, key), "duplicate key %q %s (first at line %d): remove one", key, where, first.Line)
			continue
		}
		seen[key] = e.key
		ps = append(ps, pair{key, e})
	}
	return ps
}

// list decodes a sequence into a slice.
func (d *decoder) list(n *yaml.Node, v reflect.Value, path, name string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "%s must be a list, not %s", name, describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := index(path, i)
		d.src.keys[p] = pos{item.Line, item.Column}
		d.value(item, s.Index(i), p, index(name, i))
	}
	v.Set(s)
}

// stringMap decodes a mapping of scalars into a map[string]string.
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, path, name string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "%s must be a mapping, not %s", name, describe(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	for _, e := range d.pairs(n, path, "in "+name) {
		if !d.count(e.key, path) {
			return
		}
		key, child := e.name, join(path, e.name)
		val := resolve(e.value)
		if val.Kind != yaml.ScalarNode || val.ShortTag() == "!!null" {
			d.errorf(val, child, "%s.%s must be a string, not %s", name, key, describe(val))
			continue
		}
		d.src.keys[child] = pos{e.key.Line, e.key.Column}
		m.SetMapIndex(reflect.ValueOf(key), reflect.ValueOf(val.Value))
	}
	v.Set(m)
}

// key returns a mapping key's text; keys must be plain scalars.
func (d *decoder) key(k *yaml.Node, path string) (string, bool) {
	k = resolve(k)
	if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" {
		d.errorf(k, path, "a key must be a plain word, not %s", describe(k))
		return "", false
	}
	return k.Value, true
}

// scalar decodes a string, bool, integer or float, refusing the other YAML
// types (a quoted "3" is not a number, and yes/no are not booleans).
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path, name string) {
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "%s must be %s, not %s", name, kindName[v.Kind()], describe(n))
		return
	}
	switch v.Kind() {
	case reflect.String:
		// Any scalar reads as a string: `expect_status: 200` means "200".
		v.SetString(n.Value)
		return
	case reflect.Bool:
		var b bool
		if tag == "!!bool" && n.Decode(&b) == nil {
			v.SetBool(b)
			return
		}
	case reflect.Int, reflect.Int64:
		var i int64
		if tag == "!!int" && n.Decode(&i) == nil && !v.OverflowInt(i) {
			v.SetInt(i)
			return
		}
	case reflect.Float64:
		var f float64
		if (tag == "!!int" || tag == "!!float") && n.Decode(&f) == nil {
			v.SetFloat(f)
			return
		}
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), path))
	}
	d.errorf(n, path, "%s must be %s, not %s", name, kindName[v.Kind()], describe(n))
}

var kindName = map[reflect.Kind]string{
	reflect.String:  "a string",
	reflect.Bool:    "true or false",
	reflect.Int:     "a whole number",
	reflect.Int64:   "a whole number",
	reflect.Float64: "a number",
}

// duration decodes a Go duration ("500ms", "1m30s"); a bare 0 means 0.
func (d *decoder) duration(n *yaml.Node, v reflect.Value, path, name string) {
	tag := n.ShortTag()
	switch {
	case n.Kind != yaml.ScalarNode || tag == "!!null" || tag == "!!bool":
		d.errorf(n, path, "%s must be a duration such as \"500ms\" or \"10s\", not %s", name, describe(n))
	case tag == "!!int" && strings.Trim(n.Value, "0") == "":
		v.SetInt(0)
	case tag == "!!int" || tag == "!!float":
		d.errorf(n, path, "%s: %s has no unit: write a duration such as \"%ss\" or \"%sms\"", name, n.Value, n.Value, n.Value)
	default:
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errorf(n, path, "%s: bad duration %q: write a Go duration such as \"500ms\", \"10s\" or \"1m30s\"", name, n.Value)
			return
		}
		v.SetInt(int64(dur))
	}
}

// entry is one key/value pair of a mapping.
type entry struct{ key, value *yaml.Node }

// entries returns n's pairs with merge keys ("<<: *anchor") expanded: keys
// written in n come first (repeats kept, for the caller to report), then
// merged keys n does not give, earlier merges winning over later ones, as
// in YAML 1.1.
func (d *decoder) entries(n *yaml.Node, path string, depth int) []entry {
	var own, merged []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
			own = append(own, entry{k, v})
			continue
		}
		if depth > 10 {
			d.errorf(k, path, "merge keys (\"<<\") nest too deep")
			continue
		}
		srcs := []*yaml.Node{v}
		if rv := resolve(v); rv.Kind == yaml.SequenceNode {
			srcs = rv.Content
		}
		for _, s := range srcs {
			if !d.count(s, path) {
				return own
			}
			rs := resolve(s)
			if rs.Kind != yaml.MappingNode {
				d.errorf(s, path, "a merge key (\"<<\") needs a mapping or a list of mappings, not %s", describe(rs))
				continue
			}
			merged = append(merged, d.entries(rs, path, depth+1)...)
		}
	}
	have := map[string]bool{}
	for _, e := range own {
		have[resolve(e.key).Value] = true
	}
	for _, e := range merged {
		if k := resolve(e.key).Value; !have[k] {
			have[k] = true
			own = append(own, e)
		}
	}
	return own
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// describe names what a node is, for "must be X, not Y" messages.
func describe(n *yaml.Node) string {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!bool":
			return n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		default:
			return strconv.Quote(n.Value)
		}
	default:
		return "an alias"
	}
}

// blockNames say where an unknown key was, by the type it was decoded into.
var blockNames = map[reflect.Type]string{
	reflect.TypeFor[Config]():           "at the top level",
	reflect.TypeFor[Listener]():         "in listener",
	reflect.TypeFor[TLS]():              "in tls",
	reflect.TypeFor[Certificate]():      "in tls certificate",
	reflect.TypeFor[ACME]():             "in tls.acme",
	reflect.TypeFor[ListenerTimeouts](): "in listener timeouts",
	reflect.TypeFor[Limits]():           "in limits",
	reflect.TypeFor[Route]():            "in route",
	reflect.TypeFor[Pool]():             "in pool",
	reflect.TypeFor[Backend]():          "in backend",
	reflect.TypeFor[Discovery]():        "in discovery",
	reflect.TypeFor[DNSDiscovery]():     "in discovery.dns",
	reflect.TypeFor[EtcdDiscovery]():    "in discovery.etcd",
	reflect.TypeFor[EtcdTLS]():          "in discovery.etcd.tls",
	reflect.TypeFor[HealthCheck]():      "in health_check",
	reflect.TypeFor[PassiveHealth]():    "in passive_health",
	reflect.TypeFor[Retries]():          "in retries",
	reflect.TypeFor[PoolTimeouts]():     "in pool timeouts",
	reflect.TypeFor[Sticky]():           "in sticky",
	reflect.TypeFor[UpstreamTLS]():      "in upstream_tls",
	reflect.TypeFor[Admin]():            "in admin",
	reflect.TypeFor[AccessLog]():        "in access_log",
	reflect.TypeFor[Log]():              "in log",
	reflect.TypeFor[RateLimit]():        "in rate_limit",
	reflect.TypeFor[RateLimitStore]():   "in rate_limit_store",
	reflect.TypeFor[RedisStore]():       "in rate_limit_store.redis",
	reflect.TypeFor[LoadReport]():       "in load_report",
}
