package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

func TestPutWritesBeforeReturningAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open of a missing file: %v", err)
	}
	if got := s.Entries(); len(got) != 0 {
		t.Fatalf("a missing file holds %v, want nothing", got)
	}
	puts := []Entry{
		{Pool: "web", Address: "http://b:1", State: "draining", Updated: t0},
		{Pool: "api", Address: "http://z:1", Added: true, Weight: 2, Updated: t0},
		{Pool: "web", Address: "http://a:1", Removed: true, Updated: t0},
		{Pool: "web", Address: "http://b:1", State: "disabled", Weight: 5, Updated: t0}, // replaces
	}
	for _, e := range puts {
		if err := s.Put(e); err != nil {
			t.Fatalf("Put(%+v): %v", e, err)
		}
	}
	want := []Entry{puts[1], puts[2], puts[3]} // sorted by pool, address
	if diff := cmp.Diff(want, s.Entries()); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode %v, want 0600", mode)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatalf("Open of the written file: %v", err)
	}
	if diff := cmp.Diff(want, again.Entries()); diff != "" {
		t.Errorf("entries read back (-want +got):\n%s", diff)
	}

	// An entry that overrides nothing is removed.
	if err := s.Put(Entry{Pool: "web", Address: "http://a:1"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("web", "http://a:1"); ok {
		t.Error("an empty entry is still held")
	}
	if e, ok := s.Get("api", "http://z:1"); !ok || e.Weight != 2 {
		t.Errorf("Get(api, z) = %+v, %v", e, ok)
	}
	left, _ := os.ReadDir(filepath.Dir(path))
	if len(left) != 1 {
		t.Errorf("directory holds %d files, want only the state file (no temporary files left)", len(left))
	}
}

func TestPutFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Entry{Pool: "web", Address: "http://a:1", State: "draining", Updated: t0}); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should be: the rename fails, even as root.
	os.Remove(path)
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	err = s.Put(Entry{Pool: "web", Address: "http://b:1", State: "disabled", Updated: t0})
	if !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("Put over a directory = %v, want ErrNotPersisted", err)
	}
	if got := len(s.Entries()); got != 1 {
		t.Errorf("after a failed Put the store holds %d entries, want 1", got)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 1 {
		t.Errorf("directory holds %d entries after a failed write, want 1 (no temporary file left)", len(left))
	}
}

func TestNilStore(t *testing.T) {
	var s *Store
	if err := s.Put(Entry{Pool: "p", Address: "a", State: "draining"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("p", "a"); ok || s.Entries() != nil || s.Path() != "" || s.Reload() != nil {
		t.Fatal("a nil store holds something")
	}
}

func TestInvalidFiles(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"syntax", "{\n  \"version\": 1,\n  \"backends\": [}\n", "line 3, column 16"},
		{"unknown field", `{"version": 1, "backends": [{"pool": "p", "address": "a", "stat": "draining"}]}`, `unknown field "stat"`},
		{"version", `{"version": 2, "backends": []}`, "version 2 is not supported"},
		{"bad state", `{"version": 1, "backends": [{"pool": "p", "address": "a", "state": "drained"}]}`,
			`backends[0] (pool "p", address "a"): "state" "drained" is not valid`},
		{"both", `{"version": 1, "backends": [{"pool": "p", "address": "a", "added": true, "removed": true}]}`, `"added" and "removed" are both set`},
		{"weight", `{"version": 1, "backends": [{"pool": "p", "address": "a", "weight": 1001}]}`, `"weight" 1001 out of range`},
		{"no pool", `{"version": 1, "backends": [{"address": "a", "weight": 1}]}`, `"pool" and "address" are required`},
		{"twice", `{"version": 1, "backends": [{"pool": "p", "address": "a", "weight": 1}, {"pool": "p", "address": "a", "weight": 2}]}`,
			`backend "a" of pool "p" has two entries`},
		{"trailing", `{"version": 1, "backends": []} {}`, "data after the JSON document"},
		{"type", `{"version": "1"}`, "line 1, column"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v, want an error naming the file and containing %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "move it away") {
				t.Errorf("error %q does not say what to do", err)
			}
		})
	}
}
