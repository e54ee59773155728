#!/usr/bin/env bash
# A Kubernetes cluster whose container runtime is skiff, every part real and started by hand,
# in the order a reader meets them: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, a local registry with the cluster's images; then on each node skiffd, the
# kubelet, kube-proxy (nftables mode) and skiff-routes; then CoreDNS. One node by default;
# NODES=2 adds a second node in a network namespace of its own, as kind adds containers.
#
#   scripts/cluster.sh up      # bring the cluster up (or find it up); prints KUBECONFIG
#   scripts/cluster.sh down    # remove every process, pod, interface, table, mount and file
#   scripts/cluster.sh status  # which parts are running, and where their logs are
#   scripts/cluster.sh node N stop|start
#                              # node N ≥ 2 crashes (processes killed, namespace deleted) or
#                              # comes back afresh
#   scripts/cluster.sh runtime containerd|skiff [evented-pleg]
#                              # the node's runtime: skiff, or containerd 1.6 + runc + the
#                              # reference CNI plugins for comparison (the benchmark's peer);
#                              # evented-pleg: the kubelet learns of changes from the runtime's
#                              # event stream (its EventedPLEG feature, alpha) instead of relists
#
# The Kubernetes programs come from scripts/gotools.sh, skiff's from target/release (make
# release). Everything the cluster makes lives under $CLUSTER_DIR and $RUN_DIR, on the
# interfaces $NODE_LINK and $POD_BRIDGE, in the cgroups $CGROUP_ROOT and $CGROUP_ROOT-nodeN,
# in the network namespaces of nodes 2… and in nftables tables, all of which `down` removes. Each setting below can be overridden from the environment (the tests run
# a second cluster that way, with their own names and ports).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/containerd.sh
. "$REPO/scripts/lib/containerd.sh"
CLUSTER_DIR=${SKIFF_CLUSTER_DIR:-/var/lib/skiff-cluster}
RUN_DIR=${SKIFF_CLUSTER_RUN_DIR:-/run/skiff-cluster}
SKIFF_BIN=${SKIFF_BIN:-$REPO/target/release}
GOTOOLS_BIN=${SKIFF_GOTOOLS_BIN:-${SKIFF_GOTOOLS:-/var/cache/skiff/gotools}/bin}

