// Package testenv gives tests the real outside world they run against: the
// programs they need (found on PATH, or the test skipped locally and failed
// under CI=true), an etcd server started in a temp dir on free loopback
// ports, a DNS server on loopback whose records a test changes, and a TCP
// proxy a test can cut. Only _test files import it.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Program returns the path of the program name on PATH. When it is
// missing the test is skipped with a message naming it and how to install
// it, or, under CI=true (where .ci/run installs it), fails.
func Program(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not on PATH under CI=true: .ci/run must install it (%s)", name, install)
	}
	t.Skipf("%s is not on PATH: %s to run this test", name, install)
	return ""
}

// Debian returns Program's install hint for a Debian package.
func Debian(pkg string) string {
	return "install Debian's " + pkg + " package (apt-get install " + pkg + ")"
}
