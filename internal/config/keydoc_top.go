package config

// topKeyDocs describes the keys of the top level and the admin, access_log, tracing and log blocks (see KeyDoc).
func topKeyDocs() map[string]KeyDoc {
	return map[string]KeyDoc{
		"admin": {
			Type:    "[admin](#admin)",
			Meaning: "the admin API, metrics and dashboard.",
		},
		"access_log": {
			Type:    "[access_log](#access_log)",
			Meaning: "the per-request log.",
		},
		"tracing": {
			Type: "[tracing](#tracing)", Note: "(off)",
			Meaning: "OpenTelemetry: one span per request, exported over OTLP.",
		},
		"log": {
			Type:    "[log](#log)",
			Meaning: "the process log.",
		},
		"shutdown_delay": {
			Type: "duration ≥ 0",
			Meaning: "on SIGTERM/SIGINT, `/readyz` turns 503 at once and sluice keeps accepting for this long, " +
				"so a front load balancer can notice.",
		},
		"shutdown_timeout": {
			Type: "duration ≥ 0",
			Meaning: "how long requests in flight get to finish during shutdown. After an upgrade " +
				"(SIGUSR2) the old process's WebSockets get it too, ending with a close frame just " +
				"before it; on SIGTERM they get a close frame at once. See " +
				"[operations.md](operations.md#upgrade).",
		},
		"event_loops": {
			Type: "int 0–1024", Note: "(one per CPU)",
			Meaning: "how many event loops serve the listeners with `engine: loop`, shared by all of them " +
				"(HAProxy's `nbthread`, Envoy's `--concurrency`). Each loop is one busy thread at most, and each " +
				"client connection stays on the loop that accepted it. Fewer loops than CPUs leave CPUs to the " +
				"rest of the machine, and cost less per request under light load (more events per wake-up); " +
				"more use every CPU under heavy load. Read when the loops are made (at start, or at the " +
				"reload that brings the first `engine: loop` listener); once they run, a reload that " +
				"changes it says so and keeps them, and the next restart or upgrade (SIGUSR2) applies it.",
		},
		"admin.address": {
			Type:    "`host:port`",
			Meaning: "where the admin API, `/metrics` and the dashboard listen.",
		},
		"admin.token_file": {
			Type: "file",
			Meaning: "a file holding the bearer token for the admin API; must exist and not be empty. " +
				"**Required when `address` is not loopback** (127.0.0.0/8, `::1`, `localhost`; `\":9090\"` " +
				"listens on every interface, so it is not loopback).",
		},
		"admin.state_file": {
			Type: "file", Note: "(none)",
			Meaning: "where the changes made through the admin API (backends added, removed, drained, " +
				"disabled, enabled, re-weighted) are kept. Each change is written to it atomically (mode " +
				"0600) before the API call returns, and the file is applied on top of the config at every " +
				"start and reload, so runtime changes survive both. Its directory must exist; the file is " +
				"created by the first change. Without it, API changes last until the next reload. Format, " +
				"stale entries and backups: " +
				"[operations.md](operations.md#runtime-changes-and-the-state-file).",
		},
		"access_log.path": {
			Meaning: "`stdout`, `stderr` or a file path (appended to). Every reload (SIGHUP, `POST " +
				"/api/v1/reload`) reopens the file, so logrotate can rename it and signal sluice.",
		},
		"access_log.format": {
			Type:    "`json` | `combined` | `off`",
			Meaning: "one JSON object per request, the Apache/NGINX combined format, or no access log.",
		},
		"tracing.otlp_endpoint": {
			Type:    "`host:port`",
			Default: "`\"127.0.0.1:4317\"` (`\"127.0.0.1:4318\"` with `protocol: http`)",
			Meaning: "the OpenTelemetry collector (or agent) receiving spans, in plain text (no TLS): keep it " +
				"on the same host or network. No scheme and no path.",
		},
		"tracing.protocol": {
			Type: "`grpc` | `http`",
			Meaning: "OTLP over gRPC, or OTLP/HTTP with protobuf bodies `POST`ed to `/v1/traces` on the " +
				"endpoint.",
		},
		"tracing.sample_ratio": {
			Type: "number 0 to 1",
			Meaning: "the share of requests *without a sampled parent* that are recorded (by trace id, so " +
				"every instance of a fleet agrees). The client's decision wins: a `traceparent` with the " +
				"sampled flag is always recorded, one without it never. `0` records only requests whose " +
				"parent is sampled; `1` every request.",
		},
		"tracing.service_name": {
			Meaning: "the spans' `service.name` resource attribute.",
		},
		"log.level": {
			Type:    "`debug` | `info` | `warn` | `error`",
			Meaning: "the least severe level written.",
		},
		"log.format": {
			Type:    "`text` | `json`",
			Meaning: "the process log's format, on stderr.",
		},
	}
}
