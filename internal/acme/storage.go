package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// storage is where a Manager keeps its files, under tls.acme.storage
// (0700): one directory per CA (the directory URL's host and path, so that
// a staging CA's account and certificates never mix with production's)
// holding account.key and, per certificate, NAME.crt (the chain, leaf
// first) and NAME.key, NAME being the first domain. Files are written
// 0600, each at once (a temporary file renamed), so a crash leaves the old
// file or the new one, never half of one.
type storage struct {
	dir string // the CA's directory
}

func newStorage(root, directory string) (storage, error) {
	u, err := url.Parse(directory)
	if err != nil {
		return storage{}, fmt.Errorf("acme directory %q: %w", directory, err)
	}
	ca := strings.Trim(strings.NewReplacer(":", "_", "/", "_", "..", "_").Replace(u.Host+u.Path), "_")
	return storage{dir: filepath.Join(root, ca)}, nil
}

// accountKey returns the account key, created (ECDSA P-256) on first use.
func (s storage) accountKey() (crypto.Signer, error) {
	path := filepath.Join(s.dir, "account.key")
	if b, err := os.ReadFile(path); err == nil {
		return parseKey(b, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := s.write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	return key, nil
}

// load returns the stored certificate for name (nil, nil when none).
func (s storage) load(name string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(s.dir, name+".crt"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(s.dir, name+".key"))
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("stored certificate %s: %w", filepath.Join(s.dir, name+".crt"), err)
	}
	return &pair, nil
}

// save stores a certificate for name: its chain and its key.
func (s storage) save(name string, chain [][]byte, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, c := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	// The key first: a certificate is only ever found beside its key.
	if err := s.write(filepath.Join(s.dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return err
	}
	return s.write(filepath.Join(s.dir, name+".crt"), certPEM)
}

// write replaces path with data (0600), creating the directories (0700).
func (s storage) write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func parseKey(b []byte, path string) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a %T cannot sign", path, k)
	}
	return s, nil
}
