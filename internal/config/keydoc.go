package config

import "maps"

// KeyDoc describes one key of the file for the reference tables of
// docs/config.md. Those tables are generated from the config types (which
// keys exist, in which block, in what order), from ApplyDefaults (each
// default) and from KeyDocs (what each key means); a test in cmd/sluice
// fails when a key has no KeyDoc or the file is stale. After adding a key
// to types.go, describe it in keydoc_*.go and run `make docs`.
type KeyDoc struct {
	// Meaning says what the key does, in Markdown. Required.
	Meaning string
	// Type says what the key takes when its Go type says too little
	// ("integer 1–1000", "`h1` | `std`"). "" derives it from the field:
	// bool, integer, number, duration, string, list of strings, mapping,
	// block, list of blocks.
	Type string
	// Note follows the default that ApplyDefaults sets, or "absent" for an
	// optional block: "(no limit)" makes "`0` (no limit)".
	Note string
	// Default replaces that default, for a required key ("— (required)")
	// or one whose default depends on other keys ("the address"). Use it
	// for nothing else: the default shown would no longer come from the
	// code.
	Default string
}

// required is the Default of a key the file must give.
const required = "— (required)"

// KeyDocs returns the description of every key of the file, by dotted path
// (pools.health_check.interval; lists are looked through).
func KeyDocs() map[string]KeyDoc {
	docs := map[string]KeyDoc{}
	for _, part := range []map[string]KeyDoc{topKeyDocs(), listenerKeyDocs(), poolKeyDocs(), fleetKeyDocs()} {
		maps.Copy(docs, part)
	}
	return docs
}
