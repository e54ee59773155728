//! The seed's Kubernetes story on a real node whose container runtime is skiff: each step is a
//! `kubectl` command a reader could type, followed by what was observed (HTTP bytes, DNS
//! answers, exit codes, restart counts, the node's files). It runs against a cluster that
//! `scripts/cluster.sh up` made and removes what it creates. Exit status 1 if a claim fails.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use skiff_tests::kube::{http_get, http_get_path, retry, title, Cluster, DEFAULT_ENV_FILE};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Walk through the seed's Kubernetes demos on a cluster whose runtime is skiff")]
struct Args {
    /// The settings file `scripts/cluster.sh up` wrote.
    #[arg(long, default_value = DEFAULT_ENV_FILE)]
    env: PathBuf,
    /// The directory holding the example manifests.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))]
    examples: PathBuf,
}

const READY: Duration = Duration::from_secs(120);

fn step(text: &str) {
    println!("\n==> {text}");
}

fn saw(text: impl AsRef<str>) {
    for line in text.as_ref().lines() {
        println!("    {line}");
    }
}

fn main() {
    // A reader may pipe the walkthrough into `head`: stop quietly when stdout goes away.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    let result = Cluster::from_env_file(&args.env).and_then(|cluster| {
        let demo = Demo {
            cluster,
            examples: args.examples,
        };
        let outcome = demo.run();
        demo.clean_up();
        outcome
    });
    if let Err(e) = result {
        eprintln!("\nskiff-cluster-demo: {e:#}");
        std::process::exit(1);
    }
    println!("\nEvery step answered as expected.");
}

struct Demo {
    cluster: Cluster,
    examples: PathBuf,
}

impl Demo {
    fn manifest(&self, name: &str) -> String {
        self.examples.join(name).display().to_string()
    }

    fn run(&self) -> Result<()> {
        let c = &self.cluster;
        let node = c.var("NODE_NAME")?;
        step("kubectl get nodes  (the node's container runtime is skiff)");
        let runtime = c.get(
            &format!("node {node}"),
            "{.status.nodeInfo.containerRuntimeVersion}",
        )?;
        let kubelet = c.get(&format!("node {node}"), "{.status.nodeInfo.kubeletVersion}")?;
        saw(format!(
            "{node}: Ready, kubelet {kubelet}, runtime {runtime}"
        ));
        ensure!(
            runtime.starts_with("skiff"),
            "the node's runtime is {runtime}"
        );

        let two_nodes = c.var("NODES").unwrap_or("1") != "1";
        let second = c
            .var("NODE_NAMES")
            .ok()
            .and_then(|n| n.split_whitespace().nth(1).map(str::to_string));
        if let (true, Some(second)) = (two_nodes, &second) {
            step(&format!(
                "kubectl cordon {second}  (the one-node demos stay on {node})"
            ));
            saw(c.kubectl(&["cordon", second])?.trim());
        }

        self.run_nginx()?;
        self.multi_container()?;
        self.three_pods()?;
        self.services()?;
        self.logs_exec_attach_port_forward()?;
        self.liveness()?;
        self.resource_metrics()?;
        self.delete_nginx()?;
        if let (true, Some(second)) = (two_nodes, &second) {
            step(&format!("kubectl uncordon {second}"));
            saw(c.kubectl(&["uncordon", second])?.trim());
            self.cross_node()?;
        }
        Ok(())
    }

    /// `kubectl run nginx --image=nginx`: the scheduler, the kubelet, skiffd, the CNI plugin.
    fn run_nginx(&self) -> Result<()> {
        let c = &self.cluster;
        step("kubectl run nginx --image=nginx");
        let begin = Instant::now();
        saw(c
            .kubectl(&["run", "nginx", "--image=nginx", "--port=80"])?
            .trim());
        c.wait_ready("nginx", READY)?;
        let ip = c.get("pod nginx", "{.status.podIP}")?;
        saw(format!(
            "pod/nginx Ready in {:.1} s, IP {ip}",
            begin.elapsed().as_secs_f64()
        ));
        step(&format!(
            "curl http://{ip}/  (from the host, to the pod's own address)"
        ));
        let (status, body) = retry(Duration::from_secs(20), || http_get(&format!("{ip}:80")))?;
        saw(format!("{status}: {}", title(&body)));
        ensure!(
            body.contains("Welcome to nginx!"),
            "nginx answered {body:?}"
        );
        Ok(())
    }

