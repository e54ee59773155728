#!/usr/bin/env bash
# Installs what building, running and testing skiff needs on Debian 12, as root. Safe to run
# again: it only installs what is missing.
#
#   scripts/install-deps.sh [demo|cluster|test]   (default: test)
#
#   demo     apt packages and a Rust toolchain: what `make demo` needs
#   cluster  demo + the Kubernetes programs built from Go modules (scripts/gotools.sh)
#   test     cluster + cargo-nextest, cargo-fuzz, clippy and rustfmt: what `make test` needs
set -euo pipefail

profile=${1:-test}
case $profile in
  demo | cluster | test) ;;
  *) echo "usage: $0 [demo|cluster|test]" >&2; exit 2 ;;
esac

APT_PACKAGES=(
  build-essential pkg-config libseccomp-dev   # building (libcontainer needs libseccomp)
  docker-registry skopeo umoci busybox-static # test images and a real registry
  nftables iproute2 containernetworking-plugins socat jq # pod networking and interop
  python3                                     # the monitor tests' fake TTY runtime
  curl ca-certificates                        # rustup, and readiness checks of the cluster
)
if [ "$profile" != demo ]; then
  APT_PACKAGES+=(
    openssl                                   # the cluster's certificates
    conntrack                                 # kube-proxy clears stale UDP flows with it
    libpcre2-8-0 libssl3 zlib1g libcrypt1     # the libraries of the nginx image's nginx
    libapr1 libaprutil1                       # ... of critest's httpd image (Debian's Apache)
    procps util-linux                         # pgrep and ipcs in critest's busybox image
  )
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (an unattended upgrade, a second terminal) may hold the dpkg lock: wait
  # for it up to five minutes instead of failing at once.
  apt_wait=(-o DPkg::Lock::Timeout=300)
  if command -v fuser >/dev/null && fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; then
    echo "waiting for another apt/dpkg run to finish (up to 5 minutes)"
  fi
  apt-get "${apt_wait[@]}" update -qq
  apt-get "${apt_wait[@]}" install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a registry on :5000; skiff's tests and demo start
# their own on free loopback ports, so the system one is not needed.
if systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

if [ "$profile" = demo ]; then
  exit 0
fi
# The Kubernetes programs (kubelet, control plane, kube-proxy, kubectl), etcd, CoreDNS, crictl
# and critest, from the Go module proxy into a versioned cache (a no-op once built).
command -v go >/dev/null 2>&1 || { echo "Go 1.26 is needed (the Kubernetes tools are built from Go modules)" >&2; exit 1; }
"$(dirname "$0")/gotools.sh" >/dev/null

if [ "$profile" = cluster ]; then
  exit 0
fi
for component in clippy rustfmt; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "installing $component"
    rustup component add "$component"
  fi
done
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# scripts/fuzz.sh: libFuzzer targets, built on the stable toolchain (it sets RUSTC_BOOTSTRAP).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
