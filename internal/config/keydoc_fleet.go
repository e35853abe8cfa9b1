package config

// fleetKeyDocs describes the keys of rate limits (a listener's and a
// route's rate_limit, rate_limit_store) and of a pool's load_report (see
// KeyDoc).
func fleetKeyDocs() map[string]KeyDoc {
	docs := map[string]KeyDoc{
		"listeners.rate_limit": {
			Type: "[block](#rate_limit)", Note: "(no limit)",
			Meaning: "a token bucket per key for every request of the listener, matched by a route or " +
				"not; over it → 429. On a tcp listener it counts new connections by client (`key` " +
				"`client_ip` only), and one over it is closed; see [tcp.md](tcp.md).",
		},
		"listeners.routes.rate_limit": {
			Type: "[block](#rate_limit)", Note: "(no limit)",
			Meaning: "a token bucket per key for the requests this route matches, applied after the " +
				"listener's own; over it → 429. On a tcp listener, connections by client, as the " +
				"listener's.",
		},
		"rate_limit_store": {
			Type: "[block](#rate_limit_store)", Note: "(each instance counts alone)",
			Meaning: "where the [rate limits](#rate_limit) of every sluice instance count together.",
		},
		"rate_limit_store.redis": {
			Default: required,
			Meaning: "a Redis server (5 or later) where every instance's rate limits count together, one " +
				"atomic script call per decision.",
		},
		"rate_limit_store.redis.address": {
			Type: "`host:port`", Default: required,
			Meaning: "the Redis server.",
		},
		"rate_limit_store.redis.password_file": {
			Type: "file", Note: "(no password)",
			Meaning: "a file holding the password (`AUTH`), read at start-up and at each reload; must not " +
				"be empty.",
		},
		"rate_limit_store.redis.prefix": {
			Meaning: "starts every key sluice writes: `PREFIX` + the limit's `name` + `:` + the key.",
		},
		"rate_limit_store.redis.timeout": {
			Type: "duration, > 0 and ≤ `5s`",
			Meaning: "bounds each call to Redis, connecting included; past it the request is counted by " +
				"the instance alone.",
		},
		"pools.load_report": {
			Type: "[block](#load_report)", Note: "(off)",
			Meaning: "backends report their own load: in a response field (ORCA) that `p2c` and " +
				"`least_requests` weigh, and on an agent port asked with the health checks.",
		},
		"pools.load_report.header": {
			Type: "header name, or `\"\"`",
			Meaning: "the response field holding an ORCA report in its text form, `TEXT " +
				"cpu_utilization=0.8, mem_utilization=0.3` (or `JSON {\"cpu_utilization\": 0.8}`). sluice " +
				"takes `application_utilization` when above 0, else `cpu_utilization`, and removes the " +
				"field from the response the client gets. Only with `balance: p2c` or `least_requests`, " +
				"which weigh it; `\"\"` reads no field (an agent only).",
		},
		"pools.load_report.agent_port": {
			Type: "integer 0–65535", Note: "(no agent)",
			Meaning: "the TCP port of each backend's agent, on the backend's host, asked at every active " +
				"check (it needs a `health_check`; `type: tcp` checks only the port). The agent answers " +
				"one line in HAProxy's agent-check protocol: `up`, `down` (also `fail`, `stopped`), " +
				"`drain`, `maint`, `ready`, a weight percentage (`75%` of the configured weight; `0%` " +
				"drains), `cpu_utilization=0.8`; words separated by spaces or commas, `#` starts a " +
				"description.",
		},
	}
	for _, p := range []struct{ path, name string }{
		{"listeners.rate_limit", "the listener's name"},
		{"listeners.routes.rate_limit", "`LISTENER.routes[N]`"},
	} {
		for k, d := range rateLimitKeyDocs(p.name) {
			docs[p.path+"."+k] = d
		}
	}
	return docs
}

// rateLimitKeyDocs describes the keys of a rate_limit block, whose name
// defaults to defaultName.
func rateLimitKeyDocs(defaultName string) map[string]KeyDoc {
	return map[string]KeyDoc{
		"key": {
			Type: "`client_ip` | `path` | `header:NAME` | `cookie:NAME` | `query:NAME`",
			Meaning: "what the limit counts by, as `hash_key`. `client_ip` is the client's address after " +
				"`trusted_proxies`. Requests that lack the key (no such header) share one bucket.",
		},
		"rate": {
			Type: "integer ≥ 1", Default: required,
			Meaning: "tokens added per `per`.",
		},
		"per": {
			Type: "duration > 0",
			Meaning: "the period of `rate`: `rate: 1000, per: 1h` is 1000 an hour. `per` / `rate` must be " +
				"at least 1µs.",
		},
		"burst": {
			Type: "integer ≥ 1", Default: "`rate`",
			Meaning: "the most a bucket holds: requests a key may send at once. `burst` × `per` / `rate` " +
				"(the time an empty bucket takes to fill) must be at most 366 days.",
		},
		"name": {
			Type: "printable ASCII, no `\"` or `\\`", Default: defaultName,
			Meaning: "names the limit in the `RateLimit-Policy` and `RateLimit` fields and in the shared " +
				"store's keys. Unique across the file.",
		},
		"max_keys": {
			Type: "integer 1–16777216",
			Meaning: "keys counted apart in each instance's memory (16 bytes each, rounded up to a power " +
				"of two). Keys whose bucket is full again make room for new ones; when more keys than " +
				"this are being limited at once, a new key takes the place of the one nearest full.",
		},
	}
}
