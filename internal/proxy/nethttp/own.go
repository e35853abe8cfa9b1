package nethttp

import (
	"io"
	"net/http"
	"strconv"

	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
)

// What the codec adds for the listener's own protocols: the Alt-Svc that
// advertises its HTTP/3, and the answers to ACME HTTP-01 challenges.

// altSvc advertises the listener's HTTP/3, in place of any Alt-Svc the
// backend sent, on HTTP/1.1 and HTTP/2 responses (an HTTP/3 client is
// there already).
func (a *httpAttempt) altSvc(hdr http.Header) {
	if v := a.h.cur.Load().AltSvc; v != "" && a.r.ProtoMajor < 3 {
		hdr["Alt-Svc"] = []string{v}
	}
}

// challenge returns the key authorization when r asks for an ACME HTTP-01
// challenge of this sluice (GET or HEAD of its token).
func challenge(l *proxy.Listener, r *http.Request) (string, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", false
	}
	_, escaped, _ := proxy.SplitTarget(r.RequestURI)
	tok, ok := proxy.ChallengeToken(route.NormalizePath(escaped))
	if !ok {
		return "", false
	}
	return l.ACME.KeyAuthorization(tok)
}

// answerChallenge answers an ACME HTTP-01 challenge with its key
// authorization (RFC 8555 §8.3), before any route or backend.
func (a *httpAttempt) answerChallenge(keyAuth string) int {
	hdr := a.w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", strconv.Itoa(len(keyAuth)))
	hdr.Set("X-Request-Id", a.id)
	a.w.WriteHeader(http.StatusOK)
	if a.r.Method != http.MethodHead {
		n, _ := io.WriteString(a.w, keyAuth)
		a.rec.Bytes = int64(n)
	}
	return http.StatusOK
}
