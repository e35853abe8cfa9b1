package admin

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
)

// dashboardHTML is the whole dashboard: one page, inline CSS and JS, no data
// (it reads /api/v1/pools, /api/v1/stats, /api/v1/config and the events
// stream, with the token when there is one), so it may be shown before the
// token is known.
//
//go:embed dashboard.html
var dashboardHTML []byte

// dashboardCSP allows exactly the page's inline style and script (by hash)
// and fetches to its own origin.
var dashboardCSP = "default-src 'none'; " +
	"script-src " + inlineHash(dashboardHTML, "<script>", "</script>") + "; " +
	"style-src " + inlineHash(dashboardHTML, "<style>", "</style>") + "; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHash returns the CSP source for the content between open and close.
func inlineHash(page []byte, open, close string) string {
	_, rest, ok := bytes.Cut(page, []byte(open))
	body, _, ok2 := bytes.Cut(rest, []byte(close))
	if !ok || !ok2 {
		panic("admin: dashboard.html lacks " + open + close)
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func writeDashboard(w http.ResponseWriter, code int) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(dashboardHTML)
}
