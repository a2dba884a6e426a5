# The two set-up commands of the README:
#   make demo   installs what is missing, builds, samples configs/demo.yaml on CPU
#   make test   installs what is missing, builds, runs every test
# Both are idempotent; the second run reuses the torch venv and target/.
SHELL := /bin/bash
ROOT := $(CURDIR)
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(ROOT)/.venv/bin:$(PATH)
CARGO ?= cargo
PROFILE ?= release
BIN := target/$(PROFILE)/fidshard
DEMO_OUT ?= runs/demo

.PHONY: all env build demo test fmt clippy bench clean-demo
all: build

env:
	@scripts/torch-env.sh

build: env
	$(CARGO) build --profile $(PROFILE) -p fidshard

demo: build
	$(BIN) sample configs/demo.yaml --out $(DEMO_OUT)/samples
	@echo "demo images: $(DEMO_OUT)/samples"

test: env
	$(CARGO) test --profile $(PROFILE) --workspace --features fidshard/failpoints --no-fail-fast

bench: build
	$(BIN) bench configs/demo.yaml

fmt:
	$(CARGO) fmt --all

clippy: env
	$(CARGO) clippy --profile $(PROFILE) --workspace --all-targets -- -D warnings

clean-demo:
	rm -rf $(DEMO_OUT)