NODES=${SKIFF_NODES:-${NODES:-1}}
NODE_NAME=${SKIFF_NODE_NAME:-skiff-node}
# The first node's address, on a bridge of its own that the other nodes join (the "underlay",
# ${NODE_IP%.*}.0/24; node N gets ${NODE_IP%.*}.N): the API server and the kubelet listen there,
# NodePorts answer there, and pods reach it (a pod cannot reach the host's loopback, and the
# API server must be reachable from CoreDNS).
NODE_LINK=${SKIFF_NODE_LINK:-skiff-node0}
NODE_IP=${SKIFF_NODE_IP:-10.250.0.1}
POD_BRIDGE=${SKIFF_POD_BRIDGE:-skiff0}
CLUSTER_CIDR=${SKIFF_CLUSTER_CIDR:-10.244.0.0/16}
SERVICE_CIDR=${SKIFF_SERVICE_CIDR:-10.96.0.0/16}
API_SERVICE_IP=${SKIFF_API_SERVICE_IP:-10.96.0.1}
DNS_SERVICE_IP=${SKIFF_DNS_SERVICE_IP:-10.96.0.10}
CGROUP_ROOT=${SKIFF_CGROUP_ROOT:-skiff-cluster}
ETCD_PORT=${SKIFF_ETCD_PORT:-2379}
ETCD_PEER_PORT=${SKIFF_ETCD_PEER_PORT:-2380}
API_PORT=${SKIFF_API_PORT:-6443}
KUBELET_PORT=${SKIFF_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${SKIFF_KUBELET_HEALTHZ_PORT:-10248}
CM_PORT=${SKIFF_CM_PORT:-10257}
SCHEDULER_PORT=${SKIFF_SCHEDULER_PORT:-10259}
PROXY_METRICS_PORT=${SKIFF_PROXY_METRICS_PORT:-10249}
PROXY_HEALTHZ_PORT=${SKIFF_PROXY_HEALTHZ_PORT:-10256}
REGISTRY_PORT=${SKIFF_REGISTRY_PORT:-5050}
# The peer runtime's bridge, when containerd is the node's runtime.
CTR_BRIDGE=${SKIFF_CTR_BRIDGE:-skiff-ctr0}

PKI=$CLUSTER_DIR/pki
LOGS=$CLUSTER_DIR/logs
PIDS=$RUN_DIR/pids
SOCKET=$RUN_DIR/skiff.sock
CTR_DIR=$CLUSTER_DIR/containerd
CTR_SOCKET=$CTR_DIR/containerd.sock
KUBECONFIG_ADMIN=$CLUSTER_DIR/admin.kubeconfig
# The order things start in; `down` stops them in reverse. Each node runs NODE_COMPONENTS,
# named with the node's suffix (skiffd, skiffd-2, …).
CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler registry)
NODE_COMPONENTS=(skiffd kubelet kube-proxy skiff-routes)
# Host settings the kubelet and pod networking change; `up` saves them, `down` puts them back.
# (IPv4 forwarding is not among them: the CNI bridge plugin turns it on for any pod network, as
# the reference plugin does, and other pod networks on this host may rely on it.)
SYSCTLS=(net.bridge.bridge-nf-call-iptables vm.overcommit_memory vm.panic_on_oom
  kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

# --- nodes ------------------------------------------------------------------------------------
# Node 1 is this host's own network namespace. Node N (2, 3, …) is a network namespace of its
# own, joined to node 1's bridge by a veth, with the address ${NODE_IP%.*}.N; its processes
# enter only that network namespace, so they share the host's mounts and the kubelet's volume
# mounts are what its skiffd bind-mounts into containers.

# node_env N: the N_* settings of node N.
node_env() {
  N=$1
  if [ "$N" = 1 ]; then
    N_NAME=$NODE_NAME N_IP=$NODE_IP N_DIR=$CLUSTER_DIR N_RUN=$RUN_DIR N_SUFFIX="" N_NETNS=""
    N_CGROUP=$CGROUP_ROOT
    N_EXEC=()
  else
    N_NAME=$NODE_NAME-$N N_IP=${NODE_IP%.*}.$N N_DIR=$CLUSTER_DIR/node$N N_RUN=$RUN_DIR/node$N
    N_SUFFIX=-$N N_NETNS=$NODE_NAME-$N N_CGROUP=$CGROUP_ROOT-node$N
    N_EXEC=(nsenter "--net=/run/netns/$N_NETNS")
  fi
  N_SOCKET=$N_RUN/skiff.sock
}

# How many nodes this cluster has (recorded by up, for down and status).
nodes_up() { cat "$RUN_DIR/nodes" 2>/dev/null || echo "$NODES"; }

# Every component's name, in start order.
components() {
  local n c
  printf '%s\n' "${CONTROL_PLANE[@]}"
  for ((n = 1; n <= $(nodes_up); n++)); do
    node_env "$n"
    for c in "${NODE_COMPONENTS[@]}"; do echo "$c$N_SUFFIX"; done
  done
}

# --- processes ------------------------------------------------------------------------------

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
# Alive, and not a zombie waiting to be reaped (a killed component may linger as one).
running() {
  local pid state
  pid=$(pid_of "$1")
  [ -n "$pid" ] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# start NAME PROGRAM ARGS...: runs a component in its own session, its output in logs/NAME.log.
start() {
  local name=$1
  shift
  say "starting $name (log: $LOGS/$name.log)"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

stop() {
  local name=$1 pid
  pid=$(pid_of "$name")
  if running "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do running "$name" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

# retry SECONDS COMMAND...: retries COMMAND until it succeeds; fails after SECONDS.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# wait_for WHAT SECONDS COMMAND...: like retry, and the cluster cannot start without it.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  retry "$seconds" "$@" || die "$what not ready after ${seconds}s (logs: $LOGS)"
}

kubectl() { "$GOTOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
crictl() { "$GOTOOLS_BIN/crictl" --runtime-endpoint "unix://$SOCKET" --image-endpoint "unix://$SOCKET" "$@"; }

# --- certificates ---------------------------------------------------------------------------

# cert NAME CN ORG [SANS]: a key and a certificate signed by the cluster CA.
cert() {
  local name=$1 cn=$2 org=$3 sans=${4:-}
  [ -e "$PKI/$name.crt" ] && return
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 0700 "$PKI"
  if [ ! -e "$PKI/ca.crt" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=skiff-cluster-ca" -days 365 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  api_sans+=",DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  api_sans+=",IP:$API_SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1"
  cert apiserver kube-apiserver "" "$api_sans"
  # The API server's identity towards kubelets (logs, exec, port-forward).
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert skiff-routes skiff-routes ""
  local n
  for ((n = 1; n <= NODES; n++)); do
    node_env "$n"
    cert "kubelet$N_SUFFIX" "system:node:$N_NAME" system:nodes
    cert "kubelet-serving$N_SUFFIX" "system:node:$N_NAME" system:nodes "DNS:$N_NAME,IP:$N_IP"
  done
  # Service account tokens are signed with this key and checked with its public half.
  if [ ! -e "$PKI/sa.key" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
    openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
}

# kubeconfig NAME USER: a kubeconfig for one client certificate.
kubeconfig() {
  cat >"$CLUSTER_DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: skiff
  context: {cluster: skiff, user: $2}
current-context: skiff
EOF
}

# The settings a client of this cluster needs (the walkthrough and the tests read them).
write_env() {
  cat >"$CLUSTER_DIR/cluster.env" <<EOF
KUBECONFIG=$KUBECONFIG_ADMIN
GOTOOLS_BIN=$GOTOOLS_BIN
SOCKET=$SOCKET
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_BRIDGE=$POD_BRIDGE
CGROUP_ROOT=$CGROUP_ROOT
CLUSTER_DIR=$CLUSTER_DIR
RUN_DIR=$RUN_DIR
SKIFF_STATE_DIR=$RUN_DIR/skiff
LOGS=$LOGS
NODES=$NODES
NODE_NAMES=$(for ((n = 1; n <= NODES; n++)); do node_env "$n"; printf '%s ' "$N_NAME"; done)
NODE_IPS=$(for ((n = 1; n <= NODES; n++)); do node_env "$n"; printf '%s ' "$N_IP"; done)
EOF
}

# --- the host: interfaces, kernel settings, cgroups ------------------------------------------

prepare_host() {
  [ -e "$RUN_DIR/sysctls" ] || for key in "${SYSCTLS[@]}"; do
    echo "$key=$(sysctl -n "$key" 2>/dev/null || echo)"
  done >"$RUN_DIR/sysctls"
  # The kubelet adds chains to the iptables tables (through iptables-nft); `down` deletes the
  # tables that were not there before, and only the kubelet's chains from those that were.
  [ -e "$RUN_DIR/nft-chains" ] || nft_chains >"$RUN_DIR/nft-chains"
  # containerd (the benchmark's peer) and libcni keep files in these when they exist.
  [ -e "$RUN_DIR/absent" ] || for dir in /var/lib/cni /run/containerd; do
    [ -e "$dir" ] || echo "$dir"
  done >"$RUN_DIR/absent"
  # A Service's reply from a pod on the same bridge must pass the host's NAT (conntrack) to be
  # un-DNATed, so bridged IPv4 traffic goes through the IP hooks: what every bridge CNI with
  # kube-proxy needs.
  modprobe br_netfilter 2>/dev/null || [ -e /proc/sys/net/bridge ] ||
    die "bridge netfilter (br_netfilter) is not available"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
    ip link add "$NODE_LINK" type bridge
    ip addr add "$NODE_IP/24" dev "$NODE_LINK"
    ip link set "$NODE_LINK" up
  fi
  # The kubelet puts every pod under this cgroup, in each v1 hierarchy (or in the v2 tree).
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do mkdir -p "$hierarchy/$CGROUP_ROOT"; done
}

# The network namespace of node N ≥ 2, its veth on the underlay bridge, its address and
# routes; and the cgroup its kubelet puts pods under (any node).
prepare_node() {
  node_env "$1"
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do mkdir -p "$hierarchy/$N_CGROUP"; done
  [ "$N" = 1 ] && return
  [ -e "/run/netns/$N_NETNS" ] || ip netns add "$N_NETNS"
  if ! ip link show "$NODE_LINK-$N" >/dev/null 2>&1; then
    ip link add "$NODE_LINK-$N" type veth peer name eth0 netns "$N_NETNS"
    ip link set "$NODE_LINK-$N" master "$NODE_LINK" up
    ip -n "$N_NETNS" addr add "$N_IP/24" dev eth0
    ip -n "$N_NETNS" link set lo up
    ip -n "$N_NETNS" link set eth0 up
    # Traffic for anywhere but the underlay and other nodes' pods goes through node 1.
    ip -n "$N_NETNS" route add default via "$NODE_IP"
  fi
  # Network sysctls belong to the namespace: the same settings as node 1's.
  "${N_EXEC[@]}" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

cgroup_hierarchies() {
  if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    echo /sys/fs/cgroup
  else
    # Each v1 hierarchy, and the v2 tree of a hybrid host, where the kubelet also makes them.
    local dir
    for dir in /sys/fs/cgroup/*/; do
      [ -e "$dir/cgroup.procs" ] && echo "${dir%/}"
    done
  fi
  return 0
}

# Every nftables chain, one `family table chain` per line.
nft_chains() {
  nft list chains 2>/dev/null | awk '$1 == "table" { t = $2 " " $3 } $1 == "chain" { print t, $2 }'
}

# The kubelet's iptables chains: KUBE-FIREWALL (drops martian DNAT to 127/8, jumped to from
# INPUT and OUTPUT), the empty canary and hint chains other tools look for, and the base chains
# and tables iptables-nft made to hold them. What was there before `up` stays.
remove_kubelet_iptables() {
  local family table chain base
  for family in ip ip6; do
    local ipt=iptables
    [ "$family" = ip6 ] && ipt=ip6tables
    for table in filter nat mangle; do
      nft list table "$family" "$table" >/dev/null 2>&1 || continue
      if ! grep -q "^$family $table " "$RUN_DIR/nft-chains" 2>/dev/null; then
        nft delete table "$family" "$table" 2>/dev/null || true
        continue
      fi
      for base in INPUT OUTPUT; do
        while "$ipt" -t "$table" -D "$base" -j KUBE-FIREWALL 2>/dev/null; do :; done
      done
      for chain in $(nft_chains | awk -v f="$family" -v t="$table" '$1 == f && $2 == t { print $3 }'); do
        grep -qx "$family $table $chain" "$RUN_DIR/nft-chains" && continue
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
        nft delete chain "$family" "$table" "$chain" 2>/dev/null || true
      done
    done
  done
}

restore_host() {
  if [ -e "$RUN_DIR/sysctls" ]; then
    local line
    while IFS= read -r line; do
      [ -n "${line#*=}" ] && sysctl -qw "$line" 2>/dev/null || true
    done <"$RUN_DIR/sysctls"
  fi
  if [ -e "$RUN_DIR/absent" ]; then
    local dir
    while IFS= read -r dir; do [ -n "$dir" ] && rm -rf "$dir"; done <"$RUN_DIR/absent"
  fi
  ip link del "$NODE_LINK" 2>/dev/null || true
  ip link del "$POD_BRIDGE" 2>/dev/null || true
  # kube-proxy's tables; skiff's CNI table goes with the last pod.
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  remove_kubelet_iptables
  local hierarchy root
  for hierarchy in $(cgroup_hierarchies); do
    for root in "$hierarchy/$CGROUP_ROOT" "$hierarchy/$CGROUP_ROOT"-node*; do
      [ -d "$root" ] || continue
      # Deepest first: a cgroup is removed once it has no children and no processes.
      find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
}

# --- the components -------------------------------------------------------------------------

start_etcd() {
  start etcd "$GOTOOLS_BIN/etcd" --name skiff --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "skiff=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn --unsafe-no-fsync
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  start kube-apiserver "$GOTOOLS_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver 60 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "https://$NODE_IP:$API_PORT/readyz"
}

start_controller_manager() {
  start kube-controller-manager "$GOTOOLS_BIN/kube-controller-manager" \
    --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
    --allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true --profiling=false
}

start_scheduler() {
  start kube-scheduler "$GOTOOLS_BIN/kube-scheduler" \
    --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false
}

# The images the cluster runs (nginx, busybox, a client, CoreDNS), built from Debian packages
# and the CoreDNS binary, served under their public names through skiffd's registry mirrors.
start_registry() {
  mkdir -p "$CLUSTER_DIR/registry"
  cat >"$CLUSTER_DIR/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $CLUSTER_DIR/registry}
  delete: {enabled: true}
http: {addr: $NODE_IP:$REGISTRY_PORT}
EOF
  # On the underlay, where every node's runtime reaches it.
  start registry /usr/bin/docker-registry serve "$CLUSTER_DIR/registry.yml"
  wait_for registry 30 curl -fsS "http://$NODE_IP:$REGISTRY_PORT/v2/"
  say "building and pushing the cluster's images"
  "$SKIFF_BIN/skiff-testimage" cluster-images --registry "$NODE_IP:$REGISTRY_PORT" \
    --coredns "$GOTOOLS_BIN/coredns" --cache "$CLUSTER_DIR/image-cache" >>"$LOGS/images.log" 2>&1 ||
    die "building the images failed (log: $LOGS/images.log)"
}

# skiffd of node N, in the node's network namespace (its pods' bridge lives there).
start_skiffd() {
  node_env "$1"
  mkdir -p "$N_DIR/cni/net.d" "$N_DIR/cni/ipam"
  # skiffd writes the network config from this template once the kubelet tells it the node's
  # pod CIDR (UpdateRuntimeConfig), as containerd's conf_template does. Traffic to other
  # nodes' pods keeps the pod's address (ipMasqExclude): skiff-routes routes it.
  cat >"$N_DIR/cni/template.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "skiff-cluster",
  "plugins": [
    {
      "type": "skiff-bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "ipMasqExclude": ["$CLUSTER_CIDR"],
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$N_DIR/cni/ipam"
      }
    },
    {"type": "skiff-portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$N_DIR/skiffd.toml" <<EOF
socket = "$N_SOCKET"
root_dir = "$N_DIR/skiff"
state_dir = "$N_RUN/skiff"

[cni]
conf_dir = "$N_DIR/cni/net.d"
conf_template = "$N_DIR/cni/template.conflist"
bin_dirs = ["$SKIFF_BIN"]

[streaming]
address = "127.0.0.1:0"

[registry.hosts."docker.io"]
mirrors = ["http://$NODE_IP:$REGISTRY_PORT"]

[registry.hosts."registry.k8s.io"]
mirrors = ["http://$NODE_IP:$REGISTRY_PORT"]
EOF
  start "skiffd$N_SUFFIX" "${N_EXEC[@]}" "$SKIFF_BIN/skiffd" --config "$N_DIR/skiffd.toml"
  wait_for "skiffd$N_SUFFIX" 30 cri_on "$N_SOCKET" version
}

# The kubelet of node N, on node 1 with the runtime `scripts/cluster.sh runtime` chose.
start_kubelet() {
  node_env "$1"
  local socket=$N_SOCKET
  [ "$N" = 1 ] && socket=$(runtime_socket "$(current_runtime)")
  mkdir -p "$N_DIR/kubelet" "$N_DIR/pod-logs"
  cat >"$N_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# skiff is the node's container runtime: CRI over its unix socket, images from it too.
containerRuntimeEndpoint: unix://$socket
imageServiceEndpoint: unix://$socket
# The runtime writes cgroups through cgroupfs (skiff answers CGROUPFS in RuntimeConfig).
cgroupDriver: cgroupfs
cgroupRoot: /$N_CGROUP
# This host has cgroup v1 (hybrid); Kubernetes 1.35+ refuses v1 unless told.
failCgroupV1: false
address: $N_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving$N_SUFFIX.crt
tlsPrivateKeyFile: $PKI/kubelet-serving$N_SUFFIX.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
podLogsDir: $N_DIR/pod-logs
failSwapOn: false
# A development machine's disk is often fuller than a node's: evict only when nearly full.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
EOF
  if [ "$N" = 1 ] && [ -e "$RUN_DIR/evented-pleg" ]; then
    printf 'featureGates: {EventedPLEG: true}\n' >>"$N_DIR/kubelet.yaml"
  fi
  start "kubelet$N_SUFFIX" "${N_EXEC[@]}" "$GOTOOLS_BIN/kubelet" --config "$N_DIR/kubelet.yaml" \
    --kubeconfig "$CLUSTER_DIR/kubelet$N_SUFFIX.kubeconfig" --root-dir "$N_DIR/kubelet" \
    --cert-dir "$N_DIR/kubelet/pki" --hostname-override "$N_NAME" --node-ip "$N_IP"
  wait_for "the node $N_NAME" 120 node_ready "$N_NAME"
}

node_ready() {
  [ "$(kubectl get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

all_nodes_ready() {
  local n
  for ((n = 1; n <= $(nodes_up); n++)); do
    node_env "$n"
    node_ready "$N_NAME" || return 1
  done
}

start_kube_proxy() {
  node_env "$1"
  cat >"$N_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig}
hostnameOverride: $N_NAME
clusterCIDR: $CLUSTER_CIDR
# NodePorts answer on the node's address only, not on every address of this host.
nodePortAddresses: [$N_IP/32]
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
# Leave the host's conntrack table size alone.
conntrack: {maxPerCore: 0, min: 0}
EOF
  start "kube-proxy$N_SUFFIX" "${N_EXEC[@]}" "$GOTOOLS_BIN/kube-proxy" --config "$N_DIR/kube-proxy.yaml"
  wait_for "kube-proxy$N_SUFFIX" 60 "${N_EXEC[@]}" curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
}

# skiff-routes of node N: routes to the other nodes' pod networks, from the Node objects.
start_routes() {
  node_env "$1"
  start "skiff-routes$N_SUFFIX" "${N_EXEC[@]}" "$SKIFF_BIN/skiff-routes" \
    --kubeconfig "$CLUSTER_DIR/skiff-routes.kubeconfig" --node "$N_NAME"
}

start_coredns() {
  sed -e "s/@DNS_SERVICE_IP@/$DNS_SERVICE_IP/" "$REPO/examples/cluster/coredns.yaml" |
    kubectl apply -f - >>"$LOGS/addons.log"
  wait_for CoreDNS 120 kubectl -n kube-system rollout status deployment/coredns --timeout 2s
}

# --- the node's runtime: skiff, or containerd for comparison --------------------------------

current_runtime() { cat "$RUN_DIR/runtime" 2>/dev/null || echo skiff; }

runtime_socket() {
  case $1 in
    skiff) echo "$SOCKET" ;;
    containerd) echo "$CTR_SOCKET" ;;
    *) die "unknown runtime $1 (skiff or containerd)" ;;
  esac
}

# containerd as the benchmark's peer: Debian's containerd 1.6 with runc and the reference
# bridge + host-local plugins, configured as skiffd is (cgroupfs, the same registry through
# mirrors, the network config written from the node's pod CIDR by its conf_template).
start_containerd() {
  command -v containerd >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/cni/bridge ] ||
    die "containerd is not installed (apt-get install containerd runc containernetworking-plugins)"
  mkdir -p "$CTR_DIR/net.d" "$CTR_DIR/cni-ipam"
  local host
  for host in docker.io registry.k8s.io; do
    containerd_mirror "$CTR_DIR" "$host" "$NODE_IP:$REGISTRY_PORT"
  done
  cat >"$CTR_DIR/template.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "containerd-cluster",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CTR_BRIDGE", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$CTR_DIR/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Its sandbox image is busybox sleeping forever, from the cluster's registry (skiff needs none).
  containerd_config "$CTR_DIR" "$CTR_DIR/root" "$RUN_DIR/containerd" \
    docker.io/skiff/pause:busybox "$CTR_DIR/template.conflist" >"$CTR_DIR/config.toml"
  start containerd containerd --config "$CTR_DIR/config.toml"
  wait_for containerd 30 cri_on "$CTR_SOCKET" version
}

cri_on() {
  local socket=$1
  shift
  "$GOTOOLS_BIN/crictl" --runtime-endpoint "unix://$socket" --image-endpoint "unix://$socket" "$@"
}

# Removes containerd's pods, stops it and its shims, and its bridge (the kubelet is stopped).
stop_containerd() {
  if running containerd; then
    cri_on "$CTR_SOCKET" rmp --force --all >/dev/null 2>&1 || say "removing containerd's pods failed"
  fi
  stop containerd
  # Shims outlive containerd by design; theirs name our socket.
  local proc
  for proc in /proc/[0-9]*; do
    { tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null | grep -qF "$CTR_SOCKET" &&
      { kill -9 "${proc#/proc/}" 2>/dev/null || true; }
  done
  ip link del "$CTR_BRIDGE" 2>/dev/null || true
}

# The kubelet, stopped, comes back on the other runtime; the other runtime's pods are removed
# first (the API server's pods are then created again on the new one), and its bridge, which
# holds the same gateway address.
switch_runtime() {
  local to=$1 evented=${2:-} from was_evented=""
  runtime_socket "$to" >/dev/null
  [ -z "$evented" ] || [ "$evented" = evented-pleg ] || die "unknown option $evented (evented-pleg)"
  from=$(current_runtime)
  [ -e "$RUN_DIR/evented-pleg" ] && was_evented=evented-pleg
  all_running || die "the cluster is not up (scripts/cluster.sh up)"
  if [ "$from" = "$to" ] && [ "$was_evented" = "$evented" ]; then
    say "the node's runtime is already $to${evented:+ with the evented PLEG}"
    return
  fi
  say "switching the node's runtime from $from${was_evented:+ (evented PLEG)} to $to${evented:+ (evented PLEG)}"
  stop kubelet
  if [ "$from" = containerd ]; then
    stop_containerd
  else
    crictl rmp --force --all >/dev/null 2>&1 || say "removing skiffd's pods failed"
    ip link del "$POD_BRIDGE" 2>/dev/null || true
  fi
  [ "$to" = containerd ] && start_containerd
  echo "$to" >"$RUN_DIR/runtime"
  if [ -n "$evented" ]; then touch "$RUN_DIR/evented-pleg"; else rm -f "$RUN_DIR/evented-pleg"; fi
  start_kubelet 1
  wait_for "the node on $to" 60 node_runs_on "$to"
  # CoreDNS comes back in a new sandbox of the new runtime.
  wait_for "CoreDNS on $to" 120 runtime_has_ready_pod "$to" coredns
  wait_for CoreDNS 120 kubectl -n kube-system rollout status deployment/coredns --timeout 2s
}

node_runs_on() {
  local version
  version=$(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.nodeInfo.containerRuntimeVersion}')
  [[ $version == "$1://"* ]]
}

runtime_has_ready_pod() {
  [ -n "$(cri_on "$(runtime_socket "$1")" pods --name "$2" --state ready -q 2>/dev/null)" ]
}

# --- a node that goes away and comes back ---------------------------------------------------

# The processes in node N's network namespace, and those in its pods' cgroups.
node_processes() {
  node_env "$1"
  local netns proc hierarchy
  netns=$(stat -L -c %i "/run/netns/$N_NETNS" 2>/dev/null) || true
  for proc in /proc/[0-9]*; do
    [ -n "$netns" ] && [ "$(stat -L -c %i "$proc/ns/net" 2>/dev/null)" = "$netns" ] && echo "${proc#/proc/}"
  done
  for hierarchy in $(cgroup_hierarchies); do
    find "$hierarchy/$N_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done
}

# A node's crash: everything of node N ≥ 2 is killed and its namespace deleted, as a machine
# that loses power; its Node object stays until someone deletes it.
node_stop() {
  [ "${1:-}" -ge 2 ] 2>/dev/null || die "node N: N must be 2 or more (node 1 is this host)"
  node_env "$1"
  local c pid mount dir
  for c in "${NODE_COMPONENTS[@]}"; do rm -f "$PIDS/$c$N_SUFFIX.pid"; done
  for pid in $(node_processes "$1" | sort -u); do kill -9 "$pid" 2>/dev/null || true; done
  sleep 0.5
  for dir in "$N_DIR" "$N_RUN"; do
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
      while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  done
  ip netns del "$N_NETNS" 2>/dev/null || true
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do
    [ -d "$hierarchy/$N_CGROUP" ] && find "$hierarchy/$N_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "$N_DIR" "$N_RUN"
  say "node $N_NAME stopped (its Node object remains: kubectl delete node $N_NAME)"
}

# Node N comes back, afresh: a new namespace, new state, a new registration.
node_start() {
  [ "${1:-}" -ge 2 ] 2>/dev/null && [ "$1" -le "$(nodes_up)" ] ||
    die "node N: N must be one of this cluster's nodes 2..$(nodes_up)"
  node_env "$1"
  running "kubelet$N_SUFFIX" && die "node $N_NAME is running"
  prepare_node "$1"
  start_skiffd "$1"
  start_kubelet "$1"
  start_kube_proxy "$1"
  start_routes "$1"
}

# --- up, down, status -----------------------------------------------------------------------

check_tools() {
  local tool
  for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl crictl coredns; do
    [ -x "$GOTOOLS_BIN/$tool" ] || die "$GOTOOLS_BIN/$tool is missing: run scripts/gotools.sh"
  done
  for tool in skiffd skiff-oci skiff-monitor skiff-bridge skiff-portmap skiff-routes skiff-testimage; do
    [ -x "$SKIFF_BIN/$tool" ] || die "$SKIFF_BIN/$tool is missing: run make release"
  done
  command -v openssl >/dev/null || die "openssl is missing"
  [ -x /usr/bin/docker-registry ] || die "docker-registry is missing (apt-get install docker-registry)"
}

all_running() {
  local c
  [ "$(nodes_up)" = "$NODES" ] || return 1
  for c in $(components); do running "$c" || return 1; done
}

up() {
  check_tools
  if all_running && all_nodes_ready; then
    say "already up"
  else
    # A cluster that is partly up (a crash, a reboot) is taken down first.
    if [ -d "$PIDS" ] || [ -d "$CLUSTER_DIR" ]; then down_quietly; fi
    mkdir -p "$CLUSTER_DIR" "$LOGS" "$PIDS"
    echo "$NODES" >"$RUN_DIR/nodes"
    local begin=$SECONDS n name
    prepare_host
    for ((n = 1; n <= NODES; n++)); do prepare_node "$n"; done
    make_pki
    write_env
    for name in admin controller-manager scheduler kube-proxy skiff-routes; do kubeconfig "$name" "$name"; done
    for ((n = 1; n <= NODES; n++)); do
      node_env "$n"
      kubeconfig "kubelet$N_SUFFIX" "kubelet$N_SUFFIX"
    done
    start_etcd
    start_apiserver
    start_controller_manager
    start_scheduler
    start_registry
    kubectl apply -f "$REPO/examples/cluster/skiff-routes.yaml" >>"$LOGS/addons.log"
    for ((n = 1; n <= NODES; n++)); do
      start_skiffd "$n"
      start_kubelet "$n"
      start_kube_proxy "$n"
      start_routes "$n"
    done
    start_coredns
    say "up in $((SECONDS - begin)) s"
  fi
  status
  echo
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "export PATH=$GOTOOLS_BIN:\$PATH    # kubectl, crictl"
}

down_quietly() { down >/dev/null 2>&1 || true; }

down() {
  local n c
  for ((n = $(nodes_up); n >= 1; n--)); do
    node_env "$n"
    # Pods first, while the kubelet is stopped and skiffd still runs, so each gets its CNI DEL.
    stop "kube-proxy$N_SUFFIX"
    stop "kubelet$N_SUFFIX"
    stop "skiff-routes$N_SUFFIX"
    [ "$N" = 1 ] && stop_containerd
    # After a crash skiffd may be gone while its pods run on: started again, it finds them in
    # its state directories, so they can be removed as usual.
    if ! running "skiffd$N_SUFFIX" && [ -e "$N_DIR/skiffd.toml" ] && [ -x "$SKIFF_BIN/skiffd" ] &&
      { [ "$N" = 1 ] || [ -e "/run/netns/$N_NETNS" ]; }; then
      mkdir -p "$LOGS" "$PIDS"
      start "skiffd$N_SUFFIX" "${N_EXEC[@]}" "$SKIFF_BIN/skiffd" --config "$N_DIR/skiffd.toml"
      retry 30 cri_on "$N_SOCKET" version || say "skiffd$N_SUFFIX did not start again; its pods may be left"
    fi
    if running "skiffd$N_SUFFIX"; then
      cri_on "$N_SOCKET" rmp --force --all >/dev/null 2>&1 || say "removing node $N's pods failed"
    fi
    stop "skiffd$N_SUFFIX"
  done
  for ((c = ${#CONTROL_PLANE[@]} - 1; c >= 0; c--)); do
    stop "${CONTROL_PLANE[c]}"
  done
  # Mounts the kubelets made (secrets, service account tokens) and skiff's, deepest first.
  local mount dir
  for dir in "$CLUSTER_DIR" "$RUN_DIR"; do
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
      while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  done
  # The other nodes' namespaces take their veths, bridges and nftables tables with them.
  for ((n = $(nodes_up); n >= 2; n--)); do
    node_env "$n"
    ip netns del "$N_NETNS" 2>/dev/null || true
  done
  restore_host
  rm -rf "$CLUSTER_DIR" "$RUN_DIR"
  say "down"
}

status() {
  local c
  echo "  the node's runtime: $(current_runtime)$([ -e "$RUN_DIR/evented-pleg" ] && echo ', evented PLEG')"
  for c in $(components) $(running containerd && echo containerd); do
    if running "$c"; then
      printf '  %-24s running (pid %s)  log: %s\n' "$c" "$(pid_of "$c")" "$LOGS/$c.log"
    else
      printf '  %-24s not running         log: %s\n' "$c" "$LOGS/$c.log"
    fi
  done
}

[ "$(id -u)" = 0 ] || die "run as root (the kubelet, skiffd and the network need it)"
case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  runtime) switch_runtime "${2:-}" "${3:-}" ;;
  node)
    case ${3:-} in
      stop) node_stop "${2:-}" ;;
      start) node_start "${2:-}" ;;
      *) die "usage: $0 node N stop|start" ;;
    esac
    ;;
  *) echo "usage: $0 up|down|status|runtime containerd|skiff [evented-pleg]|node N stop|start" >&2; exit 2 ;;
esac
