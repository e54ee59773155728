# skiff: `make demo` runs the walkthrough, `make test` runs every test. Both install what they
# need first (scripts/install-deps.sh) on a Debian 12 machine, as root.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps build release install lint fuzz test demo

all: build

deps:
	scripts/install-deps.sh

build:
	cargo build --workspace --bins

# The helpers skiffd starts for every container or pod are linked statically (static-pie):
# the monitor, because no libc.so mapped and paged in per process keeps an idle monitor under
# 1 MB RSS; skiff-oci and the CNI plugins, because an exec that loads no shared library starts
# 0.3-0.75 ms sooner here (see docs/BENCHMARKS.md). skiffd itself stays dynamic (it resolves
# registry names through NSS).
STATIC_HELPERS := skiff-monitor:skiff-monitor skiff-runtime:skiff-oci skiff-cni:skiff-bridge skiff-cni:skiff-portmap

release:
	cargo build --release --workspace --bins
	for helper in $(STATIC_HELPERS); do \
	  cargo rustc --release -p $${helper%%:*} --bin $${helper##*:} -- -C target-feature=+crt-static || exit 1; \
	done

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# Every cargo-fuzz target for FUZZ_SECONDS (default 20) each from its committed corpus;
# fails on any crash (scripts/fuzz.sh).
fuzz:
	scripts/fuzz.sh

# The end-to-end tests drive the built binaries (skiffd, skiff-oci, skiff-monitor…), so build
# them before nextest builds the test binaries.
test: deps lint fuzz
	cargo build --workspace --bins
	cargo nextest run --workspace --no-fail-fast

# Installs skiffd and its helpers (they must sit side by side) into /usr/local/bin, and the CNI
# plugins plus the default network (bridge skiff0, 10.77.0.0/16) unless a network config exists.
install: release
	install -m 0755 target/release/skiffd target/release/skiff-oci target/release/skiff-monitor /usr/local/bin/
	scripts/install-cni.sh target/release

# The walkthrough runs its own skiffd, registry and test network, so it works with or without
# the installed default network, and removes everything it made.
demo: deps install
	scripts/demo.sh
