package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// guard decides, before routing, whether a request may reach the admin API.
//
//   - /healthz and /readyz are open: probes come from anywhere and learn
//     nothing.
//   - A mutating call (any method but GET, HEAD, OPTIONS) needs a Host that
//     names the admin server (hostRule) and must not be cross-origin
//     (http.CrossOriginProtection: Sec-Fetch-Site, else Origin against Host):
//     403 otherwise. So a page elsewhere cannot drive the API, with or
//     without DNS rebinding.
//   - With a token, /api/ always needs it, and every other path too when the
//     admin address is not loopback: 401 otherwise. The token is compared in
//     constant time.
//   - A read that needs no token must pass the Host check as well (403):
//     without a token, the Host check is all that keeps a rebinding page
//     from reading pool data, metrics or the dashboard. A read that needs the
//     token is not Host-checked, so Prometheus may scrape by any name.
type guard struct {
	host   hostRule
	token  *[sha256.Size]byte // nil: no token
	origin *http.CrossOriginProtection
}

func newGuard(address, token string) guard {
	g := guard{origin: http.NewCrossOriginProtection()}
	if token = strings.TrimSpace(token); token != "" {
		sum := sha256.Sum256([]byte(token))
		g.token = &sum
	}
	g.host = newHostRule(address, g.token != nil)
	return g
}

// check returns 0 when r may proceed, else the status and a message for the
// client.
func (g *guard) check(r *http.Request) (code int, msg string) {
	p := r.URL.Path
	if p == "/healthz" || p == "/readyz" {
		return 0, ""
	}
	// On loopback only the dashboard and /metrics go without the token; any
	// other path is treated as API, so an unclean path cannot dodge it.
	needToken := g.token != nil && !(g.host.loopback && (p == "/" || p == "/metrics"))
	if !safeMethod(r.Method) {
		if !g.host.allows(r.Host, r.TLS != nil) {
			return http.StatusForbidden, hostRefused(r.Host)
		}
		if err := g.origin.Check(r); err != nil {
			return http.StatusForbidden, "cross-origin request refused: change backends from the dashboard served by this admin address, or from a client that sends no Origin (curl)"
		}
	} else if !needToken && !g.host.allows(r.Host, r.TLS != nil) {
		return http.StatusForbidden, hostRefused(r.Host)
	}
	if needToken && !g.bearerOK(r) {
		return http.StatusUnauthorized, `missing or invalid bearer token: send "Authorization: Bearer TOKEN" with the token in admin.token_file`
	}
	return 0, ""
}

func hostRefused(host string) string {
	return "host " + strconv.Quote(host) + " is not the admin address: call the admin API at admin.address (a loopback one by its IP or as localhost)"
}

func (g *guard) bearerOK(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// Hashing first makes the comparison's time independent of the length.
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], g.token[:]) == 1
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// hostRule says which Host headers name the admin server.
//
// The check exists to stop DNS rebinding: a page on evil.example whose name
// is re-pointed at the admin address is same-origin with it, so Origin checks
// pass, but its requests still carry Host: evil.example:PORT. The rule, with
// names compared case-insensitively without a trailing dot, IPs as addresses,
// and a Host without a port meaning 80 (443 over TLS):
//
//   - The port must equal the admin port, unless the admin address has port 0
//     or none (the bound port is unknown).
//   - Loopback admin host (127.0.0.0/8, ::1, localhost): the Host must be a
//     loopback IP literal or "localhost", in any of their forms. A name that
//     resolves to loopback is refused: that is what a rebinding page is.
//   - Unspecified admin host ("", 0.0.0.0, ::): with a token, any Host (the
//     token, which a rebinding page cannot read, is the defence, and
//     operators reach such servers by name); without one, only IP literals
//     and "localhost", which cannot be rebound.
//   - Any other admin host: the Host must be that host.
type hostRule struct {
	host      string     // normalised admin host; "" when unspecified
	addr      netip.Addr // the admin host as an IP, if it is one
	port      string     // "" = any
	loopback  bool
	anyHost   bool // unspecified admin host
	anyByName bool // with anyHost: names are accepted too
}

func newHostRule(address string, haveToken bool) hostRule {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, ""
	}
	if port == "0" {
		port = ""
	}
	rule := hostRule{host: normHost(host), port: port}
	rule.addr, _ = netip.ParseAddr(rule.host)
	rule.addr = rule.addr.Unmap()
	rule.loopback = isLoopback(rule.host)
	rule.anyHost = rule.host == "" || (rule.addr.IsValid() && rule.addr.IsUnspecified())
	rule.anyByName = rule.anyHost && haveToken
	return rule
}

func (h hostRule) allows(hostport string, tls bool) bool {
	host, port, ok := splitHost(hostport, tls)
	if !ok || (h.port != "" && port != h.port) {
		return false
	}
	addr, err := netip.ParseAddr(host)
	isIP := err == nil
	switch {
	case h.loopback:
		return isLoopback(host)
	case h.anyHost:
		return h.anyByName || isIP || host == "localhost"
	case h.addr.IsValid():
		return isIP && addr.Unmap() == h.addr
	}
	return host == h.host
}

// splitHost splits a Host header into a normalised host and a port, the
// scheme's default when absent.
func splitHost(hostport string, tls bool) (host, port string, ok bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "80"
		if tls {
			port = "443"
		}
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return "", "", false
		}
	}
	host = normHost(host)
	return host, port, host != "" && port != ""
}

func normHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
