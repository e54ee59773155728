#!/usr/bin/env bash
# Builds the Go programs skiff's cluster and tests run (Kubernetes, etcd, CoreDNS, crictl and
# critest) from the Go module proxy, at the versions pinned by the wrapper modules in
# scripts/gotools/<group>/go.mod, into a versioned cache outside the repository:
#
#   $SKIFF_GOTOOLS (default /var/cache/skiff/gotools)/<group>-<version>-<key>/   the binaries
#   $SKIFF_GOTOOLS/bin/                                                          links to them
#
# <key> hashes the Go version, the group's go.mod/go.sum/*.go and its build recipe below, so a
# group is rebuilt only when one of those changes; the group's older builds are then removed.
# The Go module and build caches stay where Go keeps them (go env GOMODCACHE GOCACHE).
#
# Usage: scripts/gotools.sh [GROUP...]   (default: every group; prints the bin directory)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SKIFF_GOTOOLS:-/var/cache/skiff/gotools}
GROUPS_ALL=(kubernetes etcd coredns cri-tools)
# Static binaries: nothing here needs cgo, and no C compiler runs.
export CGO_ENABLED=0
# A new machine's Go may default to fetching toolchains; the pins here are all for go1.26.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# The version a wrapper module requires of a module (read from its go.mod).
pinned() { (cd "$HERE/gotools/$1" && go list -m -f '{{.Version}}' "$2"); }

# Each recipe builds its group into the directory $1, from inside the group's module.
recipe_kubernetes() {
  local v; v=$(pinned kubernetes k8s.io/kubernetes)
  local major=${v#v}; major=${major%%.*}
  local minor=${v#v"$major".}; minor=${minor%%.*}
  local x="" pkg
  # What Kubernetes' own build stamps in, so `kubectl version` and the Node report the release.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "-s -w$x" -o "$1/" tool
}
recipe_etcd() {
  go build -trimpath -ldflags "-s -w" -o "$1/etcd" .
}
recipe_coredns() {
  go build -trimpath -ldflags "-s -w" -o "$1/" tool
}
recipe_cri_tools() {
  local v; v=$(pinned cri-tools sigs.k8s.io/cri-tools)
  local x="-X sigs.k8s.io/cri-tools/pkg/version.Version=$v"
  go build -trimpath -ldflags "-s -w $x" -o "$1/" tool
  go test -c -trimpath -ldflags "-s -w $x" -o "$1/critest" sigs.k8s.io/cri-tools/cmd/critest
}

ensure() {
  local group=$1 dir="$HERE/gotools/$1" recipe="recipe_${1//-/_}"
  local version
  case $group in
    kubernetes) version=$(pinned kubernetes k8s.io/kubernetes) ;;
    etcd) version=$(pinned etcd go.etcd.io/etcd/server/v3) ;;
    coredns) version=$(pinned coredns github.com/coredns/coredns) ;;
    cri-tools) version=$(pinned cri-tools sigs.k8s.io/cri-tools) ;;
    *) echo "gotools: unknown group $group (one of: ${GROUPS_ALL[*]})" >&2; return 2 ;;
  esac
  local key
  key=$({ go version; declare -f "$recipe" pinned; cat "$dir"/go.mod "$dir"/go.sum; cat "$dir"/*.go 2>/dev/null || true; } |
    sha256sum | cut -c1-12)
  local out="$CACHE/$group-$version-$key"
  if [ ! -e "$out/.complete" ]; then
    echo "gotools: building $group $version into $out" >&2
    local start=$SECONDS
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp"
    (cd "$dir" && "$recipe" "$out.tmp")
    touch "$out.tmp/.complete"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    echo "gotools: $group $version built in $((SECONDS - start)) s" >&2
    # Older builds of this group are no longer linked from bin/.
    local old
    for old in "$CACHE/$group"-*; do
      [ "$old" = "$out" ] || rm -rf "$old"
    done
  fi
  local bin
  for bin in "$out"/*; do
    ln -sfn "$bin" "$CACHE/bin/$(basename "$bin")"
  done
}

command -v go >/dev/null || { echo "gotools: Go is not installed (Go 1.26 is needed)" >&2; exit 1; }
mkdir -p "$CACHE/bin"
[ $# -gt 0 ] || set -- "${GROUPS_ALL[@]}"
for group in "$@"; do
  ensure "$group"
done
echo "$CACHE/bin"
