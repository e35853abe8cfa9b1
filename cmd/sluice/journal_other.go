//go:build !unix

package main

import "io"

// underJournal: systemd's journal exists on Linux only.
func underJournal(io.Writer, string) bool { return false }
