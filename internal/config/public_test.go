package config

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestPublicJSONRoundTrips: every example and test config, written by
// PublicJSON and read back by Parse, is the config it was (the secrets
// aside; an empty list or map may come back nil), so `sluice diff`
// against the running instance compares like with like.
func TestPublicJSONRoundTrips(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("testdata/*.yaml")
	files = append(files, more...)
	if len(files) < 3 {
		t.Fatalf("found %d config files to test with: %v", len(files), files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Skipf("does not load here: %v", err)
			}
			data := c.PublicJSON()
			if !json.Valid(data) {
				t.Fatalf("PublicJSON is not JSON:\n%s", data)
			}
			back, err := Parse(f, data)
			if err != nil {
				t.Fatalf("Parse(PublicJSON): %v\n%s", err, data)
			}
			for i := range c.Pools {
				if c.Pools[i].Sticky != nil {
					c.Pools[i].Sticky.Secret = ""
				}
			}
			if diff := cmp.Diff(c, back, cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateEmpty(),
				cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPublicJSONLeavesSecretsOut: sticky.secret is blanked, file paths
// stay paths, absent blocks are left out, durations read as in the file.
func TestPublicJSONLeavesSecretsOut(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("hunter2-token\n"), 0o600)
	yaml := "listeners:\n  - {name: public, address: \":8080\", pool: web}\n" +
		"pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n" +
		"    sticky: {cookie: S, secret: hunter2-sticky}\n" +
		"admin: {address: \"127.0.0.1:9090\", token_file: " + token + "}\n"
	c, err := Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	out := string(c.PublicJSON())
	for _, secret := range []string{"hunter2"} {
		if strings.Contains(out, secret) {
			t.Errorf("PublicJSON holds %q:\n%s", secret, out)
		}
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	admin := doc["admin"].(map[string]any)
	if admin["token_file"] != token {
		t.Errorf("admin.token_file = %v, want the path %q", admin["token_file"], token)
	}
	p := doc["pools"].([]any)[0].(map[string]any)
	if st := p["sticky"].(map[string]any); st["secret"] != "" || st["cookie"] != "S" {
		t.Errorf("sticky = %v, want cookie S and secret blanked", st)
	}
	if _, ok := p["health_check"]; ok {
		t.Errorf("an absent health_check is shown: %v", p["health_check"])
	}
	l := doc["listeners"].([]any)[0].(map[string]any)
	if _, ok := l["tls"]; ok {
		t.Errorf("an absent tls block is shown: %v", l["tls"])
	}
	if got := l["timeouts"].(map[string]any)["idle"]; got != "2m0s" {
		t.Errorf("listeners[0].timeouts.idle = %v, want \"2m0s\"", got)
	}
	if doc["shutdown_timeout"] != "30s" {
		t.Errorf("shutdown_timeout = %v, want \"30s\"", doc["shutdown_timeout"])
	}
}
