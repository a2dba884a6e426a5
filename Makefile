# The two set-up commands of the README:
#   make demo   installs what is missing, builds, samples configs/demo.yaml on CPU
#   make test   installs what is missing, builds, runs every test
# Both are idempotent; the second run reuses the torch venv and target/.
#
# Build once. `make demo`, `make test`, `make bench` and `make clippy` all use ONE feature set,
# the one the tests need (the failpoints of core/src/faults.rs compiled in; they do nothing
# unless FAILPOINTS is set): `make demo && make test && make demo` compiles the binaries once,
# the test build compiles only test code and the second demo compiles nothing (measured in
# docs/performance.md, "Build"). When demo built without failpoints and test with them, each
# rebuilt fidshard-core, fidshard and fidshard-worker (3.5 minutes on 2 cores every switch).
# The other choice, a separate target dir or profile for the failpoint build, compiles every
# dependency twice (the 8 CPU-minutes of the first build again).
# What ships has no failpoints: `make dist` (and `make install`, which installs from dist/)
# builds without the feature in the same target dir and profile. Only fidshard-core, fidshard
# and fidshard-worker compile again, once (about 2 minutes): cargo keeps both feature sets'
# artifacts side by side in target/release/deps, and switching back only links them again.
SHELL := /bin/bash
ROOT := $(CURDIR)
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(ROOT)/.venv/bin:$(PATH)
CARGO ?= cargo
PROFILE ?= release
# cargo's target dir (CARGO_TARGET_DIR is honoured, as cargo does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
FEATURES := --features fidshard/failpoints,fidshard-worker/failpoints
BIN := $(TARGET_DIR)/$(PROFILE)/fidshard
DEMO_OUT ?= runs/demo
DIST ?= dist

.PHONY: all env build install dist wheel dist-check demo test fmt clippy bench clean-demo
all: build

env:
	@scripts/torch-env.sh

# The binaries the demo and the tests run (target/release/, with failpoints, see above).
build: env
	$(CARGO) build --profile $(PROFILE) -p fidshard -p fidshard-worker $(FEATURES)

# The shippable binaries: built without failpoints, debug info stripped, into dist/ (about
# 15 MiB together), and beside them, under dist/share/ as they install, the shell completions
# (bash, zsh, fish) and the manual pages that `fidshard` itself writes. fidshard needs nothing but libc; fidshard-worker needs libtorch 2.11.0: the
# venv's torch/lib through the RUNPATH set at build time, or any torch 2.11.0's lib/ on
# LD_LIBRARY_PATH (a GPU node with its own torch, scripts/gpu-check.sh).
# Then the packages of those binaries for people who do not build (scripts/package.sh): the pip
# wheel and a tarball, into wheelhouse/, the worker finding the torch of the environment it is
# installed in. Without PyPI (the packaging tools come from there) they are skipped with a
# message; `make wheel` insists.
WHEELHOUSE ?= wheelhouse
dist: env
	$(CARGO) build --profile $(PROFILE) -p fidshard -p fidshard-worker
	rm -rf $(DIST) && mkdir -p $(DIST)
	for b in fidshard fidshard-worker; do \
	  objcopy --strip-debug $(TARGET_DIR)/$(PROFILE)/$$b $(DIST)/$$b || exit 1; \
	done
	mkdir -p $(DIST)/share/bash-completion/completions $(DIST)/share/zsh/site-functions \
	  $(DIST)/share/fish/vendor_completions.d
	$(DIST)/fidshard completions bash > $(DIST)/share/bash-completion/completions/fidshard
	$(DIST)/fidshard completions zsh > $(DIST)/share/zsh/site-functions/_fidshard
	$(DIST)/fidshard completions fish > $(DIST)/share/fish/vendor_completions.d/fidshard.fish
	$(DIST)/fidshard man --out $(DIST)/share/man/man1 > /dev/null
	@du -ch $(DIST)/* | tail -1 | sed 's|total|$(DIST)/, stripped, no failpoints|'
	scripts/package.sh $(DIST) $(WHEELHOUSE) || [ $$? -eq 3 ]

wheel: dist
	@ls $(WHEELHOUSE)/fidshard-*.whl 2>/dev/null || { echo "make wheel: no wheel in $(WHEELHOUSE)/ (see the message above)" >&2; exit 1; }

dist-check: dist
	scripts/dist-check.sh $(DIST)

# Installs both binaries from dist/ into $(PREFIX)/bin (default ~/.local/bin), and the
# completions and manual pages of dist/share/ into $(PREFIX)/share (bash-completion/completions,
# zsh/site-functions, fish/vendor_completions.d, man/man1). They keep working after the checkout
# is moved or deleted: the worker's RUNPATH is the real torch lib folder of the venv
# (~/.cache/fidshard/torch-2.11.0/...), not the .venv link in the checkout.
PREFIX ?= $(HOME)/.local
install: dist
	install -d $(PREFIX)/bin
	install -m 755 $(DIST)/fidshard $(DIST)/fidshard-worker $(PREFIX)/bin/
	for f in $$(cd $(DIST) && find share -type f); do \
	  install -D -m 644 $(DIST)/$$f $(PREFIX)/$$f || exit 1; \
	done
	@echo "installed $(PREFIX)/bin/fidshard and $(PREFIX)/bin/fidshard-worker, completions and man pages in $(PREFIX)/share"

# The main job: configs/demo.yaml (a small DiT trained on handwritten digits, 2 CPU workers),
# then a picture of the 100 digits, 10 per class.
# A second `make demo` finds the job complete and exits at once; `make clean-demo` starts over.
demo: build
	$(BIN) run configs/demo.yaml
	$(BIN) status configs/demo.yaml
	$(BIN) grid configs/demo.yaml --n 100 --cols 10
	@echo "demo: $(DEMO_OUT)/samples.npz, $(DEMO_OUT)/samples/*.png and the picture $(DEMO_OUT)/grid.png"

# First the structure rules of docs/architecture.md (import circles, layers, verbs), in a second.
test: env
	python3 scripts/check-layers.py .
	$(CARGO) test --profile $(PROFILE) --workspace $(FEATURES) --no-fail-fast

bench: build
	$(BIN) bench configs/demo.yaml

fmt:
	$(CARGO) fmt --all

clippy: env
	$(CARGO) clippy --profile $(PROFILE) --workspace --all-targets $(FEATURES) -- -D warnings

clean-demo:
	rm -rf $(DEMO_OUT)
