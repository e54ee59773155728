#!/usr/bin/env bash
# Benchmarks skiff side by side with containerd 1.6 + runc + the reference CNI plugins, on
# loopback, as root on Debian 12:
#
#   scripts/bench.sh                      # everything, as in docs/BENCHMARKS.md
#   ITERATIONS=5 CONCURRENT=10 scripts/bench.sh   # a quicker run
#
# It installs the peers from Debian if missing, builds skiff in release mode, starts a private
# docker-registry (busybox and pause images built from the host's busybox), containerd (own
# config, root, state and socket; CRI plugin with the reference bridge + host-local on
# bench-cni0, 10.218.0.0/16) and skiffd (own config, root, state and socket; skiff-bridge on
# bench-skiff0, 10.219.0.0/16), runs skiff-bench, then tears everything down: daemons, shims,
# monitors, containers, mounts, network namespaces, bridges, NAT rules and files.
# Results go to target/bench/ (report.md is the whole report) and are printed at the end.
#
# Then one real kubelet drives skiffd and containerd in turn on a one-node cluster
# (scripts/cluster.sh with its own directories, ports and names; the Kubernetes programs from
# scripts/gotools.sh): pods from `kubectl apply` to Ready, one and KUBELET_BATCH at once.
#
# Knobs (environment): ITERATIONS (20), EXEC_ITERATIONS (20), MEMORY_PODS (30),
# CONCURRENT (10,50,100), ROUNDS (1), CNI_PODS (20), KUBELET_ROUNDS (3), KUBELET_SINGLES (5),
# KUBELET_BATCH (30), SKIP (e.g. memory,concurrent,kubelet,nodes), KEEP_WORK=1,
# SKIP_BUILD=1 (use the release binaries already in target/release), TRACE=0 (no chain trace).
set -euo pipefail

ITERATIONS=${ITERATIONS:-20}
EXEC_ITERATIONS=${EXEC_ITERATIONS:-20}
MEMORY_PODS=${MEMORY_PODS:-30}
CONCURRENT=${CONCURRENT:-10,50,100}
ROUNDS=${ROUNDS:-1}
CNI_PODS=${CNI_PODS:-20}
SKIP=${SKIP:-}
KUBELET_ROUNDS=${KUBELET_ROUNDS:-3}
KUBELET_SINGLES=${KUBELET_SINGLES:-5}
KUBELET_BATCH=${KUBELET_BATCH:-30}
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=lib/containerd.sh
. "$repo/scripts/lib/containerd.sh"
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"
release=$repo/target/release
results=$repo/target/bench
# The names the runtimes pull; both resolve them to the private registry through mirrors.
mirror_host=bench.skiff.local
image=$mirror_host/busybox:bench
pause_image=$mirror_host/pause:bench
ctr_bridge=bench-cni0
ctr_net=bench-containerd
skiff_bridge=bench-skiff0
skiff_net=bench-skiff