    /// Two containers of one pod share its network namespace.
    fn multi_container(&self) -> Result<()> {
        let c = &self.cluster;
        step("kubectl apply -f examples/multi-container-pod.yaml  (nginx + busybox in one pod)");
        c.kubectl(&["apply", "-f", &self.manifest("multi-container-pod.yaml")])?;
        c.wait_ready("multi-container", READY)?;
        step("kubectl exec multi-container -c sidecar -- wget -qO- http://localhost/");
        let body = retry(Duration::from_secs(20), || {
            c.exec(
                "multi-container",
                Some("sidecar"),
                &["wget", "-qO-", "http://localhost/"],
            )
        })?;
        saw(format!("-> {}", title(&body)));
        ensure!(
            body.contains("Welcome to nginx!"),
            "localhost answered {body:?}"
        );
        Ok(())
    }

    /// Every pod reaches every other by its IP.
    fn three_pods(&self) -> Result<()> {
        let c = &self.cluster;
        step("kubectl apply -f examples/three-pods.yaml");
        c.kubectl(&["apply", "-f", &self.manifest("three-pods.yaml")])?;
        let pods = ["pod-a", "pod-b", "pod-c"];
        let mut ips = Vec::new();
        for pod in pods {
            c.wait_ready(pod, READY)?;
            ips.push(c.get(&format!("pod {pod}"), "{.status.podIP}")?);
        }
        saw(format!(
            "pod-a {}, pod-b {}, pod-c {}",
            ips[0], ips[1], ips[2]
        ));
        for (from, _) in pods.iter().zip(&ips) {
            for (to, ip) in pods.iter().zip(&ips) {
                if from == to {
                    continue;
                }
                let url = format!("http://{ip}:8080/");
                let body = retry(Duration::from_secs(20), || {
                    c.exec(from, None, &["wget", "-qO-", &url])
                })?;
                saw(format!("{from}$ wget -qO- {url} -> {}", body.trim()));
                ensure!(
                    body.trim() == format!("hello from {to}"),
                    "{to} at {ip} answered {body:?}"
                );
            }
        }
        Ok(())
    }

