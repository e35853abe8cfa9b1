package tlsterm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// rsaKey is one RSA 2048 key for every test: generating one is slow.
var rsaKey = sync.OnceValue(func() crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial atomic.Int64

// ca is a test certificate authority.
type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t testing.TB, name string) *ca {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key}
}

// leaf describes a certificate to issue.
type leaf struct {
	subject  pkix.Name
	dns      []string
	key      crypto.Signer // nil: a new ECDSA P-256 key
	notAfter time.Time     // zero: a year from now
	client   bool          // for client authentication, else server
}

// issue signs l and returns its PEM certificate and key and its serial.
func (a *ca) issue(t testing.TB, l leaf) (certPEM, keyPEM []byte, serialNo int64) {
	t.Helper()
	if l.key == nil {
		l.key = ecKey(t)
	}
	if l.notAfter.IsZero() {
		l.notAfter = time.Now().AddDate(1, 0, 0)
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.client {
		usage = x509.ExtKeyUsageClientAuth
	}
	serialNo = serial.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serialNo),
		Subject:      l.subject,
		DNSNames:     l.dns,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     l.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if _, isRSA := l.key.(*rsa.PrivateKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, l.key.Public(), a.key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(l.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), serialNo
}

// pemOf returns the CA's certificate as PEM.
func (a *ca) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// poolOf returns a pool holding the CA's certificate.
func poolOf(a *ca) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// writePair writes a pair's files as dir/base.pem and dir/base.key,
// each replaced at once (rename), as a certificate renewal tool does.
func writePair(t testing.TB, dir, base string, certPEM, keyPEM []byte) config.Certificate {
	t.Helper()
	c := config.Certificate{Cert: filepath.Join(dir, base+".pem"), Key: filepath.Join(dir, base+".key")}
	writeFile(t, c.Cert, certPEM)
	writeFile(t, c.Key, keyPEM)
	return c
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// server is a TLS echo server on loopback.
type server struct {
	addr       string
	counters   Counters
	handshakes chan serverConn // each handshake's result, as the server saw it
}

type serverConn struct {
	state tls.ConnectionState
	err   error
}

// serve starts a TLS echo server with conf; the test's cleanup stops it
// and waits for its goroutines.
func serve(t *testing.T, conf *tls.Config) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(), handshakes: make(chan serverConn, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[raw] = true
			mu.Unlock()
			wg.Go(func() {
				defer raw.Close()
				conn := tls.Server(raw, conf)
				err := s.counters.Handshake(ctx, conn)
				s.handshakes <- serverConn{conn.ConnectionState(), err}
				if err == nil {
					io.Copy(conn, conn)
				}
			})
		}
	})
	return s
}

// dial opens a TLS connection to s; the test's cleanup closes it.
func dial(t *testing.T, s *server, conf *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{Config: conf, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*tls.Conn), nil
}

// result waits for the server's side of the next handshake.
func (s *server) result(t *testing.T) serverConn {
	t.Helper()
	select {
	case r := <-s.handshakes:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no handshake")
		return serverConn{}
	}
}

// echo checks the connection still carries data both ways.
func echo(t *testing.T, c *tls.Conn, msg string) error {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: got " + string(buf))
	}
	return nil
}

// servedSerial returns the serial of the certificate the server showed.
func servedSerial(c *tls.Conn) int64 {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}
