package main

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sluice runs a command line in process and returns its exit code and
// output.
func sluice(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const validYAML = `listeners:
  - name: public
    address: "127.0.0.1:0"
    pool: web
pools:
  - name: web
    backends:
      - address: "http://127.0.0.1:8081"
`

func TestExitCodesAndMessages(t *testing.T) {
	valid := writeFile(t, "valid.yaml", validYAML)
	tabs := writeFile(t, "tabs.yaml", "listeners:\n\t- name: public\n  \t  address: \":8080\"\n")
	nobody := writeFile(t, "nobody.yaml", validYAML+"admin: {address: \"127.0.0.1:1\"}\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		want     []string // in stdout+stderr
		wantNot  []string
		onlyOnce string // appears exactly once in stderr
	}{
		{name: "backend without a scheme", args: []string{"run", "-backend", "127.0.0.1:8081"}, code: 2,
			want: []string{"-backend", "http://127.0.0.1:8081"}, wantNot: []string{"pools[0]"}},
		{name: "backend with another scheme", args: []string{"run", "-backend", "ftp://127.0.0.1:8081"}, code: 2,
			want: []string{"-backend", "scheme"}, wantNot: []string{"pools[0]"}},
		{name: "backend without a port", args: []string{"run", "-backend", "http://127.0.0.1"}, code: 2,
			want: []string{"-backend", "no port"}, wantNot: []string{"pools[0]"}},
		{name: "unknown balance", args: []string{"run", "-backend", "http://127.0.0.1:8081", "-balance", "fastest"}, code: 2,
			want: []string{"-balance", `"fastest"`, "round_robin", "p2c"}, wantNot: []string{"pools[0]"}},
		{name: "duration without a unit", args: []string{"run", "-backend", "http://127.0.0.1:8081", "-health-interval", "10"}, code: 2,
			want: []string{"-health-interval", "10s"}},
		{name: "negative duration", args: []string{"run", "-backend", "http://127.0.0.1:8081", "-health-interval", "-1s"}, code: 2,
			want: []string{"-health-interval"}},
		{name: "bad listen address", args: []string{"run", "-backend", "http://127.0.0.1:8081", "-listen", "nonsense"}, code: 2,
			want: []string{"-listen", "nonsense"}, wantNot: []string{"listeners[0]"}},
		{name: "bad admin address", args: []string{"run", "-backend", "http://127.0.0.1:8081", "-admin", "127.0.0.1:99999"}, code: 2,
			want: []string{"-admin"}, wantNot: []string{"admin.address"}},
		{name: "bad health path", args: []string{"run", "-backend", "http://127.0.0.1:8081", "-health-path", "health"}, code: 2,
			want: []string{"-health-path"}, wantNot: []string{"health_check"}},
		{name: "quick flag without backend", args: []string{"run", "-listen", ":9"}, code: 2,
			want: []string{"-listen belongs to the quick form"}},
		{name: "config and backend", args: []string{"run", "-config", valid, "-backend", "http://127.0.0.1:8081"}, code: 2,
			want: []string{"not both"}},
		{name: "unknown flag", args: []string{"run", "-no-such-flag"}, code: 2,
			want: []string{"Usage:", `sluice run -h`}, onlyOnce: "-no-such-flag"},
		{name: "unknown flag of validate", args: []string{"validate", "-x"}, code: 2, onlyOnce: "flag provided but not defined: -x"},
		{name: "flag without its value", args: []string{"validate", "-config"}, code: 2, want: []string{"-config"}},
		{name: "extra argument", args: []string{"validate", "extra"}, code: 2, want: []string{`unexpected argument "extra"`}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, want: []string{`unknown command "frobnicate"`, "Commands:"}},
		{name: "flag before the command", args: []string{"-config", "x"}, code: 2, want: []string{"flags follow a command"}},
		{name: "no arguments", args: nil, code: 2, want: []string{"Usage:"}},
		{name: "version", args: []string{"version"}, code: 0, want: []string{"sluice ", "commit ", "go1."}},
		{name: "-version", args: []string{"-version"}, code: 0, want: []string{"sluice ", "commit "}},
		{name: "--version", args: []string{"--version"}, code: 0, want: []string{"sluice ", "commit "}},
		{name: "help", args: []string{"-h"}, code: 0, want: []string{"Commands:"}},
		{name: "help of a command", args: []string{"help", "diff"}, code: 0, want: []string{"sluice diff", "-config FILE"}},
		{name: "help of an unknown command", args: []string{"help", "nope"}, code: 2, want: []string{`unknown command "nope"`}},
		{name: "validate a valid file", args: []string{"validate", "-config", valid}, code: 0, want: []string{": ok"}},
		{name: "validate a missing file", args: []string{"validate", "-config", filepath.Join(t.TempDir(), "none.yaml")}, code: 1,
			want: []string{"none.yaml"}},
		{name: "tabs", args: []string{"validate", "-config", tabs}, code: 1,
			want: []string{tabs + ":2:1: tabs are not allowed, indent with spaces", tabs + ":3:3: tabs are not allowed"}},
		{name: "run with tabs", args: []string{"run", "-config", tabs}, code: 1,
			want: []string{"tabs are not allowed, indent with spaces"}},
		{name: "diff without OLD and nothing running", args: []string{"diff", "-config", nobody}, code: 1,
			want: []string{"no sluice answers at 127.0.0.1:1", "pass it as OLD"}},
		{name: "diff OLD before the flag", args: []string{"diff", valid, "-config", valid}, code: 0, want: []string{"no changes"}},
		{name: "diff with an invalid file", args: []string{"diff", "-config", tabs, valid}, code: 1, want: []string{"tabs are not allowed"}},
		{name: "completion without a shell", args: []string{"completion"}, code: 2, want: []string{"bash, zsh or fish"}},
		{name: "completion of another shell", args: []string{"completion", "tcsh"}, code: 2, want: []string{`"tcsh"`}},
		{name: "demo with no backends", args: []string{"demo", "-backends", "0"}, code: 2, want: []string{"-backends"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := sluice(t, tc.args...)
			all := stdout + stderr
			if code != tc.code {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tc.code, all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q; got:\n%s", w, all)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(all, w) {
					t.Errorf("output has %q, want it not to; got:\n%s", w, all)
				}
			}
			if tc.onlyOnce != "" {
				if n := strings.Count(stderr, tc.onlyOnce); n != 1 {
					t.Errorf("stderr names %q %d times, want once; got:\n%s", tc.onlyOnce, n, stderr)
				}
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands {
		for _, h := range []string{"-h", "--help"} {
			code, stdout, stderr := sluice(t, c.name, h)
			if code != 0 || !strings.Contains(stdout, "sluice "+c.name) || stderr != "" {
				t.Errorf("sluice %s %s: exit %d, stdout %q, stderr %q; want 0 and the help on stdout", c.name, h, code, stdout, stderr)
			}
		}
	}
}

// TestUsageListsEveryFlag: `sluice -h` shows every command and, in the
// synopses, every flag of every command.
func TestUsageListsEveryFlag(t *testing.T) {
	_, usage, _ := sluice(t, "-h")
	for _, c := range commands {
		if !regexp.MustCompile(`(?m)^  ` + c.name + ` `).MatchString(usage) {
			t.Errorf("usage does not list the command %q:\n%s", c.name, usage)
		}
		fs, _ := c.flagSet()
		var synopsis string
		for _, s := range c.synopsis {
			synopsis += " " + s
		}
		fs.VisitAll(func(f *flag.Flag) {
			if !regexp.MustCompile(`[ \[]-` + regexp.QuoteMeta(f.Name) + `[ \]]`).MatchString(synopsis + " ") {
				t.Errorf("the synopsis of %q does not show -%s: %q", c.name, f.Name, synopsis)
			}
			arg, _ := flag.UnquoteUsage(f)
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool && (arg == "" || strings.ToUpper(arg) != arg) {
				t.Errorf("-%s of %q: usage names its argument %q; want a backquoted `NAME` in capitals", f.Name, c.name, arg)
			}
		})
	}
	for _, want := range []string{"sluice version", "-watch", "-pidfile"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestRunWithoutConfigSaysHowToProceed(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, stderr := sluice(t, "run")
	if code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	for _, want := range []string{"sluice.yaml", "-config FILE", "-backend http://", "sluice demo"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestPortInUseNamesTheFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	for _, tc := range []struct{ flag, admin, listen string }{
		{"-admin", taken, "127.0.0.1:0"},
		{"-listen", "127.0.0.1:0", taken},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			code, _, stderr := sluice(t, "run", "-backend", "http://127.0.0.1:1", "-health-interval", "0",
				"-admin", tc.admin, "-listen", tc.listen)
			if code != 1 || !strings.Contains(stderr, tc.flag+" "+taken) || !strings.Contains(stderr, "in use") {
				t.Fatalf("exit %d, stderr:\n%s\nwant 1 and a message naming %s %s", code, stderr, tc.flag, taken)
			}
			if strings.Contains(stderr, "admin.address") {
				t.Errorf("stderr speaks of admin.address, a key of a file the quick form has not:\n%s", stderr)
			}
		})
	}
}

func TestDemoBackendList(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{[]string{"http://127.0.0.1:8081"}, "http://127.0.0.1:8081"},
		{[]string{"http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"}, "http://127.0.0.1:8081 … http://127.0.0.1:8083"},
		{[]string{"http://127.0.0.1:33635", "http://127.0.0.1:40137", "http://127.0.0.1:44463"},
			"http://127.0.0.1:33635 http://127.0.0.1:40137 http://127.0.0.1:44463"},
	} {
		if got := backendList(tt.in); got != tt.want {
			t.Errorf("backendList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDemoBannerAligned(t *testing.T) {
	var b bytes.Buffer
	printTour(&b, ":8080", "127.0.0.1:9090", []string{"http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"})
	text := b.String()
	var hashes, values []int
	for _, l := range strings.Split(text, "\n") {
		if i := strings.Index(l, "# "); strings.HasPrefix(l, "  curl") && i > 0 {
			hashes = append(hashes, runeLen(l[:i]))
		}
		for _, label := range []string{"balancer", "backends", "dashboard"} {
			if strings.HasPrefix(l, "  "+label) {
				values = append(values, runeLen(l)-runeLen(strings.TrimLeft(l[len(label)+2:], " ")))
			}
		}
	}
	for name, cols := range map[string][]int{"comments": hashes, "addresses": values} {
		if len(cols) < 3 {
			t.Fatalf("found %d lines of %s in the banner:\n%s", len(cols), name, text)
		}
		for _, c := range cols {
			if c != cols[0] {
				t.Errorf("%s start at columns %v, want one column:\n%s", name, cols, text)
				break
			}
		}
	}
	if !strings.Contains(text, "http://127.0.0.1:8080/") {
		t.Errorf("banner does not turn :8080 into a URL:\n%s", text)
	}
}
