#!/usr/bin/env bash
# Pods on different nodes against pods on one node, on a two-node cluster of its own
# (scripts/cluster.sh with NODES=2 and its own names, ports and CIDRs): TCP throughput (iperf3)
# and round-trip time (ping) between pods' network namespaces, entered from the host, and how
# long skiff-routes takes to route to a node that joins. scripts/bench.sh runs it; alone:
#
#   scripts/bench-nodes.sh [OUT.md]   # default target/bench/nodes.md; as root
#
# Knobs: ROUNDS (5: measurements per path), IPERF_SECONDS (3), JOINS (3: node joins timed),
# SKIFF_BIN (default target/release).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/target/bench/nodes.md}
ROUNDS=${ROUNDS:-5}
IPERF_SECONDS=${IPERF_SECONDS:-3}
JOINS=${JOINS:-3}
log() { echo "bench-nodes: $*" >&2; }

for tool in iperf3 ping jq; do
  command -v "$tool" >/dev/null || { log "$tool is missing (apt-get install iperf3 iputils-ping jq)"; exit 1; }
done
if nft list table ip kube-proxy >/dev/null 2>&1; then
  log "kube-proxy's tables exist: another cluster runs here (make cluster-down)"
  exit 1
fi

work=$(mktemp -d /tmp/skiff-bench-nodes.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export SKIFF_CLUSTER_DIR=$work/cluster SKIFF_CLUSTER_RUN_DIR=/run/skiff-bench-nodes-$$
export SKIFF_BIN=${SKIFF_BIN:-$repo/target/release} SKIFF_NODES=2
export SKIFF_NODE_NAME=bench-nodes SKIFF_NODE_LINK=bench-nl0 SKIFF_NODE_IP=10.254.0.1
export SKIFF_POD_BRIDGE=bench-np0 SKIFF_CGROUP_ROOT=skiff-bench-nodes
export SKIFF_CLUSTER_CIDR=10.247.0.0/16 SKIFF_SERVICE_CIDR=10.99.0.0/16
export SKIFF_API_SERVICE_IP=10.99.0.1 SKIFF_DNS_SERVICE_IP=10.99.0.10
for knob in ETCD_PORT ETCD_PEER_PORT API_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT CM_PORT \
  SCHEDULER_PORT PROXY_METRICS_PORT PROXY_HEALTHZ_PORT REGISTRY_PORT; do
  export "SKIFF_$knob=$(free_port)"
done
cluster=$repo/scripts/cluster.sh
node1=$SKIFF_NODE_NAME node2=$SKIFF_NODE_NAME-2
trap 'pkill -f "iperf3 -s -p 5201 -B" 2>/dev/null; "$cluster" down >/dev/null 2>&1; rm -rf "$work"' EXIT

log "bringing up a two-node cluster"
"$cluster" up >"$work/up.log" 2>&1 || { tail -20 "$work/up.log" >&2; exit 1; }
env_file=$SKIFF_CLUSTER_DIR/cluster.env
kubectl() { "$(grep ^GOTOOLS_BIN= "$env_file" | cut -d= -f2)/kubectl" --kubeconfig "$SKIFF_CLUSTER_DIR/admin.kubeconfig" "$@"; }
crictl() {
  local socket=$1
  shift
  # An empty config of its own: no warning about a missing /etc/crictl.yaml.
  touch "$work/crictl.yaml"
  "$(grep ^GOTOOLS_BIN= "$env_file" | cut -d= -f2)/crictl" --config "$work/crictl.yaml" \
    --runtime-endpoint "unix://$socket" "$@"
}
socket_of() { [ "$1" = "$node1" ] && echo "$SKIFF_CLUSTER_RUN_DIR/skiff.sock" || echo "$SKIFF_CLUSTER_RUN_DIR/node2/skiff.sock"; }

# a1 and a2 on node 1, b1 on node 2: busybox sleeping, measured from the host in their netns.
for pod in a1:$node1 a2:$node1 b1:$node2; do
  kubectl run "${pod%%:*}" --image=busybox --restart=Never \
    --overrides "{\"spec\":{\"nodeName\":\"${pod#*:}\",\"terminationGracePeriodSeconds\":0}}" -- sleep 3600 >/dev/null
done
kubectl wait --for=condition=Ready pod/a1 pod/a2 pod/b1 --timeout=120s >/dev/null
pid_of() { # pod node: the pid of the pod's container, whose network namespace is the pod's
  local id
  id=$(crictl "$(socket_of "$2")" ps -q --name "^$1\$" | head -1)
  crictl "$(socket_of "$2")" inspect "$id" | jq -r '.info.pid'
}
in_pod() { local pid=$1; shift; nsenter -t "$pid" -n "$@"; }
a1=$(pid_of a1 "$node1") a2=$(pid_of a2 "$node1") b1=$(pid_of b1 "$node2")
a1_ip=$(kubectl get pod a1 -o 'jsonpath={.status.podIP}')
node1_ip=$SKIFF_NODE_IP

in_pod "$a1" iperf3 -s -p 5201 -B "$a1_ip" -D --logfile "$work/iperf3.log"
sleep 0.5
declare -A gbps rtt
paths=("same node:a2" "across nodes:b1")
for ((round = 1; round <= ROUNDS; round++)); do
  for path in "${paths[@]}"; do
    name=${path%%:*} client=${path#*:}
    pid=${!client}
    bits=$(in_pod "$pid" iperf3 -c "$a1_ip" -p 5201 -t "$IPERF_SECONDS" -J | jq '.end.sum_received.bits_per_second')
    gbps[$name]+="$(echo "scale=2; $bits / 1000000000" | bc) "
    avg=$(in_pod "$pid" ping -q -c 200 -i 0.002 "$a1_ip" | awk -F/ '/^rtt/ { print $5 }')
    rtt[$name]+="$avg "
  done
  # One routed hop for comparison: a pod on node 2 to node 1's own address.
  avg=$(in_pod "$b1" ping -q -c 200 -i 0.002 "$node1_ip" | awk -F/ '/^rtt/ { print $5 }')
  rtt["pod on node 2 to node 1's address"]+="$avg "
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Route convergence: node 2 goes away (its Node deleted) and joins again with a new pod CIDR;
# from the moment its Node has a pod CIDR to the moment node 1 routes to it.
converge=""
for ((join = 1; join <= JOINS; join++)); do
  "$cluster" node 2 stop >/dev/null 2>&1
  kubectl delete node "$node2" >/dev/null
  "$cluster" node 2 start >"$work/join.log" 2>&1 &
  starter=$!
  cidr=""
  until [ -n "$cidr" ]; do
    cidr=$(kubectl get node "$node2" -o 'jsonpath={.spec.podCIDR}' 2>/dev/null || true)
    [ -n "$cidr" ] || sleep 0.02
  done
  t0=$(date +%s.%N)
  until ip route show proto 83 | grep -q "^$cidr "; do sleep 0.005; done
  t1=$(date +%s.%N)
  wait "$starter"
  converge+="$(printf '%.1f' "$(echo "($t1 - $t0) * 1000" | bc)") "
done

mkdir -p "$(dirname "$out")"
{
  echo "| path | TCP throughput, Gbit/s (median of $ROUNDS × ${IPERF_SECONDS} s) | round trip, ms (median of $ROUNDS × 200 pings) |"
  echo "|---|---|---|"
  for name in "same node" "across nodes"; do
    echo "| pod to pod, $name | $(echo "${gbps[$name]}" | median) | $(echo "${rtt[$name]}" | median) |"
  done
  echo "| pod on node 2 to node 1's address (one routed hop) | — | $(echo "${rtt["pod on node 2 to node 1's address"]}" | median) |"
  echo
  echo "Route to a joining node's pods, from its pod CIDR's assignment to node 1's route (ms, $JOINS joins): $(echo "$converge" | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')"
} >"$out"
cat "$out"
