//go:build race

package h1

// raceEnabled: under the race detector sync.Pool drops a share of what is
// put back, so pooled buffers are sometimes allocated anew.
const raceEnabled = true
