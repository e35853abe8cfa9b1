package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is where the repository's files are, seen from this package.
const repoRoot = "../.."

// TestSystemdUnit checks packaging/sluice.service with systemd-analyze
// verify. The unit's ExecStart names /usr/local/bin/sluice, which verify
// wants to exist: the copy checked names this test binary instead.
// systemd-analyze exits 0 on many problems it only warns about, so any
// line it prints about the unit fails the test too.
func TestSystemdUnit(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile(filepath.Join(repoRoot, "packaging", "sluice.service"))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "NotifyAccess=all", "ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes", "ProtectSystem=strict",
		"NoNewPrivileges=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE\n", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "StateDirectory=sluice"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "sluice.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/sluice", exe)), 0o644)
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "sluice.service") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
}

// TestExampleConfigs validates every config shipped with sluice, as
// `sluice validate` does: examples/*.yaml and packaging/sluice.yaml.
func TestExampleConfigs(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot, "examples", "*.yaml"))
	if len(files) < 3 {
		t.Fatalf("found %d examples in examples/, want at least 3", len(files))
	}
	files = append(files, filepath.Join(repoRoot, "packaging", "sluice.yaml"))
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if code, _, stderr := sluice(t, "validate", "-v", "-config", f); code != 0 {
				t.Errorf("sluice validate -config %s: exit %d\n%s", f, code, stderr)
			}
		})
	}
}
