package proxy

import "strings"

// HTTPChallenges holds the key authorizations of the ACME HTTP-01
// challenges under way (RFC 8555 §8.3).
type HTTPChallenges interface {
	// KeyAuthorization returns the key authorization for token, or false
	// when no challenge of this sluice has that token.
	KeyAuthorization(token string) (string, bool)
}

// ChallengePrefix is the path under which an ACME CA asks for HTTP-01
// key authorizations.
const ChallengePrefix = "/.well-known/acme-challenge/"

// ChallengeToken returns the token of an HTTP-01 challenge request's
// normalised path, or false when the path is not one: a token is base64url
// (RFC 8555 §8.1), never empty and never holds a '/'.
func ChallengeToken(path string) (string, bool) {
	tok, ok := strings.CutPrefix(path, ChallengePrefix)
	if !ok || tok == "" || len(tok) > 256 {
		return "", false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return tok, true
}
