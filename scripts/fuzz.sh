#!/usr/bin/env bash
# Builds every cargo-fuzz target and fuzzes each for FUZZ_SECONDS (default 20) from its
# committed seed corpus; fails if any target crashes, hangs or runs out of memory. `make test`
# runs it, so CI fuzzes every submission for a bounded time.
#
# The committed corpus is copied first: what the fuzzer grows stays out of the repository.
# A crashing input is kept in <crate>/fuzz/artifacts/<target>/ (git-ignored); replay it with
#   <build directory>/x86_64-unknown-linux-gnu/release/<target> <crate>/fuzz/artifacts/<target>/<file>
#
# Settings (environment):
#   FUZZ_SECONDS     fuzzing time per target (default 20)
#   FUZZ_TARGETS     only these targets, e.g. "netconf unpack_layer" (default: all)
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_TARGET_DIR  build directory shared by the three fuzz workspaces (default
#                    ~/.cache/skiff/fuzz-target: outside the clone, so a later run on the same
#                    machine, CI's included, rebuilds only skiff's own crates)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/skiff/fuzz-target}
# cargo-fuzz passes -Z flags (sanitizer coverage, ASan); this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# Rust crates trip ASan's one-definition-rule check without any real violation.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

# crate directory, target, largest input in bytes (keeps each run cheap).
all_targets=(
  "cri-shim create_container 8192"
  "cni-bridge netconf 4096"
  "runtime manifest 4096"
  "runtime image_config 4096"
  "runtime unpack_layer 8192"
)
selected=()
for spec in "${all_targets[@]}"; do
  read -r _ name _ <<<"$spec"
  if [ -z "${FUZZ_TARGETS:-}" ] || [[ " $FUZZ_TARGETS " == *" $name "* ]]; then
    selected+=("$spec")
  fi
done
if [ ${#selected[@]} -eq 0 ]; then
  echo "fuzz: no target matches FUZZ_TARGETS=$FUZZ_TARGETS" >&2
  exit 1
fi

# Scratch space on tmpfs when there is one: the unpack target creates and removes a small
# tree per run, several times faster there than on a busy disk.
scratch_parent=${TMPDIR:-/tmp}
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  scratch_parent=/dev/shm
fi
work=$(mktemp -d "$scratch_parent/skiff-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
crates=()
for spec in "${selected[@]}"; do
  read -r crate _ _ <<<"$spec"
  [[ " ${crates[*]:-} " == *" $crate "* ]] || crates+=("$crate")
done
for crate in "${crates[@]}"; do
  echo "fuzz: building $crate/fuzz (sanitizer: $sanitizer)"
  # The main workspace's lock file, so the fuzzed dependencies are the versions that ship;
  # cargo adds libFuzzer's crates and drops what this workspace does not use.
  cp Cargo.lock "$crate/fuzz/Cargo.lock"
  (cd "$crate/fuzz" && cargo fuzz build --release --sanitizer "$sanitizer" --target-dir "$target_dir")
done
built=$(date +%s)
echo "fuzz: build took $((built - start)) s"

bin_dir=$target_dir/x86_64-unknown-linux-gnu/release
failed=()
summary=()
for spec in "${selected[@]}"; do
  read -r crate name max_len <<<"$spec"
  corpus=$work/corpus/$name
  artifacts=$root/$crate/fuzz/artifacts/$name
  log=$work/$name.log
  mkdir -p "$corpus" "$artifacts" "$work/tmp/$name"
  cp "$crate/fuzz/corpus/$name/"* "$corpus/"
  echo "fuzz: $name for ${seconds} s ($(ls "$corpus" | wc -l) seeds, inputs up to $max_len bytes)"
  status=0
  TMPDIR=$work/tmp/$name "$bin_dir/$name" "$corpus" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 </dev/null >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
  final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1 | grep -oE 'cov: [0-9]+|corp: [0-9]+|rss: [0-9]+Mb' | tr '\n' ' ' || true)
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $name FAILED (exit $status); the end of its log:"
    tail -n 40 "$log"
    echo "fuzz: replay with: $bin_dir/$name $artifacts/<file>; inputs kept:" $(ls "$artifacts")
    failed+=("$name")
    summary+=("$(printf '%-17s FAILED  see %s' "$name" "$artifacts")")
  else
    summary+=("$(printf '%-17s %10s runs in %3s s  %s' "$name" "${runs:-?}" "${took:-?}" "$final")")
  fi
  rmdir "$artifacts" "$(dirname "$artifacts")" 2>/dev/null || true
done

echo "fuzz: summary (build $((built - start)) s, total $(($(date +%s) - start)) s)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashing targets: ${failed[*]}" >&2
  exit 1
fi
