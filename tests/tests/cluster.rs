//! Real Kubernetes nodes on skiff, end to end: `scripts/cluster.sh up` brings up etcd, the
//! control plane, CoreDNS and two nodes (the second in a network namespace of its own), each
//! with skiffd, the kubelet, kube-proxy and skiff-routes; the walkthrough
//! (`skiff-cluster-demo`) checks each of the seed's demos as a user sees it, on one node and
//! across both; a crashed cluster comes up again; and `down` leaves nothing behind.
//!
//! Needs the Kubernetes programs of `scripts/gotools.sh` (the install step of `make test`
//! builds them). The test cluster has its own directories, ports, interfaces and CIDRs, so it
//! runs beside a `make cluster`, except for kube-proxy's nftables tables, which have fixed
//! names: the test refuses to run while another cluster's kube-proxy tables exist.

use skiff_tests::daemon::sibling_binary;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NODE_LINK: &str = "skiff-tnode0";
const POD_BRIDGE: &str = "skiff-tpods0";
const NODE_IP: &str = "10.252.0.1";
const CGROUP_ROOT: &str = "skiff-cluster-test";
const NODE_NAME: &str = "skiff-test-node";
/// The second node's network namespace: named after the node by `scripts/cluster.sh`.
const NODE2_NETNS: &str = "skiff-test-node-2";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test cluster's settings, passed to `scripts/cluster.sh` as its environment.
struct TestCluster {
    dir: tempfile::TempDir,
    run_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl TestCluster {
    fn new(kubelet: &Path) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("skiff-cluster-test-")
            .tempdir()
            .unwrap();
        let run_dir = PathBuf::from(format!("/run/skiff-cluster-test-{}", std::process::id()));
        let skiff_bin = sibling_binary("skiffd", "SKIFFD_BIN")
            .parent()
            .unwrap()
            .to_path_buf();
        let mut env = vec![
            (
                "SKIFF_CLUSTER_DIR",
                dir.path().join("cluster").display().to_string(),
            ),
            ("SKIFF_CLUSTER_RUN_DIR", run_dir.display().to_string()),
            ("SKIFF_BIN", skiff_bin.display().to_string()),
            ("SKIFF_NODES", "2".to_string()),
            ("SKIFF_NODE_NAME", NODE_NAME.to_string()),
            ("SKIFF_NODE_LINK", NODE_LINK.to_string()),
            ("SKIFF_NODE_IP", NODE_IP.to_string()),
            ("SKIFF_POD_BRIDGE", POD_BRIDGE.to_string()),
            ("SKIFF_CLUSTER_CIDR", "10.245.0.0/16".to_string()),
            ("SKIFF_SERVICE_CIDR", "10.97.0.0/16".to_string()),
            ("SKIFF_API_SERVICE_IP", "10.97.0.1".to_string()),
            ("SKIFF_DNS_SERVICE_IP", "10.97.0.10".to_string()),
            ("SKIFF_CGROUP_ROOT", CGROUP_ROOT.to_string()),
            (
                "SKIFF_GOTOOLS_BIN",
                kubelet.parent().unwrap().display().to_string(),
            ),
        ];
        for key in [
            "SKIFF_ETCD_PORT",
            "SKIFF_ETCD_PEER_PORT",
            "SKIFF_API_PORT",
            "SKIFF_KUBELET_PORT",
            "SKIFF_KUBELET_HEALTHZ_PORT",
            "SKIFF_CM_PORT",
            "SKIFF_SCHEDULER_PORT",
            "SKIFF_PROXY_METRICS_PORT",
            "SKIFF_PROXY_HEALTHZ_PORT",
            "SKIFF_REGISTRY_PORT",
        ] {
            env.push((key, free_port().to_string()));
        }
        TestCluster {
            dir,
            run_dir,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// `scripts/cluster.sh VERB` with this cluster's settings.
    fn script(&self, verb: &str) -> Output {
        self.script_args(&[verb])
    }

    /// `scripts/cluster.sh ARGS…` with this cluster's settings.
    fn script_args(&self, args: &[&str]) -> Output {
        Command::new(repo().join("scripts/cluster.sh"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run scripts/cluster.sh")
    }

    fn up(&self) {
        let out = self.script("up");
        assert!(
            out.status.success(),
            "cluster.sh up failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs_tail()
        );
    }

    /// The last lines of each component's log, for a failure message.
    fn logs_tail(&self) -> String {
        let logs = self.cluster_dir().join("logs");
        let mut text = String::new();
        for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            text.push_str(&format!("--- {}\n{tail}\n", entry.path().display()));
        }
        text
    }

    /// PIDs of the processes this cluster started (a pid file each).
    fn pids(&self) -> Vec<(String, i32)> {
        std::fs::read_dir(self.run_dir.join("pids"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid = std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((e.file_name().to_string_lossy().replace(".pid", ""), pid))
            })
            .collect()
    }

    /// What this cluster left on the host; empty when `down` did its job.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let dirs = [self.cluster_dir(), self.run_dir.clone()];
        for dir in &dirs {
            if dir.exists() {
                left.push(format!("directory {}", dir.display()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            let point = line.split(' ').nth(4).unwrap_or_default();
            if dirs
                .iter()
                .any(|d| point.starts_with(&d.display().to_string()))
            {
                left.push(format!("mount {point}"));
            }
        }
        let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
        if String::from_utf8_lossy(&netns.stdout).contains(NODE2_NETNS) {
            left.push(format!("network namespace {NODE2_NETNS}"));
        }
        for link in [NODE_LINK, POD_BRIDGE, &format!("{NODE_LINK}-2")] {
            let out = Command::new("ip")
                .args(["link", "show", link])
                .output()
                .unwrap();
            if out.status.success() {
                left.push(format!("interface {link}"));
            }
        }
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        for table in String::from_utf8_lossy(&tables.stdout).lines() {
            if table.contains("kube-proxy") || table.contains("skiff-cni") {
                left.push(table.to_string());
            }
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for root in [CGROUP_ROOT.to_string(), format!("{CGROUP_ROOT}-node2")] {
                let cgroup = hierarchy.path().join(root);
                if cgroup.exists() {
                    left.push(format!("cgroup {}", cgroup.display()));
                }
            }
        }
        // Any process still running from the cluster's directories (a pod's, a component's).
        for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if dirs
                .iter()
                .any(|d| cmdline.contains(&d.display().to_string()))
            {
                left.push(format!(
                    "process {}: {cmdline}",
                    proc_dir.file_name().to_string_lossy()
                ));
            }
        }
        left
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

/// skiff-routes' routes in a network namespace (`None`: this host's), as `ip route` shows them.
fn routes(netns: Option<&str>) -> String {
    let mut cmd = Command::new("ip");
    if let Some(netns) = netns {
        cmd.args(["-n", netns]);
    }
    let out = cmd.args(["route", "show", "proto", "83"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Node 2 crashes (processes killed, namespace deleted) and its Node object is deleted, as an
/// administrator or a cloud's node controller does: node 1 withdraws its route and its pods
/// keep working. Node 2 comes back: the routes return both ways and pods across nodes reach
/// each other again.
fn node_goes_away_and_comes_back(cluster: &TestCluster) {
    use skiff_tests::kube::{http_get, retry};
    use std::time::Duration;
    let kube =
        skiff_tests::kube::Cluster::from_env_file(&cluster.cluster_dir().join("cluster.env"))
            .unwrap();
    let node2 = format!("{NODE_NAME}-2");
    let web = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  \
             containers:\n  - name: web\n    image: busybox\n    command: [sh, -c, \"mkdir -p /w && \
             echo {name} > /w/index.html && exec httpd -f -p 8080 -h /w\"]\n"
        )
    };
    kube.kubectl_with_input(&["apply", "-f", "-"], &web("stay", NODE_NAME))
        .unwrap();
    kube.wait_ready("stay", Duration::from_secs(120)).unwrap();
    let stay_ip = kube.get("pod stay", "{.status.podIP}").unwrap();
    assert!(
        routes(None).contains(" via 10.252.0.2 "),
        "{}",
        routes(None)
    );

    let out = cluster.script_args(&["node", "2", "stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kube.kubectl(&["delete", "node", &node2]).unwrap();
    retry(Duration::from_secs(30), || {
        let left = routes(None);
        anyhow::ensure!(left.trim().is_empty(), "route still there: {left}");
        Ok(())
    })
    .expect("node 1 withdraws the route to the deleted node's pods");
    let (_, body) = http_get(&format!("{stay_ip}:8080")).unwrap();
    assert_eq!(body.trim(), "stay", "node 1's pods keep working");

    let out = cluster.script_args(&["node", "2", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    retry(Duration::from_secs(60), || {
        let (here, there) = (routes(None), routes(Some(NODE2_NETNS)));
        anyhow::ensure!(
            here.contains(" via 10.252.0.2 ") && there.contains(" via 10.252.0.1 "),
            "routes not back: {here:?} / {there:?}"
        );
        Ok(())
    })
    .expect("both nodes route to each other's pods again");
    kube.kubectl_with_input(&["apply", "-f", "-"], &web("back", &node2))
        .unwrap();
    kube.wait_ready("back", Duration::from_secs(120)).unwrap();
    let answer = retry(Duration::from_secs(30), || {
        kube.exec(
            "back",
            None,
            &["wget", "-qO-", &format!("http://{stay_ip}:8080/")],
        )
    })
    .unwrap();
    assert_eq!(
        answer.trim(),
        "stay",
        "a pod on the returned node reaches node 1's pod"
    );
    kube.kubectl(&["delete", "pod", "stay", "back", "--grace-period=1"])
        .unwrap();
}

/// kube-proxy's tables exist while any cluster on this host runs.
fn another_cluster_is_up() -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", "kube-proxy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_kubernetes_node_on_skiff_runs_the_seed_demos_and_leaves_nothing() {
    let kubelet = skiff_tests::kube::gotool("kubelet").unwrap();
    assert!(
        !another_cluster_is_up(),
        "kube-proxy's nftables tables exist: another cluster runs on this host (make cluster-down)"
    );
    let cluster = TestCluster::new(&kubelet);
    cluster.up();

    let demo = Command::new(sibling_binary(
        "skiff-cluster-demo",
        "SKIFF_CLUSTER_DEMO_BIN",
    ))
    .arg("--env")
    .arg(cluster.cluster_dir().join("cluster.env"))
    .arg("--examples")
    .arg(repo().join("examples"))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&demo.stderr),
        cluster.logs_tail()
    );
    for claim in [
        "runtime skiff://",
        "HTTP/1.1 200 OK: Welcome to nginx!",
        "sidecar -- wget -qO- http://localhost/\n    -> Welcome to nginx!",
        "-> hello from pod-b",
        "-> hello from pod-c",
        "nginx.default.svc.cluster.local -> 10.97.",
        "wget -qO- http://nginx/  (the short name",
        &format!("curl http://{NODE_IP}:30080/  (from the host)\n    HTTP/1.1 200 OK"),
        "\"GET / HTTP/1.",
        "tty-42",
        "-> attached-42",
        "Liveness probe failed",
        "nginx: CPU ",
        "sandbox: gone; network namespace: gone; IP: released; cgroups: gone",
        // Across nodes: by pod IP, the server sees the client's own pod address (the
        // walkthrough checks it is the client's), not a node's.
        "-> hello from hello-1 on skiff-test-node; you are 10.245.",
        "-> hello from hello-2 on skiff-test-node-2; you are 10.245.",
        &format!("curl http://{NODE_IP}:30081/cgi-bin/hello  (from the host)\n    -> hello from"),
        "curl http://10.252.0.2:30081/cgi-bin/hello  (from the host)\n    -> hello from",
        " via 10.252.0.2 dev skiff-tnode0",
        " via 10.252.0.1 dev eth0",
        "Every step answered as expected.",
    ] {
        assert!(stdout.contains(claim), "missing {claim:?} in:\n{stdout}");
    }

    // The kubelet's log: no error from a CRI call, but for one kind of the kubelet's own making.
    // When a deleted pod's containers die, the kubelet queues the removal of all of them once per
    // container (and once for the sandbox) that it saw die; the second removal of a container asks
    // for its status first and skiffd, which removed it already, answers NotFound. (Under
    // containerd the pod is usually not yet fully stopped then, so the kubelet keeps the latest
    // container and removes nothing twice.)
    let logs = cluster.cluster_dir().join("logs");
    let kubelet_log = std::fs::read_to_string(logs.join("kubelet.log")).unwrap()
        + &std::fs::read_to_string(logs.join("kubelet-2.log")).unwrap();
    let cri_errors: Vec<&str> = kubelet_log
        .lines()
        .filter(|l| l.starts_with('E') && l.contains("rpc error"))
        .filter(|l| {
            !(l.contains("\"ContainerStatus from runtime service failed\"")
                && l.contains("code = NotFound"))
        })
        .collect();
    assert!(
        cri_errors.is_empty(),
        "the kubelet logged errors from skiffd:\n{}",
        cri_errors.join("\n")
    );

    node_goes_away_and_comes_back(&cluster);

    // A crash: the kubelet and skiffd die with the cluster's pods still there. `up` again
    // finds the cluster broken, takes it down and brings it up again.
    for (name, pid) in cluster.pids() {
        if name == "kubelet" || name == "skiffd" {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    cluster.up();
    let env = cluster.cluster_dir().join("cluster.env");
    let kube = skiff_tests::kube::Cluster::from_env_file(&env).unwrap();
    kube.kubectl(&["run", "again", "--image=busybox", "--", "sleep", "600"])
        .unwrap();
    kube.wait_ready("again", std::time::Duration::from_secs(120))
        .unwrap();

    let out = cluster.script("down");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = cluster.leftovers();
    assert!(left.is_empty(), "cluster.sh down left: {left:#?}");
}
