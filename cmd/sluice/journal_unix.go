//go:build unix

package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// underJournal reports whether w is the stream journald reads: systemd
// sets JOURNAL_STREAM to that stream's "device:inode", and a process whose
// stderr was redirected elsewhere (a pipe to a file, say) must not treat
// it as the journal.
func underJournal(w io.Writer, env string) bool {
	f, ok := w.(*os.File)
	if !ok || env == "" {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && env == fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino))
}
