package config

// poolKeyDocs describes the keys of pools and their blocks (see KeyDoc).
func poolKeyDocs() map[string]KeyDoc {
	return map[string]KeyDoc{
		"pools": {
			Type: "list of [pools](#pools)", Default: required,
			Meaning: "groups of backends. At least one.",
		},
		"pools.name": {
			Default: required,
			Meaning: "identifies the pool in routes, the admin API, logs and metrics. Unique.",
		},
		"pools.balance": {
			Type:    "`round_robin` | `random` | `least_requests` | `p2c` | `consistent_hash` | `ip_hash`",
			Meaning: "how requests are spread over backends; see [policies.md](policies.md).",
		},
		"pools.hash_key": {
			Type:    "`client_ip` | `path` | `header:NAME` | `cookie:NAME` | `query:NAME`",
			Meaning: "what hash policies hash on. Checked even when the policy does not hash.",
		},
		"pools.hash_balance_factor": {
			Type: "`0` or a number 1–100", Note: "(off)",
			Meaning: "bounded load for `consistent_hash` and `ip_hash`: a backend whose requests in flight " +
				"reach this factor times the average is passed over (`1.25`: at most 25% above the " +
				"average). Any other value than `0` with another policy is an error, since it would have " +
				"no effect. See [policies.md](policies.md#consistent_hash).",
		},
		"pools.backends": {
			Type: "list of [backends](#backends)", Default: "— (required without `discovery`)",
			Meaning: "the servers. At least one unless the pool has `discovery`; no address twice.",
		},
		"pools.discovery": {
			Type: "[block](#discovery)",
			Meaning: "backends found at run time in DNS or etcd, beside the static `backends` (which may " +
				"then be empty).",
		},
		"pools.health_check": {
			Type: "[block](#health_check)", Note: "(no active checks)",
			Meaning: "active checks. Write `health_check: {}` for checks with every default.",
		},
		"pools.passive_health": {
			Type:    "[block](#passive_health)",
			Meaning: "outlier ejection from live traffic; always on.",
		},
		"pools.retries": {
			Type:    "[block](#retries)",
			Meaning: "the attempt loop.",
		},
		"pools.timeouts": {
			Meaning: "backend-side (upstream) timeouts, below.",
		},
		"pools.max_connections_per_backend": {
			Type: "integer ≥ 0", Note: "(no limit)",
			Meaning: "requests in flight per backend (HAProxy's `maxconn`). A request whose backend is full " +
				"goes to another eligible backend with a free slot; when all are full it waits in the " +
				"pool's first-in-first-out queue. In a pool of `tcp://` backends: open relayed " +
				"connections per backend.",
		},
		"pools.max_queue": {
			Type: "integer ≥ 0",
			Meaning: "requests that may wait for a slot; when the queue is full the request gets 503 at once " +
				"(HAProxy's `maxqueue`). Only with `max_connections_per_backend`.",
		},
		"pools.queue_timeout": {
			Type:    "duration ≥ 0",
			Meaning: "how long a request may wait in the queue before it gets 503 (HAProxy's `timeout queue`).",
		},
		"pools.sticky": {
			Type: "[block](#sticky)", Note: "(off)",
			Meaning: "cookie affinity on top of the policy, below.",
		},
		"pools.slow_start": {
			Type: "duration ≥ 0", Note: "(off)",
			Meaning: "a backend that becomes eligible again (healthy again after being unhealthy or ejected, " +
				"enabled through the admin API, or added to a running pool by the admin API or a reload) " +
				"ramps its weight from 10% to 100% over this window. Not for `consistent_hash` and " +
				"`ip_hash`, which keep each key on its backend: with them any value above `0s` is an " +
				"error. See [policies.md](policies.md#sticky-and-slow_start).",
		},
		"pools.upstream_tls": {
			Meaning: "TLS to `https://` backends, below.",
		},
		"pools.upstream_http2": {
			Meaning: "HTTP/2 to backends: over TLS (ALPN) for `https://` backends, prior knowledge (h2c) for " +
				"`http://` ones. Needed by `health_check.type: grpc`.",
		},
		"pools.grpc_web": {
			Meaning: "gRPC-Web for browsers: a request with content type `application/grpc-web` or " +
				"`application/grpc-web-text` (each with an optional `+proto` or other suffix), over " +
				"HTTP/1.1, HTTP/2 or HTTP/3, reaches the backends as gRPC (`application/grpc`, the " +
				"text form's base64 decoded), and their response comes back as gRPC-Web with the " +
				"trailers (`grpc-status`, `grpc-message`) in a last frame of the body; an answer that is " +
				"not gRPC (an error page) comes back as a gRPC status. Other requests " +
				"pass untouched. Needs `upstream_http2: true`. See [http2.md](http2.md#grpc-web).",
		},
		"pools.send_proxy_protocol": {
			Type: "`\"\"` | `v1` | `v2`", Note: "(none)",
			Meaning: "each new backend connection begins with a PROXY protocol header of that version naming " +
				"the client (the one a PROXY header in named, when the listener has `proxy_protocol`) " +
				"and the address it connected to. Such a connection carries only that client's " +
				"requests: `engine: h1` keeps it for the client connection that opened it (HAProxy " +
				"reuses a connection only for the same PROXY header), `engine: std` and HTTP/2 clients " +
				"open one per request; tcp pools send it on each relayed connection. Health checks then " +
				"begin with a header naming no client (v2 `LOCAL`, v1 `UNKNOWN`). Not with " +
				"`upstream_http2`.",
		},
		"pools.backends.address": {
			Type: "URL", Default: required,
			Meaning: "`http://host:port`, `https://host:port` (TLS to the backend) or `tcp://host:port` (only " +
				"for pools used by a `protocol: tcp` listener). The port is required; no path, query or " +
				"user info (a lone trailing `/` is dropped). Used as written as the `backend` label.",
		},
		"pools.backends.weight": {
			Type:    "integer 1–1000",
			Meaning: "the backend's share relative to the others in the pool.",
		},
		"pools.discovery.dns": {
			Meaning: "backends from the records of a DNS name, resolved again every `refresh`, sooner when " +
				"the records' TTL is shorter.",
		},
		"pools.discovery.etcd": {
			Meaning: "backends from the keys under a prefix in etcd, watched.",
		},
		"pools.discovery.dns.name": {
			Type: "DNS name", Default: required,
			Meaning: "what to resolve, e.g. `web.internal`, or for SRV `_http._tcp.web.internal`. Without " +
				"`resolver`, a name with fewer dots than resolv.conf's `ndots` goes through its `search` " +
				"domains.",
		},
		"pools.discovery.dns.type": {
			Type: "`A` | `AAAA` | `SRV`",
			Meaning: "`A`/`AAAA`: one backend of weight 1 per address, on `port`. `SRV`: one backend per " +
				"record's target address (A, else AAAA; from the additional section when the server " +
				"sends it) on the record's port; the record's weight becomes the backend's (0 counts as " +
				"1, above 1000 as 1000), and its **priority** a level: the backends of the lowest " +
				"priority value serve alone, and the next level takes requests only while no backend of " +
				"the levels above is eligible (healthy and enabled); every level is health checked all " +
				"along. A target without an address is left out.",
		},
		"pools.discovery.dns.port": {
			Type: "integer 1–65535", Default: "— (required with `A`/`AAAA`)",
			Meaning: "the backends' port. An error with `SRV`, whose records give it.",
		},
		"pools.discovery.dns.scheme": {
			Type: "`http` | `https` | `tcp`",
			Meaning: "the backends' scheme. The address is the IP, so `https` backends are verified " +
				"against `upstream_tls.server_name` (set it).",
		},
		"pools.discovery.dns.refresh": {
			Type: "duration > 0",
			Meaning: "the longest time between two look-ups. After a failure the next try comes after 1s, " +
				"doubling up to `refresh`.",
		},
		"pools.discovery.dns.resolver": {
			Type: "`ip:port`", Note: "(the system's)",
			Meaning: "the DNS server to ask, by IP address (e.g. `\"10.0.0.2:53\"`). `\"\"` asks the " +
				"`nameserver`s of `/etc/resolv.conf` in turn, read again before every look-up.",
		},
		"pools.discovery.etcd.endpoints": {
			Type: "list of `host:port` or `http(s)://host:port`", Default: required,
			Meaning: "the etcd servers.",
		},
		"pools.discovery.etcd.prefix": {
			Type: "string ending in `/`", Default: required,
			Meaning: "each key under it is one backend; its value is JSON " +
				"`{\"address\": \"http://10.0.0.5:8080\", \"weight\": 1}` (`weight` 1–1000, default 1; other " +
				"fields are ignored). Keys under `PREFIX_fleet/` hold the " +
				"[fleet-wide admin state](fleet.md#fleet-wide-admin-actions) instead.",
		},
		"pools.discovery.etcd.username": {
			Meaning: "etcd user; with `password_file`.",
		},
		"pools.discovery.etcd.password_file": {
			Type:    "file",
			Meaning: "a file whose first line is the user's password.",
		},
		"pools.discovery.etcd.tls": {
			Note:    "(plain connections)",
			Meaning: "TLS to etcd, below.",
		},
		"pools.discovery.etcd.tls.ca": {
			Type: "file", Note: "(system roots)",
			Meaning: "PEM file of the CAs that sign etcd's certificate.",
		},
		"pools.discovery.etcd.tls.cert": {
			Type: "file", Note: "(no client certificate)",
			Meaning: "PEM file of a client certificate, for an etcd that asks for one; with `key`.",
		},
		"pools.discovery.etcd.tls.key": {
			Type:    "file",
			Meaning: "its private key; with `cert`.",
		},
		"pools.health_check.type": {
			Type: "`http` | `tcp` | `grpc`", Note: "(`tcp` when every backend is `tcp://`)",
			Meaning: "`http` sends `GET path`; `tcp` only connects; `grpc` calls `grpc.health.v1.Health/Check` " +
				"and passes on `SERVING` (the pool needs `upstream_http2: true`).",
		},
		"pools.health_check.path": {
			Type:    "string starting with `/`",
			Meaning: "the path checked. Not with `grpc`.",
		},
		"pools.health_check.interval": {
			Type:    "duration > 0",
			Meaning: "time between checks of one backend.",
		},
		"pools.health_check.timeout": {
			Type:    "duration, > 0 and ≤ `interval`",
			Meaning: "a check slower than this fails.",
		},
		"pools.health_check.healthy_threshold": {
			Type:    "integer ≥ 1",
			Meaning: "consecutive passes for an unhealthy backend to become healthy (rise).",
		},
		"pools.health_check.unhealthy_threshold": {
			Type:    "integer ≥ 1",
			Meaning: "consecutive failures for a healthy backend to become unhealthy (fall).",
		},
		"pools.health_check.expect_status": {
			Type:    "`\"NNN\"` or `\"NNN-NNN\"`, within 100–599",
			Meaning: "statuses that count as a pass. Not with `grpc`.",
		},
		"pools.health_check.host": {
			Note:    "(the backend's host)",
			Meaning: "the `Host` header (`:authority` for `grpc`) of checks.",
		},
		"pools.health_check.service": {
			Note:    "(the backend as a whole)",
			Meaning: "`grpc` only: the service name the check asks about, e.g. `shop.v1.Cart`.",
		},
		"pools.passive_health.consecutive_failures": {
			Type:    "integer ≥ 1",
			Meaning: "consecutive failed requests that eject a backend.",
		},
		"pools.passive_health.ejection_time": {
			Type: "duration > 0",
			Meaning: "how long an ejection lasts: `ejection_time` × the number of times in a row the backend " +
				"was ejected (at most 10×); each `ejection_time` a backend stays in lowers that count by " +
				"one. A passing active check also ends an ejection.",
		},
		"pools.passive_health.max_ejection_percent": {
			Type:    "integer 0–100",
			Meaning: "at most this share of a pool's backends is ejected at once.",
		},
		"pools.retries.num_retries": {
			Type:    "integer 0–10",
			Meaning: "tries after the first; `0` turns retries off.",
		},
		"pools.retries.retry_on": {
			Meaning: "what is retried: `connect_failure`, `reset` (connection reset before a response), " +
				"`timeout`, and response statuses written as strings from `\"500\"` to `\"599\"` (`\"502\"`). " +
				"`[]` retries nothing. A pool of `tcp://` backends retries only a failed connect " +
				"(before any byte was relayed): other values written there are errors.",
		},
		"pools.retries.budget_percent": {
			Type: "integer 0–100",
			Meaning: "retries may add at most this share of the pool's requests over the last ten seconds (at " +
				"least 3 retries are always allowed), so a failing pool is not hit by a retry storm.",
		},
		"pools.retries.backoff_base": {
			Type: "duration ≥ 0",
			Meaning: "the wait before a retry after a reset, timeout or retryable status is drawn at random " +
				"(full jitter) from (0, `backoff_base` × 2^(retry−1)] …",
		},
		"pools.retries.backoff_max": {
			Type:    "duration ≥ `backoff_base`",
			Meaning: "… capped at `backoff_max`. A connection failure is retried at once.",
		},
		"pools.timeouts.connect": {
			Type:    "duration ≥ 0",
			Meaning: "establishing a connection to a backend.",
		},
		"pools.timeouts.response_header": {
			Type:    "duration ≥ 0",
			Meaning: "from sending the request to the response headers; over it → 504.",
		},
		"pools.timeouts.request": {
			Type:    "duration ≥ 0",
			Meaning: "the whole exchange, body included; over it → 504.",
		},
		"pools.timeouts.idle": {
			Type: "duration ≥ 0",
			Meaning: "how long an idle backend connection is kept for reuse. In a pool of `tcp://` backends: " +
				"a relayed connection on which no byte moved either way for the shorter of this and the " +
				"listener's `timeouts.idle` is closed (`0s` and `0s`: never). `response_header` and " +
				"`request` have no meaning there and are errors unless left at their defaults.",
		},
		"pools.sticky.cookie": {
			Type:    "cookie name",
			Meaning: "the cookie's name.",
		},
		"pools.sticky.ttl": {
			Type: "duration ≥ 0", Note: "(session cookie)",
			Meaning: "the cookie's `Max-Age`; `0s` sends none, so the cookie lasts until the browser closes.",
		},
		"pools.sticky.secret": {
			Note: "(a random key per process)",
			Meaning: "keys the HMAC that names a backend in the cookie. Give every sluice instance in front of " +
				"the same backends the same secret so their cookies agree; without one, cookies survive " +
				"reloads but not restarts.",
		},
		"pools.upstream_tls.insecure_skip_verify": {
			Meaning: "do not verify backend certificates.",
		},
		"pools.upstream_tls.ca": {
			Type: "file", Note: "(system roots)",
			Meaning: "PEM file of CA certificates to verify backends with; must exist and hold at least one " +
				"certificate.",
		},
		"pools.upstream_tls.server_name": {
			Note:    "(the backend's host)",
			Meaning: "the name sent in SNI and verified.",
		},
	}
}
