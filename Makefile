# The one test command (README and .ci/run call exactly this).
# Unit and end-to-end tests under the race detector, vet, and each native
# fuzz target for a bounded time.
GO      ?= go
FUZZTIME ?= 10s

.PHONY: test vet unit fuzz build bench

test: vet fuzz unit

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# The end-to-end suite runs once per engine: the HTTP/1.1 engine (the
# default) with everything else, then the net/http codec (engine: std).
unit:
	$(GO) test -race -count=1 -timeout 15m ./...
	SLUICE_E2E_ENGINE=std $(GO) test -race -count=1 -timeout 15m ./internal/e2e/

# Each fuzz target runs for FUZZTIME on top of its seed corpus (which the
# unit run already executes).
fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs grep -H '^func Fuzz' | sed -E 's|^\./([^:]*)/[^/:]*:func (Fuzz[A-Za-z0-9_]*).*|\1:\2|' | sort -u); do \
		pkg=$${spec%%:*}; fn=$${spec##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg >/dev/null || { $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg; exit 1; }; \
	done

build:
	$(GO) build -o bin/sluice ./cmd/sluice

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