log() { echo "bench: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "bench.sh must run as root (namespaces, mounts, bridges)" >&2
  exit 1
fi

# --- peers and tools ----------------------------------------------------------------------
missing=()
for pkg in containerd runc containernetworking-plugins docker-registry skopeo busybox-static \
  nftables iptables iproute2 libseccomp-dev iperf3 iputils-ping bc jq; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's packages may start their own services; ours are private instances.
for service in containerd docker-registry; do
  if systemctl is-active --quiet "$service" 2>/dev/null; then
    log "note: a system $service is running; it is left alone"
  fi
done

if [ -z "${SKIP_BUILD:-}" ]; then
  log "building skiff (release; the monitor statically linked, as make release does)"
  make release
  cargo build --release -p skiff-cni --example bench
fi

# --- state before, so teardown removes exactly what this run added -------------------------
work=$(mktemp -d /tmp/skiff-bench.XXXXXX)
netns_before=$(ip netns list 2>/dev/null | awk '{print $1}' | sort)
had_run_containerd=$([ -e /run/containerd ] && echo 1 || echo 0)
had_var_lib_cni=$([ -e /var/lib/cni ] && echo 1 || echo 0)
had_nat=$(nft list table ip nat >/dev/null 2>&1 && echo 1 || echo 0)
registry_pid="" containerd_pid="" skiffd_pid=""

# PIDs whose command line mentions our work dir: our registry, daemons, shims and monitors.
pids_of_work() {
  local f pid cmd
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    cmd=$( { tr '\0' ' ' <"$f"; } 2>/dev/null) || continue
    [[ $cmd == *"$work"* ]] && echo "$pid"
  done
}

stop_pid() { # pid: SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

teardown() {
  local status=$?
  set +e
  log "tearing down"
  if [ -n "${cluster_up:-}" ]; then
    "$repo/scripts/cluster.sh" down >/dev/null 2>&1 || log "cluster.sh down failed"
  fi
  # skiffd, then whatever containers a failed run left: the runtime kills them, their monitors
  # then exit.
  stop_pid "$skiffd_pid"
  if [ -d "$work/run/skiff/oci" ]; then
    for c in "$work"/run/skiff/oci/*; do
      [ -e "$c" ] && "$release/skiff-oci" --root "$work/run/skiff/oci" delete --force \
        "$(basename "$c")" >/dev/null 2>&1
    done
  fi
  stop_pid "$containerd_pid"
  # containerd's shims outlive it by design; ours carry our socket path.
  for pid in $(pids_of_work); do
    [ "$pid" = "$registry_pid" ] || kill -9 "$pid" 2>/dev/null
  done
  # Container processes still in the benchmark cgroups (a failed run): both runtimes put their
  # pods under the driver's cgroup parent.
  for procs in /sys/fs/cgroup/*/skiff-bench/*/cgroup.procs \
    /sys/fs/cgroup/*/skiff-bench/*/*/cgroup.procs; do
    [ -f "$procs" ] && xargs -r kill -9 <"$procs" 2>/dev/null
  done
  stop_pid "$registry_pid"
  sleep 0.5
  # Mounts under the work dir (overlay rootfs, pinned namespaces, shm, the $run tmpfs, the
  # $disk ext4 whose loop device goes with it), deepest first.
  awk -v w="$work/" 'index($5, w) == 1 {print length($5), $5}' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2- | while read -r m; do umount -l "$m" 2>/dev/null; done
  losetup -j "$work/disk.img" 2>/dev/null | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
  # Network namespaces containerd created (and did not remove).
  comm -13 <(echo "$netns_before") <(ip netns list 2>/dev/null | awk '{print $1}' | sort) |
    while read -r ns; do [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null; done
  ip link del "$ctr_bridge" 2>/dev/null
  ip link del "$skiff_bridge" 2>/dev/null
  # The reference bridge plugin's masquerade: a CNI-… chain per pod, referenced from
  # POSTROUTING with a comment naming the network. DEL removes them; a crash may not.
  iptables -t nat -S POSTROUTING 2>/dev/null | grep -F "\"$ctr_net\"" | while read -r rule; do
    chain=$(sed -n 's/.* -j \(CNI-[^ ]*\).*/\1/p' <<<"$rule")
    eval "iptables -t nat ${rule/-A /-D }" 2>/dev/null
    [ -n "$chain" ] && iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null
  done
  if [ "$had_nat" = 0 ] && [ -z "$(iptables -t nat -S 2>/dev/null | grep -v '^-P')" ]; then
    nft delete table ip nat 2>/dev/null
  fi
  # skiff-bridge's masquerade rules of our network (in its shared table): CNI GC with no valid
  # attachments releases them, as skiffd does at startup.
  if [ -x "$release/skiff-bridge" ]; then
    printf '{"cniVersion":"1.1.0","name":"%s","type":"skiff-bridge","bridge":"%s","ipMasq":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.219.0.0/16"}]],"dataDir":"%s"},"cni.dev/valid-attachments":[]}' \
      "$skiff_net" "$skiff_bridge" "$work/skiff/cni-ipam" |
      CNI_COMMAND=GC CNI_PATH=$release "$release/skiff-bridge" >/dev/null 2>&1
  fi
  for cg in /sys/fs/cgroup/*/skiff-bench /sys/fs/cgroup/*/skiff-bench-oci; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  [ "$had_run_containerd" = 0 ] && rm -rf /run/containerd
  [ "$had_var_lib_cni" = 0 ] && rm -rf /var/lib/cni
  if [ -n "${KEEP_WORK:-}" ]; then
    log "work dir kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Both runtimes keep their volatile state (containerd's state dir and runc's root; skiffd's
# state dir with skiff-oci's root) under $run, a tmpfs, as under /run on a Debian 12 host
# (systemd mounts a tmpfs there; this VM has none). Images, snapshots, writable layers, IPAM
# leases and logs stay on disk. On this VM's ext4 without a journal, each new inode skips every
# inode freed in the last 30 s ("recently_deleted"), so with state files created and removed
# by the thousand, inode allocation took 40% of skiffd's CPU over a whole bench run (perf).
run=$work/run
mkdir -p "$run"
mount -t tmpfs -o mode=0755,size=2g skiff-bench-run "$run"
# Both runtimes' roots (images, snapshots, writable layers) on an ext4 with a journal, as
# mkfs.ext4 and the Debian installer make it; this VM's root disk has none. Without a journal
# ext4 does the inode scan above on every new file: the writable layers' directories, overlay's
# work dirs and each copy-up, for both runtimes.
disk=$work/disk
mkdir -p "$disk"
truncate -s 8G "$work/disk.img"
mkfs.ext4 -q -F "$work/disk.img"
mount -o loop "$work/disk.img" "$disk"

wait_socket() { # path pid name
  local i
  for i in $(seq 300); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { log "$3 exited:"; tail -20 "$work/$3.log" >&2; return 1; }
    sleep 0.1
  done
  log "$3 did not open $1"
  tail -20 "$work/$3.log" >&2
  return 1
}

# --- registry and images -------------------------------------------------------------------
port=""
for p in $(seq 5180 5299); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { log "no free port for the registry"; exit 1; }
registry=127.0.0.1:$port
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry/storage
http:
  addr: $registry
EOF
docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for i in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
"$release/skiff-bench" images --registry "$registry"

# --- containerd ----------------------------------------------------------------------------
c=$work/containerd
mkdir -p "$c/net.d" "$c/cni-ipam"
containerd_mirror "$c" "$mirror_host" "$registry"
cat >"$c/net.d/10-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$ctr_net",
  "plugins": [
    {
      "type": "bridge", "bridge": "$ctr_bridge", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "10.218.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$c/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
containerd_config "$c" "$disk/containerd" "$run/containerd" "$pause_image" >"$c/config.toml"
log "starting containerd"
containerd --config "$c/config.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
wait_socket "$c/containerd.sock" "$containerd_pid" containerd

# --- skiffd --------------------------------------------------------------------------------
s=$work/skiff
mkdir -p "$s/net.d" "$s/cni-bin" "$s/cni-ipam"
ln -s "$release/skiff-bridge" "$s/cni-bin/skiff-bridge"
ln -s "$release/skiff-portmap" "$s/cni-bin/skiff-portmap"
cat >"$s/net.d/10-bench.conflist" <<EOF
{
  "cniVersion": "1.1.0",
  "name": "$skiff_net",
  "plugins": [
    {
      "type": "skiff-bridge", "bridge": "$skiff_bridge", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "10.219.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$s/cni-ipam"
      }
    },
    {"type": "skiff-portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$s/config.toml" <<EOF
socket = "$s/skiff.sock"
root_dir = "$disk/skiff"
state_dir = "$run/skiff"
log_level = "info"
[cni]
conf_dir = "$s/net.d"
bin_dirs = ["$s/cni-bin"]
[registry.hosts."$mirror_host"]
mirrors = ["http://$registry"]
EOF
log "starting skiffd"
"$release/skiffd" --config "$s/config.toml" >"$work/skiffd.log" 2>&1 &
skiffd_pid=$!
wait_socket "$s/skiff.sock" "$skiffd_pid" skiffd

# --- measure -------------------------------------------------------------------------------
mkdir -p "$results"
{
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- peers: $(containerd --version | cut -d' ' -f3), $(runc --version | head -1), containernetworking-plugins $(dpkg-query -W -f '${Version}' containernetworking-plugins)"
  echo "- skiff: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- . 2>/dev/null || echo ' (with local changes)'), release build"
} >"$results/machine.md"

skip_args=()
cri_skip=$(tr ',' '\n' <<<"$SKIP" | grep -v '^kubelet$' | paste -sd, -)
[ -n "$cri_skip" ] && skip_args=(--skip "$cri_skip")
log "CRI: skiffd vs containerd"
"$release/skiff-bench" cri \
  --skiff "$s/skiff.sock" --containerd "$c/containerd.sock" --image "$image" \
  --iterations "$ITERATIONS" --exec-iterations "$EXEC_ITERATIONS" \
  --memory-pods "$MEMORY_PODS" --concurrent "$CONCURRENT" --rounds "$ROUNDS" \
  "${skip_args[@]}" --out "$results/cri.md" >/dev/null

rm -f "$results/chain.txt"
if [ "${TRACE:-1}" != 0 ] && command -v perf >/dev/null 2>&1; then
  # The chain trace: 5 more pods per runtime with the kernel's fork/exec/exit events
  # recorded, to show which processes each RPC waits on (perf: Debian package linux-perf).
  log "chain trace (perf)"
  perf record -q -k monotonic -a -o "$work/perf.data" \
    -e sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit -- \
    "$release/skiff-bench" cri --skiff "$s/skiff.sock" --containerd "$c/containerd.sock" \
    --image "$image" --iterations 5 --skip exec,memory,concurrent \
    --spans "$work/spans.jsonl" >/dev/null
  perf script -F comm,pid,tid,time,event,trace -i "$work/perf.data" >"$work/perf.txt" 2>/dev/null
  "$release/skiff-bench" chain --spans "$work/spans.jsonl" --perf-script "$work/perf.txt" \
    >"$results/chain.txt"
fi

log "OCI: skiff-oci vs runc"
"$release/skiff-bench" oci --skiff-oci "$release/skiff-oci" --runc "$(command -v runc)" \
  --iterations "$ITERATIONS" --out "$results/oci.md" >/dev/null

log "CNI: skiff-bridge vs bridge + host-local"
"$release/examples/bench" "$CNI_PODS" --masq >"$results/cni.txt"
rm -f "$results/kubelet.md"
if ! skipped kubelet; then
  # A cluster of the benchmark's own, beside any `make cluster` but for kube-proxy's tables.
  if nft list table ip kube-proxy >/dev/null 2>&1; then
    log "kube-proxy's tables exist: another cluster runs here; skipping the kubelet run"
  else
    log "kubelet: building the Kubernetes programs if needed (scripts/gotools.sh)"
    "$repo/scripts/gotools.sh" >/dev/null
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    export SKIFF_CLUSTER_DIR=$work/cluster SKIFF_CLUSTER_RUN_DIR=$run/cluster SKIFF_BIN=$release
    export SKIFF_NODE_NAME=bench-node SKIFF_NODE_LINK=bench-node0 SKIFF_NODE_IP=10.253.0.1
    export SKIFF_POD_BRIDGE=bench-kpods0 SKIFF_CTR_BRIDGE=bench-kctr0 SKIFF_CGROUP_ROOT=skiff-bench-cluster
    export SKIFF_CLUSTER_CIDR=10.246.0.0/16 SKIFF_SERVICE_CIDR=10.98.0.0/16
    export SKIFF_API_SERVICE_IP=10.98.0.1 SKIFF_DNS_SERVICE_IP=10.98.0.10
    for knob in ETCD_PORT ETCD_PEER_PORT API_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT CM_PORT \
      SCHEDULER_PORT PROXY_METRICS_PORT PROXY_HEALTHZ_PORT REGISTRY_PORT; do
      export "SKIFF_$knob=$(free_port)"
    done
    log "kubelet: bringing up a one-node cluster"
    cluster_up=1
    "$repo/scripts/cluster.sh" up >"$work/cluster-up.log" 2>&1 ||
      { log "cluster.sh up failed:"; tail -20 "$work/cluster-up.log" >&2; exit 1; }
    log "kubelet: skiffd vs containerd under one kubelet"
    "$release/skiff-bench" kubelet --env "$SKIFF_CLUSTER_DIR/cluster.env" \
      --cluster-script "$repo/scripts/cluster.sh" --rounds "$KUBELET_ROUNDS" \
      --singles "$KUBELET_SINGLES" --batch "$KUBELET_BATCH" --out "$results/kubelet.md" >/dev/null
    "$repo/scripts/cluster.sh" down >/dev/null 2>&1
    cluster_up=""
  fi
fi
rm -f "$results/nodes.md"
if ! skipped nodes; then
  log "nodes: pods on two nodes against one (scripts/bench-nodes.sh)"
  # It sets every cluster setting of its own (names, ports, CIDRs).
  SKIFF_BIN=$release "$repo/scripts/bench-nodes.sh" "$results/nodes.md" >/dev/null
fi
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/machine.md"

{
  echo "## Machine"
  cat "$results/machine.md"
  echo
  echo "## CRI: skiffd vs containerd + runc + reference CNI (min / **median** / p90 / max)"
  cat "$results/cri.md"
  echo
  echo "## OCI runtime: skiff-oci vs runc, same bundle"
  cat "$results/oci.md"
  echo
  echo "## CNI ADD/DEL: skiff-bridge vs reference bridge + host-local"
  echo '```'
  cat "$results/cni.txt"
  echo '```'
  if [ -f "$results/kubelet.md" ]; then
    echo
    echo "## One kubelet v1.37 driving each runtime in turn (min / **median** / p90 / max)"
    cat "$results/kubelet.md"
  fi
  if [ -f "$results/nodes.md" ]; then
    echo
    echo "## Pods across two nodes (skiff-routes) against one node"
    cat "$results/nodes.md"
  fi
  if [ -f "$results/chain.txt" ]; then
    echo
    echo "## Chain trace: the processes behind each RPC of the median pod"
    echo '```'
    cat "$results/chain.txt"
    echo '```'
  fi
} >"$results/report.md"
cat "$results/report.md"
