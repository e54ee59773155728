#!/usr/bin/env bash
# Installs skiff's CNI plugins, skiff-bridge and skiff-portmap, into the CNI bin dir, and the
# default network config (cni-bridge/10-skiff.conflist) into the CNI conf dir unless a network
# config is already there: skiffd, like containerd and CRI-O, uses the first config by name, so
# an existing one is left in charge.
#
#   scripts/install-cni.sh [DIR]   # DIR holds the built plugins (default: target/release)
#
# SKIFF_CNI_BIN_DIR (default /opt/cni/bin) and SKIFF_CNI_CONF_DIR (default /etc/cni/net.d)
# override the destinations. The default network: bridge skiff0, pods in 10.77.0.0/16 (beside
# containerd's/podman's 10.88.0.0/16 and CRI-O's 10.85.0.0/16), masquerade, hairpin, host ports.
# It says cniVersion 1.0.0 for runtimes whose libcni stops there (containerd 1.6) and offers
# 1.1.0 through cniVersions (STATUS and GC) to those that know it, skiffd included.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=${1:-$repo/target/release}
bin_dir=${SKIFF_CNI_BIN_DIR:-/opt/cni/bin}
conf_dir=${SKIFF_CNI_CONF_DIR:-/etc/cni/net.d}
plugins=(skiff-bridge skiff-portmap)

for plugin in "${plugins[@]}"; do
  if [ ! -x "$src/$plugin" ]; then
    echo "install-cni: $src/$plugin not found; build it first (cargo build --release -p skiff-cni)" >&2
    exit 1
  fi
done

install -d -m 0755 "$bin_dir"
for plugin in "${plugins[@]}"; do
  # Copy then rename: a runtime exec'ing the plugin meanwhile sees the old or the new file,
  # never a partial one (and a running binary cannot be overwritten in place).
  install -m 0755 "$src/$plugin" "$bin_dir/.$plugin.new"
  mv -f "$bin_dir/.$plugin.new" "$bin_dir/$plugin"
  echo "installed $bin_dir/$plugin"
done

install -d -m 0755 "$conf_dir"
existing=$(find "$conf_dir" -maxdepth 1 -type f \
  \( -name '*.conflist' -o -name '*.conf' -o -name '*.json' \) | LC_ALL=C sort | head -n 1)
if [ -n "$existing" ]; then
  echo "kept the existing network config $existing"
else
  install -m 0644 "$repo/cni-bridge/10-skiff.conflist" "$conf_dir/10-skiff.conflist"
  echo "installed $conf_dir/10-skiff.conflist (network skiff, bridge skiff0, 10.77.0.0/16)"
fi
