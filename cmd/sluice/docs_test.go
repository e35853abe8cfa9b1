package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// markdownLink finds [text](target) links; images too.
var markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinks: every relative link of the README and docs/ names a file
// or folder of the repository, and the README sends no reader outside it
// (the contract lives in docs/contract.md, not in a folder beside the
// repository).
func TestDocsLinks(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	files = append(files, filepath.Join(repoRoot, "README.md"))
	root, _ := filepath.Abs(repoRoot)
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range markdownLink.FindAllStringSubmatch(string(text), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			path, _ := filepath.Abs(filepath.Join(filepath.Dir(f), target))
			if !strings.HasPrefix(path, root+string(filepath.Separator)) {
				t.Errorf("%s links to %s, outside the repository", filepath.Base(f), m[1])
				continue
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links to %s, which does not exist", filepath.Base(f), m[1])
			}
		}
	}
	readme, _ := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	for _, outside := range []string{"DESIGN.md", "shared folder", "../shared"} {
		if strings.Contains(string(readme), outside) {
			t.Errorf("README.md mentions %q, outside the repository: point to docs/contract.md", outside)
		}
	}
}

// TestMigrationExamplesMatch: the sluice side of each worked example in
// docs/migration.md is the file of examples/ it names (comments aside),
// which TestExampleConfigs validates.
func TestMigrationExamplesMatch(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "migration.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("becomes \\[`(examples/[a-z-]+\\.yaml)`\\][^\n]*\n\n```yaml\n(?s:(.*?))```").FindAllSubmatch(doc, -1)
	if len(blocks) != 2 {
		t.Fatalf("found %d worked examples in docs/migration.md, want 2 (HAProxy, NGINX)", len(blocks))
	}
	for _, b := range blocks {
		file, err := os.ReadFile(filepath.Join(repoRoot, string(b[1])))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := withoutComments(string(b[2])), withoutComments(string(file)); got != want {
			t.Errorf("docs/migration.md shows for %s:\n%s\nthe file holds:\n%s", b[1], got, want)
		}
	}
}

// withoutComments drops YAML comments, trailing spaces and blank lines.
func withoutComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "#"); i >= 0 && (i == 0 || l[i-1] == ' ') {
			l = l[:i]
		}
		if l = strings.TrimRight(l, " "); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
