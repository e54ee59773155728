//! The skiff walkthrough: the Kubernetes networking story on one host, every step printed with
//! what was observed, in the order the chain runs (CRI call → namespaces → CNI ADD → IP →
//! containers). Everything it makes is removed at the end.

use anyhow::{bail, Context, Result};
use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::{busybox_layout, Variant, BUSYBOX_TAG};
use skiff_tests::cri::{container_config, exec, pod_config, remove_pod, run_pod, start_container};
use skiff_tests::daemon::Skiffd;
use skiff_tests::registry::{push, Format, Registry};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

fn step(text: &str) {
    println!("\n==> {text}");
}

fn saw(text: impl AsRef<str>) {
    println!("    {}", text.as_ref());
}

/// A busybox web server on port 8080 answering `body`.
fn web_server(body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /www && echo '{body}' > /www/index.html && exec httpd -f -p 8080 -h /www"
        ),
    ]
}

/// wget from inside a container, retried while the server starts; bounded by ExecSync.
async fn wget(daemon: &Skiffd, container: &str, url: &str) -> Result<String> {
    for _ in 0..50 {
        let reply = exec(daemon, container, &["wget", "-q", "-O", "-", url], 5).await?;
        if reply.exit_code == 0 {
            return Ok(String::from_utf8_lossy(&reply.stdout).trim().to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer from {container}")
}

/// GET http://addr/ from the host itself.
fn host_get(addr: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            s.read_to_string(&mut response)?;
            Ok(response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.trim().to_string())
                .unwrap_or_default())
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

async fn pod_ip(daemon: &Skiffd, id: &str) -> Result<String> {
    let status = daemon
        .runtime()
        .await?
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no status")?;
    Ok(status.network.context("pod has no network")?.ip)
}

/// RunPodSandbox, narrated: the namespaces it pinned and the IP the CNI plugin gave it.
async fn narrate_pod(daemon: &Skiffd, config: &cri::PodSandboxConfig) -> Result<(String, String)> {
    let started = Instant::now();
    let id = run_pod(daemon, config).await?;
    let ip = pod_ip(daemon, &id).await?;
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or("");
    saw(format!(
        "RunPodSandbox {name} -> {} in {:?}",
        &id[..12],
        started.elapsed()
    ));
    let ns = daemon
        .dir()
        .join("run/pinroot/sandboxes")
        .join(&id)
        .join("ns");
    saw(format!(
        "  namespaces pinned in skiffd's pin space: {}/{{net,ipc,uts}}",
        ns.display()
    ));
    saw(format!(
        "  CNI ADD (skiff-bridge) -> eth0 {ip} on bridge {}",
        bridge(daemon)
    ));
    Ok((id, ip))
}

fn bridge(daemon: &Skiffd) -> String {
    daemon
        .network()
        .map(|n| n.bridge.clone())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    step("Images: a busybox image from the host's static /bin/busybox, in a real OCI registry");
    let registry = Registry::start()?;
    let digest = push(
        &busybox_layout(Variant::Plain),
        BUSYBOX_TAG,
        &registry,
        "e2e-test-images/busybox:1.29-2",
        Format::Oci,
    )?;
    saw(format!(
        "registry http://{} has e2e-test-images/busybox@{}",
        registry.addr(),
        &digest[..19]
    ));

    step("skiffd: CRI v1 on a unix socket; registry.k8s.io mirrored to the local registry");
    let mirror = format!(
        "[registry.hosts.\"registry.k8s.io\"]\nmirrors = [\"http://{}\"]\n",
        registry.addr()
    );
    let daemon = Skiffd::start(&mirror)?;
    let network = daemon.network().context("test network")?;
    saw(format!("socket {}", daemon.socket.display()));
    saw(format!(
        "CNI network: skiff-bridge + skiff-portmap, bridge {}, pods in 10.216.{}.0/24",
        network.bridge, network.number
    ));
    let mut runtime = daemon.runtime().await?;
    let v = runtime
        .version(cri::VersionRequest::default())
        .await?
        .into_inner();
    saw(format!(
        "Version: {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    ));
    let status = runtime
        .status(cri::StatusRequest { verbose: false })
        .await?
        .into_inner();
    for c in status.status.context("no status")?.conditions {
        saw(format!("Status: {} = {} {}", c.r#type, c.status, c.message));
    }

    step(&format!("PullImage {IMAGE}"));
    let started = Instant::now();
    let pulled = daemon
        .images()
        .await?
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    saw(format!(
        "image {} in {:?} (through the mirror)",
        &pulled.image_ref[..19],
        started.elapsed()
    ));

    let logs = tempfile::tempdir()?;
    step("1. Containers in one pod share localhost");
    let pod = pod_config("shared-localhost", "shared", logs.path());
    let (pod_id, _) = narrate_pod(&daemon, &pod).await?;
    let mut web = container_config("web", IMAGE, &[]);
    web.command = web_server("hello from the web container");
    start_container(&daemon, &pod_id, &pod, web).await?;
    saw("CreateContainer + StartContainer web: busybox httpd on :8080");
    let sidecar = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("sidecar", IMAGE, &["sleep", "3600"]),
    )
    .await?;
    saw("CreateContainer + StartContainer sidecar: sleep");
    let body = wget(&daemon, &sidecar, "http://127.0.0.1:8080/").await?;
    saw(format!("sidecar$ wget http://127.0.0.1:8080/ -> {body:?}"));

    step("2. Every pod gets its own IP and reaches every other pod");
    let server = pod_config("server", "server", logs.path());
    let (server_id, server_ip) = narrate_pod(&daemon, &server).await?;
    let mut web = container_config("web", IMAGE, &[]);
    web.command = web_server("hello from the server pod");
    start_container(&daemon, &server_id, &server, web).await?;
    let mut clients = Vec::new();
    for name in ["client-a", "client-b"] {
        let config = pod_config(name, name, logs.path());
        let (id, ip) = narrate_pod(&daemon, &config).await?;
        let container = start_container(
            &daemon,
            &id,
            &config,
            container_config("shell", IMAGE, &["sleep", "3600"]),
        )
        .await?;
        clients.push((name, id, ip, container));
    }
    for (name, _, ip, container) in &clients {
        let body = wget(&daemon, container, &format!("http://{server_ip}:8080/")).await?;
        saw(format!(
            "{name} ({ip})$ wget http://{server_ip}:8080/ -> {body:?}"
        ));
    }
    let (_, _, b_ip, a_container) = (&clients[1].0, &clients[1].1, &clients[1].2, &clients[0].3);
    let reply = exec(
        &daemon,
        a_container,
        &["ping", "-c", "1", "-W", "2", b_ip],
        5,
    )
    .await?;
    saw(format!(
        "client-a$ ping -c 1 {b_ip} -> exit {}",
        reply.exit_code
    ));

    step("3. The host reaches a pod by its IP");
    let body = host_get(&format!("{server_ip}:8080"))?;
    saw(format!("host$ GET http://{server_ip}:8080/ -> {body:?}"));

    step("4. A hostPort: the host's 127.0.0.1:<port> forwards to a pod");
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut published = pod_config("published", "published", logs.path());
    published.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let (published_id, published_ip) = narrate_pod(&daemon, &published).await?;
    saw(format!(
        "  CNI ADD (skiff-portmap): 127.0.0.1:{host_port} -> {published_ip}:8080"
    ));
    let mut web = container_config("web", IMAGE, &[]);
    web.command = web_server("hello through the hostPort");
    start_container(&daemon, &published_id, &published, web).await?;
    let body = host_get(&format!("127.0.0.1:{host_port}"))?;
    saw(format!(
        "host$ GET http://127.0.0.1:{host_port}/ -> {body:?}"
    ));

    step("Cleanup: StopPodSandbox + RemovePodSandbox (CNI DEL releases IPs and rules)");
    let mut all = vec![pod_id, server_id, published_id];
    all.extend(clients.into_iter().map(|(_, id, _, _)| id));
    for id in &all {
        remove_pod(&daemon, id).await?;
    }
    let left = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items
        .len();
    saw(format!("pods left: {left}"));
    drop(daemon);
    saw("skiffd stopped, bridge removed, registry stopped, temp dirs removed");
    Ok(())
}
