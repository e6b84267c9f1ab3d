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

# The default demo: `onnxprune run` without a model prunes the bundled
# stories260K model (testdata/models), no ../shared needed: evaluate on the
# TinyStories validation slice, calibrate on the train slice (testdata/text),
# remove one block, heal it with LoRA (200 steps, about 40 s on 2 cores),
# evaluate again, benchmark. The report goes to demo/ (ignored by git):
# demo/report.md, report.json, quality.svg, stats.svg, the healed model in
# demo/healed/. A second `make demo` reuses every finished step.
# DEMO_HEAL picks the healing (lora, bridge or none); DEMO_FLAGS replaces the
# run options, e.g. make demo DEMO_HEAL=bridge DEMO_FLAGS=.
# lr 3e-3, not the thesis's 3e-4: a 260K-parameter model heals ten times
# faster with it (heal --help; issue notes).
DEMO_HEAL ?= lora
DEMO_FLAGS ?= --lora-steps 200 --lora-lr 3e-3 --runs 20
demo: setup
	bin/onnxprune run -o demo --remove 1 --heal $(DEMO_HEAL) $(DEMO_FLAGS)
	@echo "demo: the report is demo/report.md (numbers: demo/report.json; plots: demo/quality.svg, demo/stats.svg)"

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
