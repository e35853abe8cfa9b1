package testenv

import "testing"

// TestPortsNotGivenTwice: ranges from successive calls never overlap, even
// when nothing binds them in between (the free-a-moment-ago check alone
// would hand the same ports out again: 1,000 ranges of 8 in the ~22,000
// ports below the ephemeral range overlap almost surely without the record).
func TestPortsNotGivenTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 1000 {
		first := Ports(t, 8)
		for p := first; p < first+8; p++ {
			if seen[p] {
				t.Fatalf("port %d given twice", p)
			}
			seen[p] = true
		}
	}
}
