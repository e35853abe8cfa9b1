// Package state keeps the changes made through the admin API (backends
// added, removed, drained, disabled, re-weighted) in a file, admin.state_file,
// so that they survive reloads and restarts: the server applies the file on
// top of the config at start-up and at every reload.
//
// The file is JSON, written whole and atomically (a temporary file in the
// same directory, fsync, rename, fsync of the directory; mode 0600) before
// the API call that changed it returns:
//
//	{
//	  "version": 1,
//	  "backends": [
//	    {"pool": "web", "address": "http://10.0.0.13:8080", "added": true, "weight": 2, "updated": "2026-01-02T15:04:05Z"},
//	    {"pool": "web", "address": "http://10.0.0.11:8080", "state": "draining", "updated": "..."},
//	    {"pool": "web", "address": "http://10.0.0.12:8080", "removed": true, "updated": "..."}
//	  ]
//	}
package state

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// Version is the format version this sluice writes and reads.
const Version = 1

// Entry is the override of one backend of one pool. An entry that
// overrides nothing (Empty) is not kept.
type Entry struct {
	Pool    string `json:"pool"`
	Address string `json:"address"`
	// Added: the backend was added through the API; it exists whether or
	// not the config has it.
	Added bool `json:"added,omitempty"`
	// Removed: the backend was removed through the API; it stays out even
	// though the config has it.
	Removed bool `json:"removed,omitempty"`
	// State is "draining" or "disabled"; "" means enabled, as the config
	// leaves every backend.
	State string `json:"state,omitempty"`
	// Weight replaces the config's weight; 0 keeps it.
	Weight int `json:"weight,omitempty"`
	// Updated is when the entry last changed.
	Updated time.Time `json:"updated"`
}

// Empty reports whether e overrides nothing.
func (e Entry) Empty() bool { return !e.Added && !e.Removed && e.State == "" && e.Weight == 0 }

// Stale is an entry that names a pool or backend that no longer exists:
// it is kept in the file (the config may bring the pool or backend back)
// and reported, never dropped silently.
type Stale struct {
	Entry
	// Problem says what is missing and what to do.
	Problem string `json:"problem"`
}

// Report is the state file as the admin API shows it.
type Report struct {
	// File is admin.state_file ("" when there is none).
	File    string  `json:"file"`
	Entries []Entry `json:"entries"`
	Stale   []Stale `json:"stale"`
}

type document struct {
	Version  int     `json:"version"`
	Backends []Entry `json:"backends"`
}

// Store is the state file and what it holds. A nil *Store is "no
// state_file": it holds nothing and Put persists nothing. Its methods are
// safe for concurrent use.
type Store struct {
	path string

	mu      sync.Mutex
	entries []Entry // sorted by pool, then address; guarded by mu
}

// ErrNotPersisted wraps the error of a change that could not be written to
// the state file; the change was not applied.
var ErrNotPersisted = errors.New("the change was not persisted to admin.state_file and was not applied")

// Open reads the state file at path. A file that does not exist yet is
// empty (it is created by the first change). A file that cannot be read or
// is not valid is an error that names the file and the problem.
func Open(path string) (*Store, error) {
	s := &Store{path: path}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path returns the file's path ("" for a nil Store).
func (s *Store) Path() string {
	if s == nil {
		return ""
	}
	return s.path
}

// Reload reads the file again (an operator may have edited it). On error
// the store keeps what it held.
func (s *Store) Reload() error {
	if s == nil {
		return nil
	}
	entries, err := read(s.path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.entries = entries
	s.mu.Unlock()
	return nil
}

// Entries returns a copy of the entries, sorted by pool, then address.
func (s *Store) Entries() []Entry {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.entries)
}

// Get returns the entry of a backend, if there is one.
func (s *Store) Get(pool, address string) (Entry, bool) {
	if s == nil {
		return Entry{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.find(pool, address); ok {
		return s.entries[i], true
	}
	return Entry{}, false
}

// Put replaces the entry of e.Pool and e.Address with e (removes it when e
// is Empty) and writes the file before it returns. When the file cannot be
// written the store is unchanged and the error wraps ErrNotPersisted. A nil
// Store does nothing.
func (s *Store) Put(e Entry) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := slices.Clone(s.entries)
	i, found := s.find(e.Pool, e.Address)
	switch {
	case e.Empty() && found:
		next = slices.Delete(next, i, i+1)
	case e.Empty():
		return nil
	case found:
		next[i] = e
	default:
		next = slices.Insert(next, i, e)
	}
	data, err := encode(next)
	if err == nil {
		err = writeAtomic(s.path, data)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotPersisted, err)
	}
	s.entries = next
	return nil
}

// find returns where the entry of pool and address is, or would be
// inserted. Called with s.mu held.
func (s *Store) find(pool, address string) (int, bool) {
	return slices.BinarySearchFunc(s.entries, Entry{Pool: pool, Address: address}, compare)
}

func compare(a, b Entry) int {
	return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Address, b.Address))
}

func encode(entries []Entry) ([]byte, error) {
	if entries == nil {
		entries = []Entry{}
	}
	b, err := json.MarshalIndent(document{Version: Version, Backends: entries}, "", "  ")
	return append(b, '\n'), err
}

// read loads and checks the file at path; a missing file is empty.
func read(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w (check admin.state_file and the file's permissions)", err)
	}
	entries, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w; fix it, or move it away to start from the config alone", path, err)
	}
	return entries, nil
}

// parse decodes and checks a state document.
func parse(data []byte) ([]Entry, error) {
	var doc document
	if err := strictUnmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Version != Version {
		return nil, fmt.Errorf("version %d is not supported: this sluice reads version %d", doc.Version, Version)
	}
	entries := slices.Clone(doc.Backends)
	for i, e := range entries {
		if err := check(e); err != nil {
			return nil, fmt.Errorf("backends[%d] (pool %q, address %q): %w", i, e.Pool, e.Address, err)
		}
	}
	slices.SortStableFunc(entries, compare)
	for i := 1; i < len(entries); i++ {
		if compare(entries[i-1], entries[i]) == 0 {
			return nil, fmt.Errorf("backend %q of pool %q has two entries: keep one", entries[i].Address, entries[i].Pool)
		}
	}
	return slices.DeleteFunc(entries, Entry.Empty), nil
}

func check(e Entry) error {
	switch {
	case e.Pool == "" || e.Address == "":
		return errors.New(`"pool" and "address" are required`)
	case e.Added && e.Removed:
		return errors.New(`"added" and "removed" are both set: keep one`)
	case e.State != "" && e.State != "draining" && e.State != "disabled":
		return fmt.Errorf(`"state" %q is not valid: use "draining", "disabled" or leave it out (enabled)`, e.State)
	case e.Weight < 0 || e.Weight > 1000:
		return fmt.Errorf(`"weight" %d out of range: use 1 to 1000, or leave it out (the config's)`, e.Weight)
	}
	return nil
}
