#!/usr/bin/env bash
# Installs what building and testing skiff needs on Debian 12: apt packages, a Rust toolchain,
# cargo-nextest and cargo-fuzz. Safe to run again: it only installs what is missing.
set -euo pipefail

APT_PACKAGES=(
  build-essential pkg-config libseccomp-dev   # building (libcontainer needs libseccomp)
  docker-registry skopeo umoci busybox-static # test images and a real registry
  nftables iproute2 containernetworking-plugins socat jq # pod networking and interop
  python3                                     # the monitor tests' fake TTY runtime
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
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
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# scripts/fuzz.sh: libFuzzer targets, built on the stable toolchain (it sets RUSTC_BOOTSTRAP).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
