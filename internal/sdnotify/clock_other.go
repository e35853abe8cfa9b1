//go:build !linux

package sdnotify

import "errors"

// monotonicUsec is only needed under systemd, which is Linux.
func monotonicUsec() (uint64, error) {
	return 0, errors.New("CLOCK_MONOTONIC is read on Linux only")
}
