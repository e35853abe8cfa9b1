package main

import (
	"runtime/debug"
	"testing"
)

func TestBuildInfo(t *testing.T) {
	info := func(version string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/sluice-lb/sluice", Version: version}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	for _, tc := range []struct {
		name                string
		ldVersion, ldCommit string
		read                func() (*debug.BuildInfo, bool)
		want                build
		short               string
	}{
		{"stamped by make build", "v1.2.0-3-gabcdef1", "abcdef1234567890abcdef1234567890abcdef12", info("(devel)", "vcs.revision", "ffff"),
			build{"v1.2.0-3-gabcdef1", "abcdef1234567890abcdef1234567890abcdef12", "go1.26.8"}, "v1.2.0-3-gabcdef1 (abcdef123456)"},
		{"VCS stamping on", "", "", info("(devel)", "vcs.revision", "0123456789abcdef0123456789abcdef01234567", "vcs.modified", "true"),
			build{"dev", "0123456789abcdef0123456789abcdef01234567-dirty", "go1.26.8"}, "dev (0123456789ab-dirty)"},
		{"tagged, VCS stamping off", "", "", info("v1.3.0"),
			build{"v1.3.0", "unknown", "go1.26.8"}, "v1.3.0"},
		{"pseudo-version, VCS stamping off (-buildvcs=false)", "", "", info("v0.0.0-20250102030405-0123456789ab"),
			build{"v0.0.0-20250102030405-0123456789ab", "0123456789ab", "go1.26.8"}, "v0.0.0-20250102030405-0123456789ab"},
		{"pseudo-version of modified sources", "", "", info("v0.0.0-20250102030405-0123456789ab+dirty"),
			build{"v0.0.0-20250102030405-0123456789ab+dirty", "0123456789ab-dirty", "go1.26.8"}, "v0.0.0-20250102030405-0123456789ab+dirty"},
		{"nothing known", "", "", func() (*debug.BuildInfo, bool) { return nil, false },
			build{"dev", "unknown", "unknown"}, "dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := buildInfoFrom(tc.ldVersion, tc.ldCommit, tc.read)
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if s := got.short(); s != tc.short {
				t.Errorf("short() = %q, want %q", s, tc.short)
			}
		})
	}
}
