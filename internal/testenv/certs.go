package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a certificate authority made for one test: a self-signed ECDSA
// P-256 certificate valid for a year.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte         // Cert as PEM
	Pool *x509.CertPool // holds Cert: a client's RootCAs, a server's ClientCAs
}

// NewCA makes a CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"sluice tests"}},
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
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, PEM: pemOf("CERTIFICATE", der), Pool: pool}
}

// Leaf describes a certificate that a CA issues.
type Leaf struct {
	Names     []string  // DNS names
	IPs       []net.IP  // IP addresses
	Subject   pkix.Name // CommonName defaults to Names[0]
	RSA       bool      // an RSA 2048 key (the same for every such certificate: making one is slow) instead of a new ECDSA P-256 key
	Client    bool      // for client authentication instead of server
	NotBefore time.Time // default: an hour ago; kept to the second (a not-yet-valid certificate sets it)
	NotAfter  time.Time // default: 24h from now; kept to the second (an expired certificate sets it)
}

// Issued is a certificate a CA issued, with its key.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte // PKCS #8
	Pair    tls.Certificate
}

// Issue signs a certificate described by l, with a random serial number.
func (ca *CA) Issue(t testing.TB, l Leaf) *Issued {
	t.Helper()
	var key crypto.Signer
	if l.RSA {
		key = rsaKey(t)
	} else {
		key = ecKey(t)
	}
	subj := l.Subject
	if subj.CommonName == "" && len(l.Names) > 0 {
		subj.CommonName = l.Names[0]
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(24 * time.Hour)
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      subj,
		DNSNames:     l.Names,
		IPAddresses:  l.IPs,
		NotBefore:    l.NotBefore.Truncate(time.Second),
		NotAfter:     l.NotAfter.Truncate(time.Second),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if l.RSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	is := &Issued{Cert: cert, CertPEM: pemOf("CERTIFICATE", der), KeyPEM: pemOf("PRIVATE KEY", pkcs8)}
	if is.Pair, err = tls.X509KeyPair(is.CertPEM, is.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return is
}

// Write puts the certificate and key in dir as base.pem and base.key (the
// key first), each replaced at once (WriteFileAtomic), and returns their
// paths.
func (is *Issued) Write(t testing.TB, dir, base string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")
	WriteFileAtomic(t, keyFile, is.KeyPEM)
	WriteFileAtomic(t, certFile, is.CertPEM)
	return certFile, keyFile
}

// Write puts the CA's certificate in dir as base.pem and returns its path.
func (ca *CA) Write(t testing.TB, dir, base string) string {
	t.Helper()
	p := filepath.Join(dir, base+".pem")
	WriteFileAtomic(t, p, ca.PEM)
	return p
}

// WriteFileAtomic replaces path with data (mode 0600) by a rename, as
// certbot and Kubernetes do, so that a reader never sees half a file.
func WriteFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Certs are PEM files in a temp dir: a CA, a server certificate for
// 127.0.0.1 and localhost and a client certificate, both signed by the CA.
type Certs struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// NewCerts writes a fresh CA, server and client certificate (ECDSA P-256,
// valid for a day) into the test's temp dir.
func NewCerts(t testing.TB) Certs {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, "sluice test CA")
	c := Certs{CA: ca.Write(t, dir, "ca")}
	leaf := Leaf{Names: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}
	leaf.Subject.CommonName = "server"
	c.ServerCert, c.ServerKey = ca.Issue(t, leaf).Write(t, dir, "server")
	leaf.Subject.CommonName, leaf.Client = "client", true
	c.ClientCert, c.ClientKey = ca.Issue(t, leaf).Write(t, dir, "client")
	return c
}

// serial returns a fresh random serial number.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaKeyOnce makes the one RSA key of Leaf.RSA, once for the test binary:
// immutable once made.
var rsaKeyOnce = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func rsaKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := rsaKeyOnce()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
