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

.PHONY: all env build install demo test fmt clippy bench clean-demo
all: build

env:
	@scripts/torch-env.sh

build: env
	$(CARGO) build --profile $(PROFILE) -p fidshard -p fidshard-worker

# Installs both binaries into $(PREFIX)/bin (default ~/.local/bin). They keep working after the
# checkout is moved or deleted: the worker's RUNPATH is the real torch lib folder of the venv
# (~/.cache/fidshard/torch-2.11.0/...), not the .venv link in the checkout.
PREFIX ?= $(HOME)/.local
install: build
	install -d $(PREFIX)/bin
	install -m 755 target/$(PROFILE)/fidshard target/$(PROFILE)/fidshard-worker $(PREFIX)/bin/
	@echo "installed $(PREFIX)/bin/fidshard and $(PREFIX)/bin/fidshard-worker"

# The main job: configs/demo.yaml (a small DiT trained on handwritten digits, 2 CPU workers),
# then a picture of the 100 digits, 10 per class.
# A second `make demo` finds the job complete and exits at once; `make clean-demo` starts over.
demo: build
	$(BIN) run configs/demo.yaml
	$(BIN) status configs/demo.yaml
	$(BIN) grid configs/demo.yaml --n 100 --cols 10
	@echo "demo: $(DEMO_OUT)/samples.npz, $(DEMO_OUT)/samples/*.png and the picture $(DEMO_OUT)/grid.png"

test: env
	$(CARGO) test --profile $(PROFILE) --workspace --features fidshard/failpoints,fidshard-worker/failpoints --no-fail-fast

bench: build
	$(BIN) bench configs/demo.yaml

fmt:
	$(CARGO) fmt --all

clippy: env
	$(CARGO) clippy --profile $(PROFILE) --workspace --all-targets --features fidshard/failpoints,fidshard-worker/failpoints -- -D warnings

clean-demo:
	rm -rf $(DEMO_OUT)
