package config

// listenerKeyDocs describes the keys of listeners and their blocks (see KeyDoc).
func listenerKeyDocs() map[string]KeyDoc {
	return map[string]KeyDoc{
		"listeners": {
			Type: "list of [listeners](#listeners)", Default: required,
			Meaning: "where clients connect. At least one.",
		},
		"listeners.name": {
			Default: "the address",
			Meaning: "identifies the listener in logs and metrics (`listener` label). Unique.",
		},
		"listeners.address": {
			Type: "`host:port`", Default: required,
			Meaning: "where to accept connections: `\":8080\"` (all interfaces), `\"127.0.0.1:8080\"`, " +
				"`\"[::1]:8080\"`. Port 0 picks a free port. No two listeners may share an address.",
		},
		"listeners.protocol": {
			Type: "`http` | `tcp`",
			Meaning: "`tcp` balances raw TCP connections (layer 4) over pools of `tcp://` backends: each " +
				"connection is relayed byte for byte to one backend, routed by `sni` routes (the server " +
				"name of the client's TLS ClientHello, read without terminating TLS), or with `tls` " +
				"terminated first. HTTP-only keys (`h2c`, `engine`, `timeouts.read`/`write`, the header " +
				"and body `limits`) are errors on it unless left at their defaults. See [tcp.md](tcp.md).",
		},
		"listeners.tls": {
			Type: "[block](#tls)", Note: "(plain HTTP)",
			Meaning: "HTTPS: TLS termination with certificates chosen by SNI, HTTP/2 through ALPN, optional " +
				"client certificates.",
		},
		"listeners.http3": {
			Meaning: "with `tls`: also serve HTTP/3 over QUIC on the same port, over UDP, and advertise it with " +
				"`Alt-Svc: h3=\":PORT\"; ma=86400` on the listener's HTTP/1.1 and HTTP/2 responses (in place of " +
				"any `Alt-Svc` the backend sent). The same core serves it: routes, limits, forwarding fields " +
				"(`X-Forwarded-Proto: https`), retries, the access log (`\"proto\":\"HTTP/3.0\"`). An error " +
				"without `tls`. See [HTTP/3](http2.md#http3).",
		},
		"listeners.h2c": {
			Meaning: "HTTP/2 over cleartext: prior knowledge (the connection preface is recognised on the port " +
				"that also serves HTTP/1.1) and `Upgrade: h2c` (with `engine: loop` or `h1`, not `std`). An error together " +
				"with `tls`, which offers HTTP/2 through ALPN.",
		},
		"listeners.proxy_protocol": {
			Meaning: "every connection must open with a PROXY protocol v1 or v2 header (from a front load " +
				"balancer such as HAProxy, an AWS NLB or another sluice), read within " +
				"`timeouts.read_header` and before TLS; the client it names is then the client " +
				"everywhere: `X-Forwarded-For`, the trusted-proxy decision, the access log, `client_ip` " +
				"hash keys and rate limits. A v2 `LOCAL` header (or v1 `UNKNOWN`) keeps the peer's " +
				"address. A connection without a valid header is closed without an answer, and so is " +
				"one from a peer outside `trusted_proxies` when that list is set. Counted in " +
				"`sluice_connections_rejected_total{listener,reason}`. See " +
				"[tcp.md](tcp.md#the-proxy-protocol).",
		},
		"listeners.trusted_proxies": {
			Type: "list of CIDRs or IPs",
			Meaning: "peers whose `X-Forwarded-For` is kept and appended to; from any other peer it is " +
				"replaced. `\"10.0.0.0/8\"`, `\"192.0.2.1\"`, `\"::1\"`. With `proxy_protocol`, also the " +
				"only peers a PROXY header is accepted from (when the list is not empty), and the " +
				"header's client is the peer the `X-Forwarded-For` rule looks at.",
		},
		"listeners.timeouts": {
			Meaning: "client-side (downstream) timeouts, below.",
		},
		"listeners.limits": {
			Meaning: "what a client may send, below.",
		},
		"listeners.routes": {
			Type:    "list of [routes](#routes)",
			Meaning: "tried in order; the first match wins.",
		},
		"listeners.pool": {
			Type:    "pool name",
			Meaning: "where requests go when no route matches; with `\"\"` they get 404.",
		},
		"listeners.engine": {
			Type: "`h1` | `std` | `loop`", Default: "`loop` where it serves, else `h1`",
			Meaning: "the HTTP/1.x codec beneath the shared core. `h1` is sluice's own HTTP/1.1 engine: strict " +
				"RFC 9112 parsing straight from its buffers, header fields passed through as raw bytes, " +
				"its own upstream connection pool without helper goroutines, large bodies spliced in the " +
				"kernel; it spends about half the CPU per request of `std`. `std` is Go's net/http server " +
				"and `http.Transport` beneath the same strict request guard: the reference behaviour. " +
				"Either way TLS is terminated first and HTTP/1.1 over TLS runs on the chosen engine, " +
				"while HTTP/2 from clients (ALPN or h2c) is served over the net/http codec's handler by " +
				"sluice's own HTTP/2 server with `h1` and by golang.org/x/net/http2's with `std` (with " +
				"`h1`, its requests with a body of at most 64 KiB reach " +
				"HTTP/1.1 backends over the engine's connections, the others through `http.Transport`; " +
				"see [http2.md](http2.md)); `Upgrade: h2c` is answered with `engine: h1` and `loop`, not `std` (prior " +
				"knowledge works with all three). Both pass the same end-to-end, hostile-input and " +
				"differential tests; routing, balancing, retries, health, metrics and logs are shared. " +
				"`loop` (Linux, HTTP listeners without `proxy_protocol`; the default there) is the `h1` " +
				"engine on event loops: `event_loops` of them (one per CPU), shared by every such listener, " +
				"with no goroutine per connection; HTTP/1.1 requests without a body to plain HTTP/1.1 " +
				"backends named by address are parsed, forwarded and answered on the loop, over TLS too " +
				"(the handshake runs on a goroutine, the records on the loop), over backend connections " +
				"each loop owns, and anything else (a request body, an upgrade, HTTP/1.0, a pool with " +
				"HTTP/2, TLS or the PROXY protocol to its backends, a shared rate limit) is handed to a " +
				"goroutine that serves the connection as `h1` does from then on; HTTP/2 connections (ALPN " +
				"or h2c prior knowledge) are served by sluice's HTTP/2 server as with `h1`, their frames read " +
				"and written on the loops, and a stream whose request the loop can forward as it forwards HTTP/1.1 " +
				"(no body, to such a pool) is forwarded by the loop too; the other streams run on the server's " +
				"goroutines, as with `h1`. " +
				"See [How the engines differ](#how-the-engines-differ).",
		},
		"listeners.tls.certificates": {
			Type: "list of blocks", Default: "— (required without `acme`)",
			Meaning: "the certificate/key pairs, chosen by SNI (below); the first is the default. At least " +
				"one, unless `acme` is set.",
		},
		"listeners.tls.min_version": {
			Type: "`\"1.2\"` | `\"1.3\"`",
			Meaning: "the oldest TLS version accepted. TLS 1.2 is offered only with forward-secret AEAD suites " +
				"(ECDHE with AES-GCM or ChaCha20-Poly1305, for ECDSA and RSA keys); key exchange is " +
				"X25519 or P-256.",
		},
		"listeners.tls.client_ca": {
			Type: "file", Note: "(no client certificates)",
			Meaning: "mutual TLS: a PEM file of CA certificates. Every client must present a certificate one " +
				"of them signed, or the handshake fails. The verified certificate is forwarded to the " +
				"backend as `X-Forwarded-Client-Cert: Hash=<sha256 hex of the DER>;Subject=\"<DN>\"` " +
				"(Envoy's form; `\"` and `\\` in the DN escaped with `\\`), replacing any the client sent, " +
				"and its subject is in the access log (`client_subject`).",
		},
		"listeners.tls.acme": {
			Meaning: "a certificate for `domains` obtained and renewed automatically from an ACME CA (RFC " +
				"8555), below. Alone, or beside `certificates`: SNI picks among them all.",
		},
		"listeners.tls.certificates.cert": {
			Type: "file", Default: required,
			Meaning: "PEM file: the certificate first, then its intermediates.",
		},
		"listeners.tls.certificates.key": {
			Type: "file", Default: required,
			Meaning: "its private key in PEM (ECDSA, RSA or Ed25519; PKCS #8, PKCS #1 or SEC 1).",
		},
		"listeners.tls.acme.domains": {
			Type: "list of DNS names", Default: required,
			Meaning: "the names the certificate covers; the first names it in logs, metrics and files. No " +
				"wildcards (they need DNS-01, which sluice does not answer) and no IP addresses.",
		},
		"listeners.tls.acme.email": {
			Meaning: "the account's contact, to which the CA sends expiry notices; `\"\"` registers without one.",
		},
		"listeners.tls.acme.directory": {
			Type: "https URL",
			Meaning: "the CA's ACME directory (Let's Encrypt's staging one is " +
				"`https://acme-staging-v02.api.letsencrypt.org/directory`).",
		},
		"listeners.tls.acme.ca_root": {
			Type: "file", Note: "(the system's roots)",
			Meaning: "a PEM file of the CA certificates that sign the ACME server's own HTTPS: a private CA, " +
				"or a test one such as pebble's.",
		},
		"listeners.tls.acme.storage": {
			Type: "directory", Default: required,
			Meaning: "where the account key and the certificates are kept, one directory per CA; created " +
				"`0700` when missing (files `0600`). A restart serves what it finds there at once and only " +
				"orders a certificate that is missing, no longer covers `domains`, or is due for renewal. " +
				"Checked when the config is loaded: sluice must be able to write it, or create it.",
		},
		"listeners.timeouts.read_header": {
			Type: "duration ≥ 0",
			Meaning: "time to read a request's headers (slower clients get 408). Also bounds the PROXY " +
				"protocol header and the TLS handshake; on a tcp listener, what is read before the " +
				"relay (PROXY header, TLS handshake or ClientHello).",
		},
		"listeners.timeouts.read": {
			Type:    "duration ≥ 0",
			Meaning: "time to read a whole request, body included.",
		},
		"listeners.timeouts.write": {
			Type:    "duration ≥ 0",
			Meaning: "time to write a whole response.",
		},
		"listeners.timeouts.idle": {
			Type: "duration ≥ 0",
			Meaning: "how long a keep-alive connection may wait for its next request. On a tcp listener: a " +
				"relayed connection on which no byte moved either way for the shorter of this and its " +
				"pool's `timeouts.idle` is closed.",
		},
		"listeners.limits.max_connections": {
			Type: "integer ≥ 0", Note: "(no limit)",
			Meaning: "open client connections; past the limit sluice stops accepting and new connections wait " +
				"in the kernel's accept queue until one closes (HAProxy's `maxconn`).",
		},
		"listeners.limits.max_header_bytes": {
			Type:    "integer ≥ 1",
			Meaning: "size of the request header block; larger → 431.",
		},
		"listeners.limits.max_headers": {
			Type:    "integer ≥ 1",
			Meaning: "number of request header fields; more → 431.",
		},
		"listeners.limits.max_uri_bytes": {
			Type:    "integer ≥ 1",
			Meaning: "length of the request target; longer → 414.",
		},
		"listeners.limits.max_body_bytes": {
			Type: "integer ≥ 0", Note: "(no limit)",
			Meaning: "request body size; larger → 413.",
		},
		"listeners.limits.max_concurrent_streams": {
			Type: "integer 1 to 1048576",
			Meaning: "requests one HTTP/2 or HTTP/3 connection may have open at once " +
				"(SETTINGS_MAX_CONCURRENT_STREAMS); a stream over it is refused. Needs `tls` or `h2c`.",
		},
		"listeners.routes.host": {
			Type: "host name", Note: "(any)",
			Meaning: "the request's host, without port, case-insensitive. `\"*.example.com\"` matches any " +
				"subdomain.",
		},
		"listeners.routes.path_prefix": {
			Type: "string starting with `/`", Note: "(any)",
			Meaning: "prefix of the normalised path.",
		},
		"listeners.routes.headers": {
			Type:    "mapping name → value",
			Meaning: "each header must be present with exactly this value.",
		},
		"listeners.routes.sni": {
			Type: "server name",
			Meaning: "on a `protocol: tcp` listener only, and the only condition there: the server name of the " +
				"client's TLS ClientHello, case-insensitive; `\"*.example.com\"` matches any name below " +
				"`example.com`. Read without terminating TLS (at most 16 KiB, within " +
				"`timeouts.read_header`), then the connection, those bytes included, is relayed " +
				"untouched. With `tls` on the listener, the name of the terminated handshake. A " +
				"connection without a match goes to the listener's `pool`, or is closed.",
		},
		"listeners.routes.pool": {
			Type: "pool name", Default: required,
			Meaning: "where matching requests go.",
		},
	}
}
