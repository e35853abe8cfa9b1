//go:build race

package loop

// raceEnabled: the race detector's instrumentation allocates.
const raceEnabled = true
