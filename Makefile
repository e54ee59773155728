# skiff: `make demo` runs the walkthrough, `make demo-cluster` the same story on a real
# Kubernetes node, `make test` runs every test. Each installs what it needs first
# (scripts/install-deps.sh) on a Debian 12 machine, as root.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps deps-demo deps-cluster build release install lint fuzz test demo cluster cluster-down demo-cluster

all: build

deps:
	scripts/install-deps.sh test

deps-demo:
	scripts/install-deps.sh demo

# Also builds the Kubernetes programs from their Go modules (scripts/gotools.sh, cached).
deps-cluster:
	scripts/install-deps.sh cluster

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
demo: deps-demo install
	scripts/demo.sh

# A one-node cluster (etcd, the control plane, the kubelet, kube-proxy, CoreDNS) on skiff;
# prints the KUBECONFIG to export. `make cluster-down` removes all of it.
cluster: deps-cluster release
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

# The seed's demos with kubectl on that cluster, then the cluster is taken down.
demo-cluster: deps-cluster release
	scripts/demo-cluster.sh
