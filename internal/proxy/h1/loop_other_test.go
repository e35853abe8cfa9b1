//go:build !linux

package h1

import "github.com/sluice-lb/sluice/internal/pool"

func (*Loops) idle(*pool.Backend) int { return 0 }

func loopReadable(*h1conn) bool { return false }
