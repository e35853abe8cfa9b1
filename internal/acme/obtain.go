package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"slices"
	"time"

	xacme "golang.org/x/crypto/acme"
)

// Challenge types sluice answers.
const (
	http01    = "http-01"
	tlsALPN01 = "tls-alpn-01"
)

// obtain runs one order for m's domains and returns the certificate,
// stored. attempt (0, 1, …) rotates the preferred challenge type, so that
// after a failed validation of one type the next order tries the other.
func (m *Manager) obtain(ctx context.Context, attempt int) (*tls.Certificate, error) {
	client, err := m.client(ctx)
	if err != nil {
		return nil, err
	}
	order, err := client.AuthorizeOrder(ctx, xacme.DomainIDs(m.domains...))
	if err != nil {
		return nil, fmt.Errorf("new order: %w", err)
	}
	types := m.challengeTypes(attempt)
	for _, u := range order.AuthzURLs {
		if err := m.authorize(ctx, client, u, types); err != nil {
			return nil, err
		}
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: m.domains[0]}, DNSNames: m.domains}, key)
	if err != nil {
		return nil, err
	}
	chain, _, err := client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("finalize: %w", err)
	}
	cert, err := m.check(chain, key)
	if err != nil {
		return nil, err
	}
	if err := m.store.save(m.name, chain, key); err != nil {
		return nil, fmt.Errorf("storing the certificate: %w (check tls.acme.storage)", err)
	}
	return cert, nil
}

// client returns an ACME client with m's account, registering it with the
// CA when the CA does not know it yet.
func (m *Manager) client(ctx context.Context) (*xacme.Client, error) {
	key, err := m.store.accountKey()
	if err != nil {
		return nil, fmt.Errorf("account key: %w (check tls.acme.storage)", err)
	}
	c := &xacme.Client{Key: key, DirectoryURL: m.o.Config.Directory, HTTPClient: m.http, UserAgent: "sluice"}
	acct := &xacme.Account{}
	if m.o.Config.Email != "" {
		acct.Contact = []string{"mailto:" + m.o.Config.Email}
	}
	if _, err := c.Register(ctx, acct, xacme.AcceptTOS); err != nil && !errors.Is(err, xacme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("account: %w", err)
	}
	return c, nil
}

// challengeTypes are the challenge types to try, preferred first: HTTP-01
// when a plain-HTTP listener answers it (port 80 is the one CAs reach
// most), TLS-ALPN-01 always; rotated by attempt.
func (m *Manager) challengeTypes(attempt int) []string {
	types := []string{tlsALPN01}
	if m.o.HTTP01() {
		types = []string{http01, tlsALPN01}
	}
	k := attempt % len(types)
	return append(types[k:], types[:k]...)
}

// authorize proves control of the identifier of the authorization at u
// with the first of types the CA offers, unless it is valid already.
func (m *Manager) authorize(ctx context.Context, client *xacme.Client, u string, types []string) error {
	z, err := client.GetAuthorization(ctx, u)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	if z.Status == xacme.StatusValid {
		return nil
	}
	name := z.Identifier.Value
	var chal *xacme.Challenge
	for _, typ := range types {
		if i := slices.IndexFunc(z.Challenges, func(c *xacme.Challenge) bool { return c.Type == typ }); i >= 0 {
			chal = z.Challenges[i]
			break
		}
	}
	if chal == nil {
		return fmt.Errorf("%s: the CA offers no challenge sluice can answer (it answers %v)", name, types)
	}
	var done func()
	switch chal.Type {
	case http01:
		ka, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return err
		}
		done = m.o.Challenges.setHTTP(chal.Token, ka)
	case tlsALPN01:
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return err
		}
		done = m.o.Challenges.setALPN(name, &cert)
	}
	defer done()
	if _, err := client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("%s: %s: %w", name, chal.Type, err)
	}
	if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("%s: %s validation: %w", name, chal.Type, err)
	}
	return nil
}

// check parses what the CA issued and makes sure it is what was asked
// for: a chain whose leaf has key's public key and covers every domain.
func (m *Manager) check(chain [][]byte, key crypto.Signer) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("the CA issued an empty chain")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("the CA issued a certificate that does not parse: %w", err)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		return nil, errors.New("the CA issued a certificate for another key")
	}
	if !m.covers(leaf) {
		return nil, fmt.Errorf("the CA issued a certificate for %v, not %v", leaf.DNSNames, m.domains)
	}
	if time.Now().After(leaf.NotAfter) {
		return nil, fmt.Errorf("the CA issued a certificate that expired at %s", leaf.NotAfter)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}
