# onnxprune developer and CI entry points. `make test` is self-contained: it
# installs onnxruntime (pinned, checksummed; see scripts/setup-onnxruntime.sh)
# before running the tests, because the runtime tests fail in CI without it.
GO ?= go

.PHONY: setup test vet bench fuzz-seed

setup:
	./scripts/setup-onnxruntime.sh
	@if [ -d cmd/onnxprune ]; then \
		echo "$(GO) build -o bin/onnxprune ./cmd/onnxprune"; \
		$(GO) build -o bin/onnxprune ./cmd/onnxprune; \
	fi

test: setup
	$(GO) test ./...

vet:
	$(GO) vet ./...

bench: setup
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Runs every fuzz target on its seed corpus only (what `go test` does for
# Fuzz functions without -fuzz); use `go test -fuzz=FuzzX ./pkg` to explore.
fuzz-seed:
	$(GO) test -run '^Fuzz' ./...
