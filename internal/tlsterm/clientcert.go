package tlsterm

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// ClientCertHeader returns the value of X-Forwarded-Client-Cert for a
// connection, in Envoy's form:
//
//	Hash=<hex SHA-256 of the leaf's DER>;Subject="<DN as ClientSubject>"
//
// or "" when the client presented no certificate that was verified (no
// client_ca). Within the quotes '"' and '\' are escaped with '\', so the
// value is one unambiguous header line. The server sets the header from
// this and drops any X-Forwarded-Client-Cert the client sent, so a client
// cannot forge it.
func ClientCertHeader(cs *tls.ConnectionState) string {
	leaf := verifiedLeaf(cs)
	if leaf == nil {
		return ""
	}
	sum := sha256.Sum256(leaf.Raw)
	return "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="` + quoted.Replace(subject(leaf)) + `"`
}

// ClientSubject returns the RFC 2253 distinguished name of the client's
// verified certificate ("CN=alice,O=Example"), for the access log; ""
// without one. Control characters are written as \HH (RFC 4514's hex
// escape), so a name cannot break a log line.
func ClientSubject(cs *tls.ConnectionState) string {
	if leaf := verifiedLeaf(cs); leaf != nil {
		return subject(leaf)
	}
	return ""
}

// verifiedLeaf returns the client's certificate when the handshake
// verified it against client_ca (a resumed session carries the chains it
// verified).
func verifiedLeaf(cs *tls.ConnectionState) *x509.Certificate {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	return cs.VerifiedChains[0][0]
}

func subject(leaf *x509.Certificate) string {
	return controls.Replace(leaf.Subject.String())
}

var (
	// controls hex-escapes the control characters that pkix.Name.String
	// leaves as they are.
	controls = func() *strings.Replacer {
		var pairs []string
		for c := range 0x20 {
			pairs = append(pairs, string(rune(c)), fmt.Sprintf(`\%02x`, c))
		}
		return strings.NewReplacer(append(pairs, "\x7f", `\7f`)...)
	}()
	// quoted escapes a DN for a quoted XFCC value.
	quoted = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
)
