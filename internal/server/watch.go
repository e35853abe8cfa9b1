package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Watch reloads the config file whenever its content changes, checking
// every interval until ctx is done. It compares content hashes rather than
// relying on file-system events: that survives editors that replace the
// file, and the symlink swaps of Kubernetes ConfigMaps, with no dependency.
// It starts from the content the running config was loaded from, so a
// change made before Watch starts is not missed. A file that cannot be read
// is left alone (the next change will be seen).
func (s *Server) Watch(ctx context.Context, interval time.Duration) {
	s.mu.Lock()
	path, last := s.cfg.Path, s.cfgHash
	s.mu.Unlock()
	if path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := fileHash(path)
		if h == nil || bytes.Equal(h, last) {
			continue
		}
		last = h
		s.logger.Info("config file changed; reloading", "file", path)
		s.Reload()
	}
}

func fileHash(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	h := sha256.Sum256(b)
	return h[:]
}
