package main

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"runtime/debug"
	"strings"
)

// Set by the linker: make build passes
// -ldflags "-X main.version=$(git describe) -X main.commit=$(git rev-parse HEAD)".
// Empty means "ask the build info".
var (
	version = ""
	commit  = ""
)

// build is what sluice reports about itself: `sluice version`, the admin
// API and dashboard, and the sluice_build_info metric's version, revision
// and goversion labels.
type build struct {
	Version   string // module version or git describe; "dev" when unknown
	Revision  string // VCS revision, with "-dirty" for modified sources; "unknown" when unknown
	GoVersion string
}

// pseudoRevision finds the revision in a pseudo-version, as
// `go install module@commit` records it (v0.0.0-20250101120000-abcdef123456).
var pseudoRevision = regexp.MustCompile(`^v\d+\.\d+\.\d+-(?:.*\.)?(?:0\.)?\d{14}-([0-9a-f]{12})(?:\+dirty)?$`)

// buildInfo reads the linker-stamped strings first, then the build info
// the Go toolchain embeds: the main module's version (set from a VCS tag,
// or a pseudo-version, also when -buildvcs=false leaves out vcs.*), and
// vcs.revision / vcs.modified when VCS stamping was on.
func buildInfo() build {
	return buildInfoFrom(version, commit, debug.ReadBuildInfo)
}

func buildInfoFrom(ldVersion, ldCommit string, read func() (*debug.BuildInfo, bool)) build {
	b := build{Version: ldVersion, Revision: ldCommit, GoVersion: "unknown"}
	bi, ok := read()
	if ok {
		b.GoVersion = bi.GoVersion
		var rev string
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		mv := bi.Main.Version
		if b.Version == "" && mv != "" && mv != "(devel)" {
			b.Version = mv
		}
		if b.Revision == "" && rev != "" {
			b.Revision = rev
			if modified {
				b.Revision += "-dirty"
			}
		}
		if m := pseudoRevision.FindStringSubmatch(mv); b.Revision == "" && m != nil {
			b.Revision = m[1]
			if strings.HasSuffix(mv, "+dirty") {
				b.Revision += "-dirty"
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

// String is the line `sluice version` prints.
func (b build) String() string {
	return fmt.Sprintf("sluice %s (commit %s, %s)", b.Version, b.Revision, b.GoVersion)
}

// short is the version as the dashboard shows it beside "sluice".
func (b build) short() string {
	if b.Revision == "unknown" {
		return b.Version
	}
	rev, dirty := strings.CutSuffix(b.Revision, "-dirty")
	rev = rev[:min(len(rev), 12)]
	if strings.Contains(b.Version, rev) {
		return b.Version // a pseudo-version names it already
	}
	if dirty {
		rev += "-dirty"
	}
	return b.Version + " (" + rev + ")"
}

var versionCommand = &command{
	name:     "version",
	summary:  "print version, commit and Go version (also sluice -version, --version)",
	synopsis: []string{"version"},
	about: `Prints the version, the VCS revision and the Go version sluice was built with. ` +
		`"make build" stamps the version and revision with -ldflags; without that they come from ` +
		`the build information the Go toolchain embeds (a module version, a pseudo-version's ` +
		`revision, or vcs.revision).`,
	setup: func(fs *flag.FlagSet) action {
		return func(ctx context.Context, out streams, args []string) error {
			fmt.Fprintln(out.stdout, buildInfo())
			return nil
		}
	},
}
