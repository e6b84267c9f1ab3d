# onnxprune developer and CI entry points. `make test` is self-contained: it
# installs onnxruntime (pinned, checksummed; see scripts/setup-onnxruntime.sh)
# before running the tests, because the runtime tests fail in CI without it.
GO ?= go

.PHONY: setup demo test vet bench fuzz-seed

setup:
	./scripts/setup-onnxruntime.sh
	@if [ -d cmd/onnxprune ]; then \
		echo "$(GO) build -o bin/onnxprune ./cmd/onnxprune"; \
		$(GO) build -o bin/onnxprune ./cmd/onnxprune; \
	fi

# The default demo: the embedded stories260K model and TinyStories text,
# no ../shared needed. Outputs go to demo/ (ignored by git).
DEMO_MODEL = testdata/models/stories260k_kv.onnx
DEMO_TEXT = testdata/text/tinystories_valid200.txt
demo: setup
	bin/onnxprune inspect $(DEMO_MODEL)
	bin/onnxprune calibrate $(DEMO_MODEL) --data $(DEMO_TEXT) --samples 64 --seq-len 256 -o demo/stats.json
	bin/onnxprune prune $(DEMO_MODEL) --remove 1 --stats demo/stats.json -o demo/pruned --force
	bin/onnxprune eval $(DEMO_MODEL) --data $(DEMO_TEXT) --samples 50 --seq-len 256
	bin/onnxprune eval demo/pruned/$(notdir $(DEMO_MODEL)) --data $(DEMO_TEXT) --samples 50 --seq-len 256
	@echo "demo: pruned model, plan and statistics are in demo/ (heatmap: demo/stats.svg)"

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
