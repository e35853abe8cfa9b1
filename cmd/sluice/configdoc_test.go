package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-lb/sluice/internal/config"
)

// TestConfigReferenceDefaults reads the annotated file at the top of
// docs/config.md ("values shown are the defaults, except where a comment
// says example") and compares every value it shows as a default with what
// config.ApplyDefaults sets.
func TestConfigReferenceDefaults(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	problems, checked, err := defaultsProblems(doc)
	if err != nil {
		t.Fatal(err)
	}
	if checked < 40 {
		t.Errorf("checked %d default values, want the whole file's (40 or more)", checked)
	}
	for _, p := range problems {
		t.Errorf("docs/config.md, the whole file: %s", p)
	}
	// The check itself: a wrong default in the docs is caught.
	bad := strings.Replace(string(doc), "      interval: 10s", "      interval: 11s", 1)
	if bad == string(doc) {
		t.Fatal("the whole file no longer shows health_check's interval: 10s; update this test")
	}
	if problems, _, _ := defaultsProblems([]byte(bad)); len(problems) != 1 || !strings.Contains(problems[0], "pools.health_check.interval") {
		t.Errorf("a wrong interval in the docs gave %q, want one problem naming pools.health_check.interval", problems)
	}
}

// defaultsProblems compares the defaults docs/config.md shows with
// config.ApplyDefaults, and says how many values it compared.
func defaultsProblems(doc []byte) (problems []string, checked int, err error) {
	m := regexp.MustCompile("(?s)## The whole file.*?```yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		return nil, 0, errors.New("docs/config.md has no ```yaml block under \"## The whole file\"")
	}
	var shown yaml.Node
	if err := yaml.Unmarshal(m[1], &shown); err != nil {
		return nil, 0, fmt.Errorf("the whole-file block of docs/config.md is not YAML: %w", err)
	}
	// A config with one of everything, all defaults.
	c := &config.Config{
		Listeners: []config.Listener{{Address: ":8080"}},
		Pools: []config.Pool{{Name: "web", HealthCheck: &config.HealthCheck{}, Sticky: &config.Sticky{},
			Backends: []config.Backend{{Address: "http://127.0.0.1:8081"}}}},
	}
	c.ApplyDefaults()
	var defaults yaml.Node
	if err := defaults.Encode(c); err != nil {
		return nil, 0, err
	}
	// Values that are examples by nature: names and addresses are required.
	skip := []string{"listeners.name", "listeners.address", "listeners.pool", "pools.name"}
	var walk func(path string, doc, def *yaml.Node)
	walk = func(path string, doc, def *yaml.Node) {
		switch doc.Kind {
		case yaml.DocumentNode:
			walk(path, doc.Content[0], def)
		case yaml.SequenceNode:
			if def == nil || def.Kind != yaml.SequenceNode {
				problems = append(problems, fmt.Sprintf("%s: docs show a list, the config has %v", path, kindOf(def)))
				return
			}
			if len(doc.Content) > 0 && doc.Content[0].Kind == yaml.MappingNode && len(def.Content) > 0 {
				walk(path, doc.Content[0], def.Content[0]) // a list of blocks: its first stands for all
				return
			}
			if got, want := scalars(doc), scalars(def); !slices.Equal(got, want) {
				problems = append(problems, fmt.Sprintf("%s: docs show %v, the default is %v", path, got, want))
			}
			checked++
		case yaml.MappingNode:
			for i := 0; i+1 < len(doc.Content); i += 2 {
				k, v := doc.Content[i], doc.Content[i+1]
				p := strings.TrimPrefix(path+"."+k.Value, ".")
				if strings.Contains(k.LineComment+v.LineComment, "example") || slices.Contains(skip, p) {
					continue
				}
				dv := lookupKey(def, k.Value)
				if dv == nil {
					problems = append(problems, fmt.Sprintf("%s: in the docs, not a key of the config types", p))
					continue
				}
				walk(p, v, dv)
			}
		case yaml.ScalarNode:
			if !sameScalar(doc.Value, def) {
				problems = append(problems, fmt.Sprintf("%s: docs show %q, the default is %q", path, doc.Value, kindOf(def)+" "+valueOf(def)))
			}
			checked++
		}
	}
	walk("", &shown, &defaults)
	return problems, checked, nil
}

func valueOf(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

func kindOf(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	return n.Tag
}

func lookupKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalars(n *yaml.Node) []string {
	var out []string
	for _, c := range n.Content {
		out = append(out, c.Value)
	}
	return out
}

// sameScalar compares a value as the docs write it with the default,
// durations by their length (120s is 2m0s).
func sameScalar(shown string, def *yaml.Node) bool {
	if def == nil || def.Kind != yaml.ScalarNode {
		return false
	}
	if shown == def.Value {
		return true
	}
	a, errA := time.ParseDuration(shown)
	b, errB := time.ParseDuration(def.Value)
	return errA == nil && errB == nil && a == b
}