    /// A ClusterIP Service by IP and by name (kube-proxy, CoreDNS), and a NodePort.
    fn services(&self) -> Result<()> {
        let c = &self.cluster;
        step("kubectl expose pod nginx --port=80 --name=nginx  (a ClusterIP Service)");
        c.kubectl(&["expose", "pod", "nginx", "--port=80", "--name=nginx"])?;
        let service_ip = c.get("service nginx", "{.spec.clusterIP}")?;
        saw(format!("service/nginx ClusterIP {service_ip}"));

        step(&format!(
            "kubectl exec pod-a -- wget -qO- http://{service_ip}/  (through kube-proxy)"
        ));
        let url = format!("http://{service_ip}/");
        let body = retry(Duration::from_secs(30), || {
            c.exec("pod-a", None, &["wget", "-qO-", &url])
        })?;
        saw(format!("-> {}", title(&body)));
        ensure!(
            body.contains("Welcome to nginx!"),
            "{url} answered {body:?}"
        );

        let fqdn = "nginx.default.svc.cluster.local";
        step(&format!("kubectl exec pod-a -- nslookup {fqdn}  (CoreDNS)"));
        let answer = retry(Duration::from_secs(60), || {
            let out = c.exec("pod-a", None, &["nslookup", fqdn])?;
            ensure!(out.contains(&service_ip), "{out}");
            Ok(out)
        })
        .with_context(|| format!("{fqdn} did not resolve to {service_ip}"))?;
        let server = answer
            .lines()
            .find(|l| l.starts_with("Server:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        saw(format!("{server}\n{fqdn} -> {service_ip}"));

        step("kubectl exec pod-a -- wget -qO- http://nginx/  (the short name, through the pod's search path)");
        let body = retry(Duration::from_secs(30), || {
            c.exec("pod-a", None, &["wget", "-qO-", "http://nginx/"])
        })?;
        saw(format!("-> {}", title(&body)));
        ensure!(
            body.contains("Welcome to nginx!"),
            "http://nginx/ answered {body:?}"
        );

        step("kubectl apply -f examples/nginx-nodeport.yaml  (port 30080 of the node)");
        c.kubectl(&["apply", "-f", &self.manifest("nginx-nodeport.yaml")])?;
        let node_ip = c.var("NODE_IP")?;
        step(&format!("curl http://{node_ip}:30080/  (from the host)"));
        let (status, body) = retry(Duration::from_secs(30), || {
            http_get(&format!("{node_ip}:30080"))
        })?;
        saw(format!("{status}: {}", title(&body)));
        ensure!(
            body.contains("Welcome to nginx!"),
            "the NodePort answered {body:?}"
        );
        Ok(())
    }

    /// The kubelet's streaming paths into skiffd: logs, exec with a TTY, attach, port-forward.
    fn logs_exec_attach_port_forward(&self) -> Result<()> {
        let c = &self.cluster;
        step("kubectl logs nginx --tail=2  (the requests above, in nginx's access log)");
        let logs = c.kubectl(&["logs", "nginx", "--tail=2"])?;
        saw(logs.trim());
        ensure!(
            logs.contains("\"GET / HTTP/1."),
            "no request in the log: {logs:?}"
        );

        step("kubectl exec -it nginx -- sh  (a terminal: typed `echo tty-$((6*7)); exit`)");
        let out = exec_with_tty(c, "nginx", "echo tty-$((6*7)); tty; exit\n")?;
        let shown: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("tty-") || l.starts_with("/dev/"))
            .collect();
        saw(shown.join("\n"));
        ensure!(
            out.contains("tty-42") && out.contains("/dev/pts/"),
            "the terminal showed {out:?}"
        );

        step("kubectl apply -f examples/shell-pod.yaml; kubectl attach -i shell");
        c.kubectl(&["apply", "-f", &self.manifest("shell-pod.yaml")])?;
        c.wait_ready("shell", READY)?;
        let line = attach_and_type(c, "shell", "echo attached-$((6*7))\n", "attached-42")?;
        saw(format!("typed `echo attached-$((6*7))` -> {line}"));

        step("kubectl port-forward pod/nginx :80  (then curl the local port)");
        let (mut child, port) = port_forward(c, "pod/nginx", 80)?;
        let got = retry(Duration::from_secs(10), || {
            http_get(&format!("127.0.0.1:{port}"))
        });
        let _ = child.kill();
        let _ = child.wait();
        let (status, body) = got?;
        saw(format!("127.0.0.1:{port} -> {status}: {}", title(&body)));
        ensure!(
            body.contains("Welcome to nginx!"),
            "port-forward answered {body:?}"
        );
        Ok(())
    }

    /// A failing liveness probe makes the kubelet restart the container.
    fn liveness(&self) -> Result<()> {
        let c = &self.cluster;
        step("kubectl apply -f examples/liveness.yaml  (healthy for 6 s, then the probe fails)");
        c.kubectl(&["apply", "-f", &self.manifest("liveness.yaml")])?;
        let begin = Instant::now();
        let restarts = retry(Duration::from_secs(90), || {
            let n: u32 = c
                .get(
                    "pod liveness",
                    "{.status.containerStatuses[0].restartCount}",
                )?
                .parse()
                .unwrap_or(0);
            ensure!(n >= 1, "no restart yet");
            Ok(n)
        })
        .with_context(|| c.describe("liveness"))?;
        let events = c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=liveness,reason=Unhealthy",
            "-o",
            "jsonpath={.items[0].message}",
        ])?;
        saw(format!("event Unhealthy: {}", events.trim()));
        saw(format!(
            "restartCount {restarts} after {:.0} s",
            begin.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The kubelet's resource metrics, the numbers `kubectl top` shows (through metrics-server):
    /// the kubelet reads them from skiffd's container stats and the pods' cgroups.
    fn resource_metrics(&self) -> Result<()> {
        let c = &self.cluster;
        let node = c.var("NODE_NAME")?;
        let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
        step(&format!(
            "kubectl get --raw {path}  (what kubectl top reads)"
        ));
        let (cpu, memory) = retry(Duration::from_secs(60), || {
            let text = c.kubectl(&["get", "--raw", &path])?;
            let sample = |metric: &str| -> Option<f64> {
                let prefix =
                    format!("{metric}{{container=\"nginx\",namespace=\"default\",pod=\"nginx\"}} ");
                let line = text.lines().find(|l| l.starts_with(&prefix))?;
                line[prefix.len()..].split_whitespace().next()?.parse().ok()
            };
            let cpu = sample("container_cpu_usage_seconds_total").context("no CPU sample yet")?;
            let memory =
                sample("container_memory_working_set_bytes").context("no memory sample yet")?;
            ensure!(
                cpu > 0.0 && memory > 0.0,
                "empty samples: cpu {cpu}, memory {memory}"
            );
            ensure!(
                text.contains("resource_scrape_error 0"),
                "scrape errors:\n{text}"
            );
            Ok((cpu, memory))
        })?;
        saw(format!(
            "nginx: CPU {:.3} s used, working set {:.1} MiB",
            cpu,
            memory / 1048576.0
        ));
        Ok(())
    }

    /// Deleting a pod removes everything the node made for it.
    fn delete_nginx(&self) -> Result<()> {
        let c = &self.cluster;
        let uid = c.get("pod nginx", "{.metadata.uid}")?;
        let ip = c.get("pod nginx", "{.status.podIP}")?;
        let sandbox = c
            .crictl(&["pods", "-q", "--name", "^nginx$"])?
            .trim()
            .to_string();
        ensure!(!sandbox.is_empty(), "crictl lists no sandbox for nginx");
        let state_dir = PathBuf::from(c.var("SKIFF_STATE_DIR")?);
        let netns = state_dir.join(format!("pinroot/sandboxes/{sandbox}/ns/net"));
        let ipam = Path::new(c.var("CLUSTER_DIR")?).join(format!("cni/ipam/skiff-cluster/{ip}"));
        let cgroups = pod_cgroups(c.var("CGROUP_ROOT")?, &uid);
        step("before `kubectl delete pod nginx`, on the node:");
        saw(format!(
            "sandbox {} (crictl pods)",
            &sandbox[..13.min(sandbox.len())]
        ));
        saw(format!("network namespace pinned at {}", netns.display()));
        saw(format!("IP {ip} reserved in {}", ipam.display()));
        saw(format!(
            "cgroup {}",
            cgroups
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
        ensure!(netns.exists(), "no netns pin at {}", netns.display());
        ensure!(ipam.exists(), "no IPAM reservation at {}", ipam.display());
        ensure!(!cgroups.is_empty(), "no cgroup for pod {uid}");

        step("kubectl delete pod nginx");
        let begin = Instant::now();
        c.kubectl(&["delete", "pod", "nginx", "--wait=true", "--timeout=60s"])?;
        // Each part goes at its own step: the IP when the kubelet stops the sandbox (CNI DEL),
        // the cgroups when it has cleaned up the pod, and the sandbox with its namespaces when
        // its garbage collection (once a minute) removes the dead sandbox.
        let cgroup_root = c.var("CGROUP_ROOT")?;
        let mut gone: [Option<f64>; 4] = [None; 4];
        let deadline = begin + Duration::from_secs(100);
        while gone.iter().any(Option::is_none) && Instant::now() < deadline {
            let now = begin.elapsed().as_secs_f64();
            let listed = !c
                .crictl(&["pods", "-q", "--name", "^nginx$"])?
                .trim()
                .is_empty();
            let present = [
                ipam.exists(),
                !pod_cgroups(cgroup_root, &uid).is_empty(),
                netns.exists(),
                listed,
            ];
            for (when, here) in gone.iter_mut().zip(present) {
                if when.is_none() && !here {
                    *when = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let names = [
            "IP released",
            "cgroups gone",
            "network namespace gone",
            "sandbox removed (the kubelet's garbage collection)",
        ];
        for (name, when) in names.iter().zip(gone) {
            match when {
                Some(t) => saw(format!("{name} after {t:.1} s")),
                None => bail!("{name}: not within 100 s of the delete"),
            }
        }
        saw("sandbox: gone; network namespace: gone; IP: released; cgroups: gone");
        Ok(())
    }

    /// Pods on different nodes (a cluster with NODES=2): by IP with no NAT between them, a
    /// Service with a backend on each node by name from either node, a NodePort on either
    /// node's address, and the routes that carry it all.
    fn cross_node(&self) -> Result<()> {
        let c = &self.cluster;
        let names: Vec<&str> = c.var("NODE_NAMES")?.split_whitespace().collect();
        let ips: Vec<&str> = c.var("NODE_IPS")?.split_whitespace().collect();
        ensure!(names.len() >= 2 && ips.len() >= 2, "two nodes are needed");
        step("kubectl get nodes  (two nodes, each with its own pod network)");
        for name in &names {
            let cidr = c.get(&format!("node {name}"), "{.spec.podCIDR}")?;
            let ip = c.get(
                &format!("node {name}"),
                "{.status.addresses[?(@.type==\"InternalIP\")].address}",
            )?;
            saw(format!("{name}: address {ip}, pods {cidr}"));
        }

        step("kubectl apply -f examples/cross-node.yaml  (hello-1 on node 1, hello-2 and client-2 on node 2)");
        let manifest = std::fs::read_to_string(self.examples.join("cross-node.yaml"))?
            .replace("@NODE1@", names[0])
            .replace("@NODE2@", names[1]);
        c.kubectl_with_input(&["apply", "-f", "-"], &manifest)?;
        let mut ips_of = std::collections::HashMap::new();
        for pod in ["hello-1", "hello-2", "client-2"] {
            c.wait_ready(pod, READY)?;
            ips_of.insert(pod, c.get(&format!("pod {pod}"), "{.status.podIP}")?);
        }
        saw(format!(
            "hello-1 {} on {}, hello-2 {} and client-2 {} on {}",
            ips_of["hello-1"], names[0], ips_of["hello-2"], ips_of["client-2"], names[1]
        ));

        // Across nodes by pod IP: the server sees the client's own pod address.
        for (from, to) in [("client-2", "hello-1"), ("hello-1", "hello-2")] {
            let url = format!("http://{}:8080/cgi-bin/hello", ips_of[to]);
            step(&format!("kubectl exec {from} -- wget -qO- {url}"));
            let answer = retry(Duration::from_secs(30), || {
                c.exec(from, None, &["wget", "-qO-", &url])
            })?;
            saw(format!("-> {}", answer.trim()));
            ensure!(
                answer.contains(&format!("hello from {to}"))
                    && answer.contains(&format!("you are {}", ips_of[from])),
                "{to} answered {answer:?}: not from {to}, or the client's address was rewritten"
            );
        }

        // The Service by name from a pod on each node: both backends answer in time.
        for from in ["client-2", "hello-1"] {
            step(&format!("kubectl exec {from} -- wget -qO- http://hello/cgi-bin/hello  (until both backends answered)"));
            let mut seen = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < 2 && Instant::now() < deadline {
                if let Ok(answer) =
                    c.exec(from, None, &["wget", "-qO-", "http://hello/cgi-bin/hello"])
                {
                    if let Some(line) = answer.lines().find(|l| l.starts_with("hello from")) {
                        if seen.insert(line.split(';').next().unwrap_or(line).to_string()) {
                            saw(format!("-> {}", line.trim()));
                        }
                    }
                }
            }
            ensure!(seen.len() == 2, "only {seen:?} answered from {from}");
        }

        // A NodePort on either node's address, from the host.
        for ip in &ips[..2] {
            step(&format!(
                "curl http://{ip}:30081/cgi-bin/hello  (from the host)"
            ));
            let body = retry(Duration::from_secs(30), || {
                let (status, body) = http_get_path(&format!("{ip}:30081"), "/cgi-bin/hello")?;
                ensure!(status.contains(" 200 "), "{status}");
                Ok(body)
            })?;
            saw(format!("-> {}", body.trim()));
        }

        step("ip route  (on each node: the other node's pods, through its address)");
        // Node 2 is a network namespace named after the node (scripts/cluster.sh).
        for (node, name) in [(None, names[0]), (Some(names[1]), names[1])] {
            let mut cmd = std::process::Command::new("ip");
            if let Some(netns) = &node {
                cmd.args(["-n", netns]);
            }
            let out = cmd.args(["route", "show", "proto", "83"]).output()?;
            let routes = String::from_utf8_lossy(&out.stdout).trim().to_string();
            saw(format!("{name}: {routes}"));
            ensure!(routes.contains(" via "), "no skiff-routes route on {name}");
        }
        Ok(())
    }

    /// Removes what the walkthrough made (also after a failed step).
    fn clean_up(&self) {
        let c = &self.cluster;
        if let Some(second) = c
            .var("NODE_NAMES")
            .ok()
            .and_then(|n| n.split_whitespace().nth(1))
        {
            let _ = c.kubectl(&["uncordon", second]);
        }
        let _ = c.kubectl(&[
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "service/nginx",
            "service/nginx-nodeport",
        ]);
        let _ = c.kubectl(&[
            "delete",
            "pod",
            "--ignore-not-found",
            "--grace-period=1",
            "nginx",
            "multi-container",
            "pod-a",
            "pod-b",
            "pod-c",
            "shell",
            "liveness",
            "hello-1",
            "hello-2",
            "client-2",
        ]);
        let _ = c.kubectl(&[
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "service/hello",
            "service/hello-nodeport",
        ]);
    }
}

/// The pod's cgroup directories in every hierarchy (`…/kubepods/<qos>/pod<uid>`).
fn pod_cgroups(cgroup_root: &str, uid: &str) -> Vec<PathBuf> {
    let name = format!("pod{uid}");
    let mut found = Vec::new();
    let hierarchies: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec!["/sys/fs/cgroup".into()]
    } else {
        std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for hierarchy in hierarchies {
        let kubepods = hierarchy.join(cgroup_root).join("kubepods");
        for qos in ["", "besteffort", "burstable"] {
            let dir = kubepods.join(qos).join(&name);
            if dir.is_dir() {
                found.push(dir);
            }
        }
    }
    found
}

/// `kubectl exec -it POD -- sh` on a pseudo-terminal, typing `input`; returns what it showed.
fn exec_with_tty(c: &Cluster, pod: &str, input: &str) -> Result<String> {
    let pty = nix::pty::openpty(None, None)?;
    let slave = std::fs::File::from(pty.slave);
    let mut child = c
        .kubectl_command(&["exec", "-it", pod, "--", "sh"])?
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .spawn()?;
    let mut master = std::fs::File::from(pty.master);
    // Give the remote shell a moment to start before typing, as a person would.
    std::thread::sleep(Duration::from_millis(1500));
    master.write_all(input.as_bytes())?;
    let reader = {
        let mut master = master.try_clone()?;
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Ends with EIO once kubectl exits and closes the terminal.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            seen
        })
    };
    let status = wait_bounded(&mut child, Duration::from_secs(30))?;
    drop(master);
    let seen = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    ensure!(status.success(), "kubectl exec -it exited {status}: {seen}");
    Ok(seen.replace('\r', ""))
}

/// `kubectl attach -i POD`, typing `input`; returns the first output line containing `expect`.
fn attach_and_type(c: &Cluster, pod: &str, input: &str, expect: &str) -> Result<String> {
    let mut child = c
        .kubectl_command(&["attach", "-i", pod])?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let expect_owned = expect.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&expect_owned) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    // The attach stream may take a moment to open: type until the answer shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let _ = stdin.write_all(input.as_bytes());
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
            break Some(line);
        }
        if Instant::now() > deadline {
            break None;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    line.with_context(|| format!("attach to {pod} never showed {expect:?}"))
}

/// Starts `kubectl port-forward TARGET :PORT` and returns it with the local port it chose.
fn port_forward(c: &Cluster, target: &str, port: u16) -> Result<(Child, u16)> {
    let mut child = c
        .kubectl_command(&["port-forward", target, &format!(":{port}")])?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // "Forwarding from 127.0.0.1:40123 -> 80"
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let local = line
                .strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(local) = local {
                let _ = tx.send(local);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(local) => Ok((child, local)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kubectl port-forward printed no local port")
        }
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
