package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Etcd is a single-member etcd server (Debian's etcd-server) in a temp
// dir, listening on free loopback ports, that a test can kill and start
// again on the same data and ports.
type Etcd struct {
	t          testing.TB
	bin, dir   string
	clientPort int
	peerPort   int

	certs *Certs      // nil: plain HTTP
	tls   *tls.Config // for the health check, with certs

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer // its log, shown when the test fails
	exit chan struct{}
}

// StartEtcd starts etcd; the test's cleanup stops it. It skips the test
// locally, and fails it under CI=true, when etcd is not installed.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return startEtcd(t, nil)
}

// StartEtcdTLS is StartEtcd with TLS on the client port: etcd presents
// certs' server certificate and requires a client certificate signed by
// its CA.
func StartEtcdTLS(t testing.TB, certs Certs) *Etcd {
	t.Helper()
	return startEtcd(t, &certs)
}

func startEtcd(t testing.TB, certs *Certs) *Etcd {
	t.Helper()
	e := &Etcd{t: t, bin: Program(t, "etcd", Debian("etcd-server")), dir: t.TempDir(), certs: certs}
	if certs != nil {
		roots := x509.NewCertPool()
		pemCA, err := os.ReadFile(certs.CA)
		if err != nil || !roots.AppendCertsFromPEM(pemCA) {
			t.Fatalf("read the test CA: %v", err)
		}
		pair, err := tls.LoadX509KeyPair(certs.ClientCert, certs.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		e.tls = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}
	}
	// Killed and started again on the same ports: see Ports.
	e.clientPort = Ports(t, 2)
	e.peerPort = e.clientPort + 1
	e.Start()
	t.Cleanup(func() {
		e.Kill()
		if t.Failed() {
			e.mu.Lock()
			t.Logf("etcd log:\n%s", e.out.String())
			e.mu.Unlock()
		}
	})
	return e
}

// Endpoint is the client address, host:port.
func (e *Etcd) Endpoint() string { return "127.0.0.1:" + strconv.Itoa(e.clientPort) }

// Start starts etcd (again) and waits until it is healthy.
func (e *Etcd) Start() {
	e.t.Helper()
	scheme := "http://"
	if e.certs != nil {
		scheme = "https://"
	}
	client := scheme + e.Endpoint()
	peer := "http://127.0.0.1:" + strconv.Itoa(e.peerPort)
	args := []string{
		"--name", "test",
		"--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test=" + peer, "--initial-cluster-state", "new",
		"--log-level", "warn"}
	if c := e.certs; c != nil {
		args = append(args, "--cert-file", c.ServerCert, "--key-file", c.ServerKey,
			"--trusted-ca-file", c.CA, "--client-cert-auth")
	}
	cmd := exec.Command(e.bin, args...)
	e.mu.Lock()
	if e.out == nil {
		e.out = new(bytes.Buffer)
	}
	w := &lockedWriter{mu: &e.mu, w: e.out}
	cmd.Stdout, cmd.Stderr = w, w
	e.mu.Unlock()
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start etcd: %v", err)
	}
	exit := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exit)
	}()
	e.mu.Lock()
	e.cmd, e.exit = cmd, exit
	e.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if healthy(client, e.tls) {
			return
		}
		select {
		case <-exit:
			e.mu.Lock()
			defer e.mu.Unlock()
			e.t.Fatalf("etcd exited at start:\n%s", e.out.String())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("etcd not healthy after 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills etcd (SIGKILL: no goodbye to its clients) and waits for it to
// exit. Killing a stopped etcd does nothing.
func (e *Etcd) Kill() {
	e.mu.Lock()
	cmd, exit := e.cmd, e.exit
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exit
}

func healthy(client string, tc *tls.Config) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", client+"/health", nil)
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode == 200 && bytes.Contains(b.Bytes(), []byte(`"true"`))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// String describes the server, for messages.
func (e *Etcd) String() string { return fmt.Sprintf("etcd at %s (data in %s)", e.Endpoint(), e.dir) }
