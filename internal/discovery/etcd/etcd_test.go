package etcd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/discovery/etcd"
	"github.com/sluice-lb/sluice/internal/testenv"
)

const prefix = "/sluice/pools/web/"

// reporter keeps the last set and every error a source reported.
type reporter struct {
	mu     sync.Mutex
	last   *discovery.Set
	sets   int
	errors []string
}

func (r *reporter) Found(s discovery.Set) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = &s
	r.sets++
}

func (r *reporter) Failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, err.Error())
}

// view is the last set as "address wN" lines and "fleet address state wN".
func (r *reporter) view() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	out := []string{}
	for _, b := range r.last.Backends {
		out = append(out, fmt.Sprintf("%s w%d", b.Address, b.Weight))
	}
	for addr, f := range r.last.Fleet {
		out = append(out, fmt.Sprintf("fleet %s %s w%d", addr, f.State, f.Weight))
	}
	return out
}

func (r *reporter) errs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errors...)
}

// waitFor polls cond for up to 15 s (etcd applies within milliseconds; the
// bound is for a loaded machine) and fails with what was seen.
func waitFor(t *testing.T, what string, cond func() bool, seen func() any) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 15s; last seen: %v", what, seen())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitView(t *testing.T, r *reporter, want ...string) {
	t.Helper()
	waitFor(t, "set "+strings.Join(want, ", "), func() bool {
		got := r.view()
		return got != nil && cmp.Equal(sorted(want), sorted(got))
	}, func() any { return r.view() })
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func client(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func put(t *testing.T, cli *clientv3.Client, key, val string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, val); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func del(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// run runs src until the test ends.
func run(t *testing.T, src *etcd.Source) *reporter {
	r := &reporter{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, r)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// TestEtcdSource: puts, weight changes, deletes and keys that cannot be
// used, against a real etcd; and fleet-wide writes.
func TestEtcdSource(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := client(t, e.Endpoint())
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001", "weight": 2}`)
	put(t, cli, "/sluice/pools/web2/x", `{"address": "http://127.0.0.1:9999"}`) // another pool's

	src := etcd.New(config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix}, etcd.Options{})
	r := run(t, src)
	waitView(t, r, "http://127.0.0.1:9001 w2")

	put(t, cli, prefix+"b", `{"address": "http://127.0.0.1:9002", "zone": "b"}`) // unknown fields are the registrar's
	waitView(t, r, "http://127.0.0.1:9001 w2", "http://127.0.0.1:9002 w1")
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001", "weight": 5}`)
	waitView(t, r, "http://127.0.0.1:9001 w5", "http://127.0.0.1:9002 w1")
	del(t, cli, prefix+"a")
	waitView(t, r, "http://127.0.0.1:9002 w1")

	// A key that cannot be used is reported and left out; the others stay.
	put(t, cli, prefix+"c", `{"address": "10.0.0.1:80"}`)
	waitFor(t, "the bad key reported", func() bool { return len(r.errs()) > 0 }, func() any { return r.errs() })
	want := `key "/sluice/pools/web/c": bad backend address "10.0.0.1:80": write scheme://host:port with scheme http, https or tcp, e.g. "http://10.0.0.5:8080"; the other keys apply`
	if got := r.errs()[0]; got != want {
		t.Errorf("bad key error:\n got %s\nwant %s", got, want)
	}
	waitView(t, r, "http://127.0.0.1:9002 w1")

	// Fleet-wide state: a drain, then a weight that keeps the drain.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := src.WriteFleet(ctx, "http://127.0.0.1:9002", discovery.Fleet{State: "draining"}); err != nil {
		t.Fatalf("WriteFleet: %v", err)
	}
	if err := src.WriteFleet(ctx, "http://127.0.0.1:9002", discovery.Fleet{Weight: 7}); err != nil {
		t.Fatalf("WriteFleet: %v", err)
	}
	waitView(t, r, "http://127.0.0.1:9002 w1", "fleet http://127.0.0.1:9002 draining w7")
	resp, err := cli.Get(ctx, etcd.FleetKey(prefix, "http://127.0.0.1:9002"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get the fleet key: %v", err)
	}
	if got, want := string(resp.Kvs[0].Value), `{"state":"draining","weight":7}`; got != want {
		t.Errorf("fleet key %s = %s, want %s", resp.Kvs[0].Key, got, want)
	}
	if got, want := string(resp.Kvs[0].Key), "/sluice/pools/web/_fleet/http:%2F%2F127.0.0.1:9002"; got != want {
		t.Errorf("fleet key = %s, want %s", got, want)
	}
}

// TestEtcdOutage: etcd killed: errors are reported and no set replaces
// the last one; etcd back: the watch resumes from the last revision and
// sees what changes next.
func TestEtcdOutage(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := client(t, e.Endpoint())
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001"}`)
	src := etcd.New(config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix}, etcd.Options{Probe: 200 * time.Millisecond})
	r := run(t, src)
	waitView(t, r, "http://127.0.0.1:9001 w1")

	e.Kill()
	waitFor(t, "errors while etcd is down", func() bool { return len(r.errs()) >= 2 }, func() any { return r.errs() })
	if got := r.errs()[0]; !strings.HasPrefix(got, "etcd at "+e.Endpoint()+" does not answer: ") {
		t.Errorf("error while etcd is down: %s, want it to name the endpoint", got)
	}
	if got := r.view(); !cmp.Equal(got, []string{"http://127.0.0.1:9001 w1"}) {
		t.Errorf("set while etcd is down: %v, want the last one kept", got)
	}

	e.Start()
	put(t, cli, prefix+"b", `{"address": "http://127.0.0.1:9002"}`)
	waitView(t, r, "http://127.0.0.1:9001 w1", "http://127.0.0.1:9002 w1")
}

// TestEtcdCompacted: while sluice's connection is cut, keys change; when
// it is back the watch resumes from the last revision seen and gets every
// change. Then the same with etcd compacting its history meanwhile: the
// revision to resume from is gone, and the source lists the prefix again.
func TestEtcdCompacted(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := client(t, e.Endpoint())
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001"}`)
	put(t, cli, prefix+"z", `{"address": "http://127.0.0.1:9009"}`)
	proxy := testenv.StartProxy(t, e.Endpoint())
	src := etcd.New(config.EtcdDiscovery{Endpoints: []string{proxy.Addr}, Prefix: prefix}, etcd.Options{Probe: 200 * time.Millisecond})
	r := run(t, src)
	waitView(t, r, "http://127.0.0.1:9001 w1", "http://127.0.0.1:9009 w1")

	proxy.Cut()
	waitFor(t, "an error while cut off", func() bool { return len(r.errs()) > 0 }, func() any { return r.errs() })
	del(t, cli, prefix+"z")
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001", "weight": 4}`)
	proxy.Restore()
	waitView(t, r, "http://127.0.0.1:9001 w4")
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001"}`)
	waitView(t, r, "http://127.0.0.1:9001 w1")
	r.mu.Lock()
	r.errors = nil
	r.mu.Unlock()

	proxy.Cut()
	waitFor(t, "an error while cut off", func() bool { return len(r.errs()) > 0 }, func() any { return r.errs() })
	del(t, cli, prefix+"a")
	put(t, cli, prefix+"b", `{"address": "http://127.0.0.1:9002"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Put(ctx, prefix+"c", `{"address": "http://127.0.0.1:9003"}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if got := r.view(); !cmp.Equal(got, []string{"http://127.0.0.1:9001 w1"}) {
		t.Errorf("set while cut off: %v, want the last one kept", got)
	}
	proxy.Restore()
	waitView(t, r, "http://127.0.0.1:9002 w1", "http://127.0.0.1:9003 w1")
}

// TestEtcdAuth: username and password_file log in; a wrong password is
// reported, not taken for an empty prefix.
func TestEtcdAuth(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := client(t, e.Endpoint())
	put(t, cli, prefix+"a", `{"address": "http://127.0.0.1:9001"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "s3cret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable auth: %v", err)
		}
	}
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("s3cret\n"), 0o600)
	os.WriteFile(bad, []byte("wrong\n"), 0o600)

	ok := run(t, etcd.New(config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix, Username: "root", PasswordFile: good}, etcd.Options{}))
	waitView(t, ok, "http://127.0.0.1:9001 w1")

	wrong := run(t, etcd.New(config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix, Username: "root", PasswordFile: bad}, etcd.Options{}))
	waitFor(t, "the login failure reported", func() bool { return len(wrong.errs()) > 0 }, func() any { return wrong.errs() })
	if got := wrong.errs()[0]; !strings.Contains(got, "authentication failed") {
		t.Errorf("error with a wrong password: %s, want the login failure", got)
	}
	if wrong.view() != nil {
		t.Errorf("a set was reported without logging in: %v", wrong.view())
	}
}

// TestEtcdTLS: with tls {ca, cert, key} the source verifies etcd's
// certificate and presents its own, which this etcd requires; without the
// client certificate the failure is reported.
func TestEtcdTLS(t *testing.T) {
	certs := testenv.NewCerts(t)
	e := testenv.StartEtcdTLS(t, certs)
	tc, err := (config.EtcdTLS{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + e.Endpoint()}, DialTimeout: 5 * time.Second, TLS: tc, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	put(t, cli, prefix+"a", `{"address": "https://127.0.0.1:9443"}`)

	ok := run(t, etcd.New(config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix,
		TLS: &config.EtcdTLS{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}}, etcd.Options{}))
	waitView(t, ok, "https://127.0.0.1:9443 w1")

	noCert := run(t, etcd.New(config.EtcdDiscovery{Endpoints: []string{e.Endpoint()}, Prefix: prefix,
		TLS: &config.EtcdTLS{CA: certs.CA}}, etcd.Options{Probe: 200 * time.Millisecond}))
	waitFor(t, "the refused connection reported", func() bool { return len(noCert.errs()) > 0 }, func() any { return noCert.errs() })
	if got := noCert.errs()[0]; !strings.Contains(got, "tls: ") {
		t.Errorf("error without a client certificate: %s, want the TLS refusal named", got)
	}
	if noCert.view() != nil {
		t.Errorf("a set was reported without a client certificate: %v", noCert.view())
	}
}
