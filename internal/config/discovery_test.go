package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDiscoveryConfig(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A pool with discovery and no static backends, its discovery on line 4.
	pool := func(discovery string) string {
		return listener1 + "pools:\n  - name: web\n    discovery: " + discovery + "\n"
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"dns A", pool("{dns: {name: web.internal, port: 8080}}"), nil},
		{"dns SRV", pool(`{dns: {name: _http._tcp.web.internal, type: SRV, resolver: "127.0.0.1:5353"}}`), nil},
		{"etcd", pool(`{etcd: {endpoints: ["127.0.0.1:2379", "http://[::1]:2379"], prefix: /sluice/web/, username: sluice, password_file: ` + pw + `}}`), nil},
		{"both", pool(`{dns: {name: web.internal, type: AAAA, port: 80, scheme: https}, etcd: {endpoints: ["127.0.0.1:2379"], prefix: /w/}}`), nil},
		{"beside static backends", listener1 + "pools:\n  - name: web\n    backends: [{address: \"http://127.0.0.1:8081\"}]\n    discovery: {dns: {name: web.internal, port: 8080}}\n", nil},

		{"no source", pool("{}"), []string{
			"t.yaml:4:5: discovery has no source: add dns or etcd under it, or remove it"}},
		{"no backends and no discovery", listener1 + "pools:\n  - name: web\n", []string{
			`t.yaml:3:5: pool "web" has no backends: add at least one under backends`}},
		{"dns without name", pool("{dns: {port: 8080}}"), []string{
			`t.yaml:4:17: discovery.dns needs a name to resolve, e.g. "web.internal" or "_http._tcp.web.internal" (SRV)`}},
		{"dns name is an address", pool(`{dns: {name: "10.0.0.1", port: 8080}}`), []string{
			`t.yaml:4:29: discovery.dns.name "10.0.0.1" is not a DNS name: write e.g. "web.internal" (an address belongs under backends)`}},
		{"dns bad type", pool("{dns: {name: web.internal, type: CNAME, port: 8080}}"), []string{
			`t.yaml:4:49: discovery.dns.type "CNAME" is not valid: use A, AAAA or SRV`}},
		{"dns A without port", pool("{dns: {name: web.internal}}"), []string{
			"t.yaml:4:17: discovery.dns.port 0 is out of range: type A answers addresses only, so give the backends' port, 1 to 65535"}},
		{"dns SRV with port", pool("{dns: {name: web.internal, type: SRV, port: 80}}"), []string{
			"t.yaml:4:60: discovery.dns.port has no effect with type SRV, whose records carry the port: remove it"}},
		{"dns bad scheme", pool("{dns: {name: web.internal, port: 80, scheme: ftp}}"), []string{
			`t.yaml:4:61: discovery.dns.scheme "ftp" is not valid: use http, https or tcp`}},
		{"dns tcp scheme on an http listener", pool("{dns: {name: web.internal, port: 80, scheme: tcp}}"), []string{
			`t.yaml:4:61: discovery.dns.scheme is tcp but http listener ":8080" sends to pool "web": use http or https`}},
		{"dns zero refresh", pool("{dns: {name: web.internal, port: 80, refresh: 0s}}"), []string{
			"t.yaml:4:62: refresh must be more than 0, got 0s"}},
		{"dns resolver by name", pool(`{dns: {name: web.internal, port: 80, resolver: "ns.internal:53"}}`), []string{
			`t.yaml:4:63: discovery.dns.resolver "ns.internal:53" must name the server by IP address (a name would itself need resolving): write e.g. "10.0.0.2:53"`}},
		{"dns resolver without port", pool(`{dns: {name: web.internal, port: 80, resolver: "10.0.0.2"}}`), []string{
			`t.yaml:4:63: discovery.dns.resolver "10.0.0.2" is not ip:port: write e.g. "10.0.0.2:53" or "[fd00::53]:53", or "" for the servers of /etc/resolv.conf`}},
		{"etcd without endpoints and prefix", pool("{etcd: {}}"), []string{
			`t.yaml:4:17: discovery.etcd needs endpoints: write e.g. ["10.0.0.7:2379"]`,
			`t.yaml:4:17: discovery.etcd needs a prefix, e.g. "/sluice/pools/web/"`}},
		{"etcd prefix without slash", pool(`{etcd: {endpoints: ["127.0.0.1:2379"], prefix: /sluice/web}}`), []string{
			`t.yaml:4:63: discovery.etcd.prefix "/sluice/web" must end with "/", so that it does not also take the keys of "/sluice/web2/": write "/sluice/web/"`}},
		{"etcd bad endpoint", pool(`{etcd: {endpoints: ["127.0.0.1", "grpc://h:1", "h:99999"], prefix: /w/}}`), []string{
			`t.yaml:4:36: etcd endpoint "127.0.0.1" is not host:port: write e.g. "10.0.0.7:2379"`,
			`t.yaml:4:49: etcd endpoint "grpc://h:1" is not host:port or http(s)://host:port: write e.g. "10.0.0.7:2379"`,
			`t.yaml:4:63: etcd endpoint "h:99999" has a bad port "99999": use 1 to 65535 (etcd listens on 2379)`}},
		{"etcd http endpoint with tls", pool(`{etcd: {endpoints: ["http://127.0.0.1:2379"], prefix: /w/, tls: {}}}`), []string{
			`t.yaml:4:36: etcd endpoint "http://127.0.0.1:2379" is http:// but discovery.etcd.tls is set: write https:// or host:port`}},
		{"etcd username without password", pool(`{etcd: {endpoints: ["127.0.0.1:2379"], prefix: /w/, username: u}}`), []string{
			`t.yaml:4:17: discovery.etcd.username needs a password_file too`}},
		{"etcd empty password file", pool(`{etcd: {endpoints: ["127.0.0.1:2379"], prefix: /w/, username: u, password_file: ` + empty + `}}`), []string{
			`t.yaml:4:96: discovery.etcd.password_file ` + empty + ` is empty`}},
		{"etcd tls cert without key", pool(`{etcd: {endpoints: ["127.0.0.1:2379"], prefix: /w/, tls: {cert: ` + pw + `}}}`), []string{
			`t.yaml:4:68: discovery.etcd.tls needs both cert and key for a client certificate, or neither`}},
		{"etcd tls ca missing", pool(`{etcd: {endpoints: ["127.0.0.1:2379"], prefix: /w/, tls: {ca: /nonexistent/ca.pem}}}`), []string{
			`t.yaml:4:78: discovery.etcd.tls.ca: stat /nonexistent/ca.pem: no such file or directory`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if diff := cmp.Diff(tt.want, lines(err)); diff != "" {
				t.Errorf("Parse errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiscoveryDefaults(t *testing.T) {
	c, err := Parse("t.yaml", []byte(listener1+"pools:\n  - name: web\n    discovery: {dns: {name: web.internal, port: 8080}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := &DNSDiscovery{Name: "web.internal", Type: "A", Port: 8080, Scheme: "http", Refresh: 30 * time.Second}
	if diff := cmp.Diff(want, c.Pools[0].Discovery.DNS); diff != "" {
		t.Errorf("dns defaults (-want +got):\n%s", diff)
	}
}

func TestEtcdPassword(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("  s3cret \nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := EtcdDiscovery{PasswordFile: pw}.Password()
	if err != nil || got != "s3cret" {
		t.Errorf("Password() = %q, %v; want %q, nil (first line, trimmed)", got, err, "s3cret")
	}
	if got, err := (EtcdDiscovery{}).Password(); got != "" || err != nil {
		t.Errorf("Password() without a file = %q, %v; want \"\", nil", got, err)
	}
}
