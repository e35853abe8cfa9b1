# The one test command (README and .ci/run call exactly this).
# Unit and end-to-end tests under the race detector, vet, and each native
# fuzz target for a bounded time.
GO      ?= go
FUZZTIME ?= 10s

.PHONY: test vet unit fuzz build bench man completion docs

test: vet fuzz unit

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# The end-to-end suite runs once per engine: the default (engine: loop on
# HTTP/1.1 listeners without proxy_protocol, h1 on the others) with
# everything else, then the net/http codec (engine: std), then the
# goroutine engine everywhere (engine: h1), beside the engine's own tests
# on event loops, in the clear and over TLS, and the HTTP/2 server's on
# event loops.
unit:
	$(GO) test -race -count=1 -timeout 15m ./...
	SLUICE_E2E_ENGINE=std $(GO) test -race -count=1 -timeout 15m ./internal/e2e/
	SLUICE_E2E_ENGINE=h1 SLUICE_H1_ENGINE=loop $(GO) test -race -count=1 -timeout 15m ./internal/e2e/ ./internal/proxy/h1/
	SLUICE_H1_ENGINE=loop SLUICE_H1_TLS=1 $(GO) test -race -count=1 -timeout 15m ./internal/proxy/h1/
	SLUICE_H2_LOOP=1 $(GO) test -race -count=1 -timeout 15m ./internal/proxy/h2/

# Each fuzz target runs for FUZZTIME on top of its seed corpus (which the
# unit run already executes); .ci/fuzz says how a failure is reported.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) .ci/fuzz

# make build stamps the version (the latest tag, else "dev") and the commit
# ("-dirty" when the tree has changes); `sluice version` prints them. It
# builds without cgo: a static binary, which neither loads nor maps libc and
# the dynamic loader (1-2 MiB less resident memory; sluice calls no C, and
# Go's own DNS resolver is the one it uses on Linux anyway).
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/sluice ./cmd/sluice

# The manual page and the completion scripts, generated from the same flag
# definitions as -h. Install: bin/sluice.1 to /usr/local/share/man/man1/,
# the scripts as docs/cli.md says.
man: build
	bin/sluice man > bin/sluice.1

completion: build
	mkdir -p bin/completion
	bin/sluice completion bash > bin/completion/sluice.bash
	bin/sluice completion zsh > bin/completion/_sluice
	bin/sluice completion fish > bin/completion/sluice.fish

# The generated parts of docs/: docs/cli.md (from the command table) and the
# reference tables of docs/config.md (from the config types, ApplyDefaults
# and config.KeyDocs). Run it after changing a flag or a config key, and
# after a merge that touched either (take either side of a conflict inside
# a generated table, then run it). `make test` fails while they are stale.
docs:
	$(GO) test -count=1 -run '^(TestCLIReference|TestConfigReference)$$' ./cmd/sluice -update

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

# h2spec against a TLS and an h2c listener of each HTTP/2 server (TestH2Spec
# names their engines itself; the unit run includes it). Needs h2spec on PATH: .ci/run installs it.
.PHONY: h2spec
h2spec:
	$(GO) test -count=1 -run '^TestH2Spec$$' -v ./internal/e2e/
