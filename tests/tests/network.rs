//! Pod networking end to end through skiffd and the bundled CNI plugins: every pod gets its own
//! IP, pods reach each other and the host reaches them, a hostPort on 127.0.0.1 reaches a pod,
//! and pods reach an "outside" network namespace through masquerade.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::Variant;
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use skiff_tests::registry::Registry;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A web server container command serving `body` on port 8080.
fn web(body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"),
    ]
}

/// GET http://addr/ from the host, with bounded waits; the response body.
fn host_get(addr: &str) -> std::io::Result<String> {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Retries `f` for a few seconds: a server in a just-started container needs a moment.
async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..60 {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// wget from inside a container, bounded by the ExecSync timeout.
async fn pod_get(daemon: &Skiffd, container: &str, url: &str) -> Option<String> {
    for _ in 0..30 {
        if let Ok(reply) = exec(daemon, container, &["wget", "-q", "-O", "-", url], 5).await {
            if reply.exit_code == 0 {
                return Some(String::from_utf8_lossy(&reply.stdout).into_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Leases held in the daemon's IPAM data dir (files named by IP).
fn leases(daemon: &Skiffd) -> Vec<String> {
    let net = daemon.network().unwrap();
    let dir = daemon
        .dir()
        .join("cni-leases")
        .join(format!("skiff-test-{}", net.number));
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn pods_reach_each_other_and_the_host_reaches_them_by_ip_and_host_port() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();

    let host_port = free_port();
    let mut web_pod = pod_config("net-web", "web", logs.path());
    web_pod.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let web_id = run_pod(&daemon, &web_pod).await.unwrap();
    let args = web("hello-from-web");
    let mut config = container_config("web", &image, &[]);
    config.command = args;
    start_container(&daemon, &web_id, &web_pod, config)
        .await
        .unwrap();

    let client_pod = pod_config("net-client", "client", logs.path());
    let client_id = run_pod(&daemon, &client_pod).await.unwrap();
    let client = start_container(
        &daemon,
        &client_id,
        &client_pod,
        container_config("client", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();

    let web_ip = pod_ip(&daemon, &web_id).await.unwrap();
    let client_ip = pod_ip(&daemon, &client_id).await.unwrap();
    assert_ne!(web_ip, client_ip);

    // Pod to pod, by IP.
    let body = pod_get(&daemon, &client, &format!("http://{web_ip}:8080/")).await;
    assert_eq!(body.as_deref(), Some("hello-from-web\n"));
    // Host to pod, by IP.
    let body = eventually(|| host_get(&format!("{web_ip}:8080")).ok()).await;
    assert_eq!(body.as_deref(), Some("hello-from-web\n"));
    // Host to pod through the hostPort on the host's own loopback.
    let body = eventually(|| host_get(&format!("127.0.0.1:{host_port}")).ok()).await;
    assert_eq!(body.as_deref(), Some("hello-from-web\n"));

    assert_eq!(leases(&daemon).len(), 2);
    remove_pod(&daemon, &web_id).await.unwrap();
    remove_pod(&daemon, &client_id).await.unwrap();
    assert!(
        leases(&daemon).is_empty(),
        "IPs released: {:?}",
        leases(&daemon)
    );
    assert!(
        host_get(&format!("127.0.0.1:{host_port}")).is_err(),
        "the hostPort is gone with the pod"
    );
}

/// A network namespace standing in for a host outside the node, reachable from the node over a
/// veth pair, with no route back to the pod subnet: only masqueraded traffic gets answers.
struct Outside {
    ns: String,
    host_if: String,
    server: Option<Child>,
    _www: tempfile::TempDir,
}

impl Outside {
    fn new(number: u8) -> Outside {
        let (ns, host_if, peer) = (
            format!("skout{number}"),
            format!("skoh{number}"),
            format!("skon{number}"),
        );
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), "hello-from-outside\n").unwrap();
        let mut outside = Outside {
            ns: ns.clone(),
            host_if: host_if.clone(),
            server: None,
            _www: www,
        };
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        run(&["netns", "add", &ns]);
        run(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["link", "set", &peer, "netns", &ns]);
        run(&[
            "addr",
            "add",
            &format!("10.217.{number}.1/24"),
            "dev",
            &host_if,
        ]);
        run(&["link", "set", &host_if, "up"]);
        run(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.217.{number}.2/24"),
            "dev",
            &peer,
        ]);
        run(&["-n", &ns, "link", "set", &peer, "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
            ])
            .arg(outside._www.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        outside.server = Some(server);
        outside
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[tokio::test]
async fn pods_reach_an_outside_host_through_masquerade() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start("").unwrap();
    let number = daemon.network().unwrap().number;
    let outside = Outside::new(number);
    let image = pull_busybox(&daemon, &registry, Variant::Plain)
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let pod = pod_config("net-masq", "masq", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let client = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("client", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();
    let body = pod_get(&daemon, &client, &format!("http://10.217.{number}.2/")).await;
    assert_eq!(body.as_deref(), Some("hello-from-outside\n"));
    remove_pod(&daemon, &pod_id).await.unwrap();
    drop(outside);
}

#[tokio::test]
async fn fifty_pods_created_at_once_get_unique_ips_released_on_removal() {
    let daemon = Skiffd::start("").unwrap();
    let logs = tempfile::tempdir().unwrap();
    let configs: Vec<_> = (0..50)
        .map(|i| pod_config(&format!("many-{i}"), &format!("many-{i}"), logs.path()))
        .collect();
    let ids: Vec<String> = futures::future::join_all(configs.iter().map(|c| run_pod(&daemon, c)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut ips = HashSet::new();
    for id in &ids {
        assert!(
            ips.insert(pod_ip(&daemon, id).await.unwrap()),
            "duplicate IP"
        );
    }
    assert_eq!(ips.len(), 50);
    assert_eq!(leases(&daemon).len(), 50);
    futures::future::join_all(ids.iter().map(|id| remove_pod(&daemon, id)))
        .await
        .into_iter()
        .for_each(Result::unwrap);
    assert!(leases(&daemon).is_empty(), "{:?}", leases(&daemon));
}

/// The reference plugins (Debian's containernetworking-plugins) driven by skiffd.
struct ReferenceBridge(String);

impl Drop for ReferenceBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn skiffd_drives_the_reference_plugins_too() {
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        panic!("containernetworking-plugins is not installed (make test installs it)");
    }
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start_bare("").unwrap();
    // A subnet number of its own: a throwaway fixture holds the lock for it.
    let holder = Skiffd::start("").unwrap();
    let number = holder.network().unwrap().number;
    let bridge = ReferenceBridge(format!("skr{number}"));
    for plugin in ["bridge", "host-local", "loopback"] {
        std::os::unix::fs::symlink(
            format!("/usr/lib/cni/{plugin}"),
            daemon.cni_bin_dir().join(plugin),
        )
        .unwrap();
    }
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("reference-{number}"),
        "plugins": [{
            "type": "bridge",
            "bridge": bridge.0,
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.218.{number}.0/24")}]],
                "dataDir": daemon.dir().join("reference-leases"),
            }
        }]
    });
    std::fs::write(
        daemon.cni_conf_dir().join("10-reference.conflist"),
        conflist.to_string(),
    )
    .unwrap();

    let image = pull_busybox(&daemon, &registry, Variant::Plain)
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let server = pod_config("ref-web", "ref-web", logs.path());
    let server_id = run_pod(&daemon, &server).await.unwrap();
    let mut config = container_config("web", &image, &[]);
    config.command = web("hello-over-reference-bridge");
    start_container(&daemon, &server_id, &server, config)
        .await
        .unwrap();
    let client = pod_config("ref-client", "ref-client", logs.path());
    let client_id = run_pod(&daemon, &client).await.unwrap();
    let shell = start_container(
        &daemon,
        &client_id,
        &client,
        container_config("shell", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();
    let server_ip = pod_ip(&daemon, &server_id).await.unwrap();
    assert!(
        server_ip.starts_with(&format!("10.218.{number}.")),
        "{server_ip}"
    );
    let body = pod_get(&daemon, &shell, &format!("http://{server_ip}:8080/")).await;
    assert_eq!(body.as_deref(), Some("hello-over-reference-bridge\n"));
    remove_pod(&daemon, &server_id).await.unwrap();
    remove_pod(&daemon, &client_id).await.unwrap();
    let leases = std::fs::read_dir(
        daemon
            .dir()
            .join(format!("reference-leases/reference-{number}")),
    )
    .map(|d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
            .count()
    })
    .unwrap_or(0);
    assert_eq!(leases, 0, "host-local leases released by skiffd's DEL");
}

/// NetworkReady, as the kubelet reads it from Status.
async fn network_ready(daemon: &Skiffd) -> bool {
    let status = daemon
        .runtime()
        .await
        .unwrap()
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    status
        .status
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.r#type == "NetworkReady" && c.status)
}

async fn update_pod_cidr(daemon: &Skiffd, cidr: &str) -> Result<(), tonic::Status> {
    daemon
        .runtime()
        .await
        .unwrap()
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: cidr.to_string(),
                }),
            }),
        })
        .await
        .map(|_| ())
}

/// A kubelet's node: no network config until the kubelet passes the node's pod CIDR
/// (UpdateRuntimeConfig); then skiffd writes it from `cni.conf_template`, the network turns
/// ready and pods get addresses from that CIDR.
#[tokio::test]
async fn the_pod_cidr_from_update_runtime_config_configures_the_network() {
    let template = tempfile::tempdir().unwrap();
    let template_path = template.path().join("template.conflist");
    let daemon = Skiffd::start(&format!("conf_template = {template_path:?}")).unwrap();
    // The fixture's network config becomes the template: its subnet is left to the kubelet.
    let number = daemon.network().unwrap().number;
    let installed = daemon.cni_conf_dir().join("10-test.conflist");
    let conflist = std::fs::read_to_string(&installed).unwrap();
    let subnet = format!("10.216.{number}.0/24");
    assert!(conflist.contains(&subnet));
    std::fs::write(&template_path, conflist.replace(&subnet, "{{.PodCIDR}}")).unwrap();
    std::fs::remove_file(&installed).unwrap();
    assert!(!network_ready(&daemon).await, "no network config yet");

    let bad = update_pod_cidr(&daemon, "10.216.0.0/24\"}]")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(!network_ready(&daemon).await);

    let cidr = format!("10.216.{number}.128/25");
    update_pod_cidr(&daemon, &cidr).await.unwrap();
    update_pod_cidr(&daemon, &cidr).await.unwrap();
    assert!(network_ready(&daemon).await);
    let logs = tempfile::tempdir().unwrap();
    let pod = run_pod(&daemon, &pod_config("cidr", "cidr", logs.path()))
        .await
        .unwrap();
    let ip: std::net::Ipv4Addr = pod_ip(&daemon, &pod).await.unwrap().parse().unwrap();
    let [a, b, c, d] = ip.octets();
    assert_eq!((a, b, c), (10, 216, number), "{ip}");
    assert!(d > 128, "{ip} is outside {cidr}");
    remove_pod(&daemon, &pod).await.unwrap();
}
