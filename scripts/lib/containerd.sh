# containerd as skiff's peer in comparisons (scripts/bench.sh, `scripts/cluster.sh runtime
# containerd`): Debian's containerd 1.6 with runc and the reference CNI plugins, configured the
# way skiffd is. Sourced, not run.

# containerd_config DIR ROOT STATE SANDBOX_IMAGE [CONF_TEMPLATE]
# Prints a config.toml for a private containerd: its socket, `opt` and CNI/registry config in
# DIR (DIR/containerd.sock, DIR/net.d, DIR/certs.d), images and snapshots in ROOT, volatile
# state and runc's root in STATE. With CONF_TEMPLATE, the CRI plugin writes the network config
# from it once the kubelet passes the node's pod CIDR, as skiffd's cni.conf_template does.
containerd_config() {
  local dir=$1 root=$2 state=$3 sandbox_image=$4 template=${5:-}
  cat <<CONFIG
version = 2
root = "$root"
state = "$state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  # CAP_SYS_RESOURCE is missing on this kind of host: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$state/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/net.d"
    max_conf_num = 1
${template:+    conf_template = \"$template\"}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
CONFIG
}

# containerd_mirror DIR HOST REGISTRY: containerd pulls HOST's images from REGISTRY
# (host:port, plain HTTP).
containerd_mirror() {
  local dir=$1 host=$2 registry=$3
  mkdir -p "$dir/certs.d/$host"
  cat >"$dir/certs.d/$host/hosts.toml" <<HOSTS
server = "http://$registry"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
HOSTS
}
