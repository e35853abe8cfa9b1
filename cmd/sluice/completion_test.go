package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// needTool returns the path of a program the test needs. Locally a
// missing one skips the test, naming the Debian package to install; in CI
// (CI=true), where .ci/run installs it, it fails.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	return testenv.Program(t, name, testenv.Debian(pkg))
}

func generated(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := sluice(t, args...)
	if code != 0 || stdout == "" {
		t.Fatalf("sluice %s: exit %d, stderr %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// TestCompletionAndManAgreeWithFlags: every command and every flag of
// every command (as -h knows them) appears in each completion script and
// in the manual page, and so do the values of flags with a fixed set.
func TestCompletionAndManAgreeWithFlags(t *testing.T) {
	outputs := map[string]string{
		"bash": generated(t, "completion", "bash"),
		"zsh":  generated(t, "completion", "zsh"),
		"fish": generated(t, "completion", "fish"),
		"man":  generated(t, "man"),
	}
	for _, c := range docs() {
		for name, text := range outputs {
			if !strings.Contains(text, c.name) {
				t.Errorf("%s does not name the command %q", name, c.name)
			}
			for _, f := range c.flags {
				var forms []string
				switch name {
				case "fish":
					forms = []string{"-o " + f.name + " "}
				case "man":
					forms = []string{`\-` + strings.ReplaceAll(f.name, "-", `\-`)}
				default:
					forms = []string{"-" + f.name + "[", "-" + f.name + "|", "-" + f.name + " ", "-" + f.name + ")"}
				}
				if !containsAny(text, forms) {
					t.Errorf("%s lacks -%s of %q", name, f.name, c.name)
				}
				for _, v := range c.choices[f.name] {
					if name != "man" && !strings.Contains(text, v) {
						t.Errorf("%s does not offer %q for -%s of %q", name, v, f.name, c.name)
					}
				}
			}
			for _, v := range c.argChoices {
				if name != "man" && !strings.Contains(text, v) {
					t.Errorf("%s does not offer the argument %q of %q", name, v, c.name)
				}
			}
		}
	}
	// The manual page and -h print the same usage text for each flag.
	for _, c := range docs() {
		for _, f := range c.flags {
			if !strings.Contains(outputs["man"], roff(f.usage)) {
				t.Errorf("the manual page lacks the usage of -%s of %q: %q", f.name, c.name, f.usage)
			}
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestCompletionScriptsParse checks each script's syntax with its shell.
func TestCompletionScriptsParse(t *testing.T) {
	for _, tc := range []struct {
		shell string
		args  []string
	}{
		{"bash", []string{"-n"}},
		{"zsh", []string{"-n"}},
		{"fish", []string{"--no-execute"}},
	} {
		t.Run(tc.shell, func(t *testing.T) {
			sh := needTool(t, tc.shell, tc.shell)
			file := filepath.Join(t.TempDir(), "sluice."+tc.shell)
			os.WriteFile(file, []byte(generated(t, "completion", tc.shell)), 0o644)
			out, err := exec.Command(sh, append(tc.args, file)...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", tc.shell, tc.args, err, out)
			}
		})
	}
}

// TestBashCompletionCompletes runs the bash function as bash would.
func TestBashCompletionCompletes(t *testing.T) {
	bash := needTool(t, "bash", "bash")
	script := generated(t, "completion", "bash")
	for _, tc := range []struct {
		words string
		want  []string
	}{
		{"sluice ''", []string{"demo", "run", "validate", "diff", "completion", "version"}},
		{"sluice run -", []string{"-config", "-watch", "-backend", "-balance", "-health-interval"}},
		{"sluice run -balance ''", []string{"round_robin", "least_requests", "p2c"}},
		{"sluice completion ''", []string{"bash", "zsh", "fish"}},
	} {
		prog := script + "\nCOMP_WORDS=(" + tc.words + "); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _sluice; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command(bash, "--norc", "-c", prog)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", tc.words, err, out.String())
		}
		got := strings.Fields(out.String())
		for _, w := range tc.want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("completing %s: got %v, want %q among them", tc.words, got, w)
			}
		}
	}
}

func TestManPageRenders(t *testing.T) {
	page := generated(t, "man")
	for _, want := range []string{".TH SLUICE 1", ".SH SYNOPSIS", ".SH EXIT STATUS", ".SS sluice run", "NOTIFY_SOCKET"} {
		if !strings.Contains(page, want) {
			t.Errorf("manual page lacks %q", want)
		}
	}
	for i, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, "'") || (strings.HasPrefix(l, ".") && !strings.HasPrefix(l, ".T") &&
			!strings.HasPrefix(l, ".S") && !strings.HasPrefix(l, ".B") && !strings.HasPrefix(l, ".P") &&
			!strings.HasPrefix(l, ".n") && !strings.HasPrefix(l, ".f") && !strings.HasPrefix(l, ".I")) {
			t.Errorf("line %d starts like a roff request it is not: %q", i+1, l)
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff is not on PATH: the page's syntax was checked by eye only")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}
