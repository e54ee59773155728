//! Exec, attach and port-forward through skiffd's streaming server, driven by an independent
//! SPDY/3.1 client (`skiff_tests::spdy_client`) speaking Kubernetes' remotecommand and
//! port-forward protocols as client-go does, and by a WebSocket client
//! (`skiff_tests::ws_client`) speaking the `v4`/`v5.channel.k8s.io` channel protocols.

use serde_json::Value;
use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::Variant;
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use skiff_tests::registry::Registry;
use skiff_tests::spdy_client::{SpdyClient, UpgradeRefused};
use skiff_tests::ws_client::{self, WsClient, WsRefused};
use std::time::{Duration, Instant};
use tonic::Code;

const V4: &[&str] = &["v4.channel.k8s.io"];
const ALL: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const WAIT: Duration = Duration::from_secs(20);

/// A daemon with busybox pulled and one pod running `command` in a container.
struct Fixture {
    daemon: Skiffd,
    _registry: Registry,
    _logs: tempfile::TempDir,
    pod: String,
    container: String,
}

impl Fixture {
    async fn start(name: &str, command: &[&str]) -> Fixture {
        Self::start_with(name, command, |_| {}).await
    }

    /// Like [`Fixture::start`], with a chance to edit the container's config.
    async fn start_with(
        name: &str,
        command: &[&str],
        edit: impl FnOnce(&mut cri::ContainerConfig),
    ) -> Fixture {
        let registry = Registry::start().unwrap();
        let daemon = Skiffd::start("[streaming]\ntoken_ttl_secs = 2\n").unwrap();
        let image = pull_busybox(&daemon, &registry, Variant::Plain)
            .await
            .unwrap();
        let logs = tempfile::tempdir().unwrap();
        let config = pod_config(name, name, logs.path());
        let pod = run_pod(&daemon, &config).await.unwrap();
        let mut container_config = container_config("main", &image, command);
        edit(&mut container_config);
        let container = start_container(&daemon, &pod, &config, container_config)
            .await
            .unwrap();
        Fixture {
            daemon,
            _registry: registry,
            _logs: logs,
            pod,
            container,
        }
    }

    /// Exec's URL for `cmd`.
    async fn exec_url(&self, cmd: &[&str], tty: bool, stdin: bool) -> String {
        self.daemon
            .runtime()
            .await
            .unwrap()
            .exec(cri::ExecRequest {
                container_id: self.container.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    /// Attach's URL, with stdout (and stderr without a terminal).
    async fn attach_url(&self, tty: bool, stdin: bool) -> String {
        self.daemon
            .runtime()
            .await
            .unwrap()
            .attach(cri::AttachRequest {
                container_id: self.container.clone(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    async fn port_forward_url(&self) -> String {
        self.daemon
            .runtime()
            .await
            .unwrap()
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: self.pod.clone(),
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }
}

/// The streams of one exec, opened as client-go opens them: error first.
struct Exec {
    client: SpdyClient,
    error: u32,
    stdin: Option<u32>,
    stdout: u32,
    stderr: Option<u32>,
    resize: Option<u32>,
}

async fn open_exec(url: &str, protocols: &[&str], tty: bool, stdin: bool) -> Exec {
    let client = SpdyClient::connect(url, protocols).await.unwrap();
    open_exec_streams(client, tty, stdin).await
}

async fn open_exec_streams(client: SpdyClient, tty: bool, stdin: bool) -> Exec {
    let open = |kind: &'static str| {
        let client = &client;
        async move { client.open_stream(&[("streamType", kind)]).await.unwrap() }
    };
    let error = open("error").await;
    let stdin = if stdin {
        Some(open("stdin").await)
    } else {
        None
    };
    let stdout = open("stdout").await;
    let stderr = if tty {
        None
    } else {
        Some(open("stderr").await)
    };
    let resize = if tty {
        Some(open("resize").await)
    } else {
        None
    };
    Exec {
        client,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    }
}

impl Exec {
    /// stdout, stderr and the error stream's content, once the server closed them.
    async fn outcome(&self) -> (String, String, String) {
        let stdout = self.client.read_to_end(self.stdout, WAIT).await.unwrap();
        let stderr = match self.stderr {
            Some(id) => self.client.read_to_end(id, WAIT).await.unwrap(),
            None => Vec::new(),
        };
        let error = self.client.read_to_end(self.error, WAIT).await.unwrap();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).to_string();
        (text(stdout), text(stderr), text(error))
    }
}

/// The exit code a v4 error stream reports.
fn exit_code(status: &str) -> i64 {
    let status: Value = serde_json::from_str(status).unwrap();
    match status["status"].as_str() {
        Some("Success") => 0,
        Some("Failure") => {
            assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
            let cause = &status["details"]["causes"][0];
            assert_eq!(cause["reason"], "ExitCode", "{status}");
            cause["message"].as_str().unwrap().parse().unwrap()
        }
        other => panic!("unexpected status {other:?}: {status}"),
    }
}

/// PIDs of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// PIDs of processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exec_without_tty_reports_output_and_exit_codes() {
    let fx = Fixture::start("exec-pipes", &["sleep", "3600"]).await;

    let url = fx
        .exec_url(&["sh", "-c", "echo out; echo err >&2"], false, false)
        .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let exec = open_exec(&url, ALL, false, false).await;
    assert_eq!(exec.client.protocol.as_deref(), Some("v5.channel.k8s.io"));
    exec.client.ping().await.unwrap();
    let (stdout, stderr, status) = exec.outcome().await;
    assert_eq!((stdout.as_str(), stderr.as_str()), ("out\n", "err\n"));
    assert_eq!(exit_code(&status), 0);
    // After the outcome the server says goodbye.
    exec.client.wait_closed(WAIT).await.unwrap();
    assert!(exec.client.goaway());

    let url = fx
        .exec_url(&["sh", "-c", "echo partial; exit 7"], false, false)
        .await;
    let exec = open_exec(&url, V4, false, false).await;
    let (stdout, _, status) = exec.outcome().await;
    assert_eq!(stdout, "partial\n");
    assert_eq!(exit_code(&status), 7);

    // Before v4 the error stream is plain text, and empty on success.
    for (cmd, expected) in [("exit 0", ""), ("exit 2", "exit status 2")] {
        let url = fx.exec_url(&["sh", "-c", cmd], false, false).await;
        let exec = open_exec(&url, &["v2.channel.k8s.io"], false, false).await;
        assert_eq!(exec.client.protocol.as_deref(), Some("v2.channel.k8s.io"));
        let (_, _, status) = exec.outcome().await;
        assert!(
            status.contains(expected) && (expected.is_empty() == status.is_empty()),
            "{cmd}: {status:?}"
        );
    }

    // A background child holding stdout open does not keep the exec open forever.
    let started = Instant::now();
    let url = fx
        .exec_url(&["sh", "-c", "sleep 30 & echo done"], false, false)
        .await;
    let exec = open_exec(&url, V4, false, false).await;
    let (stdout, _, status) = exec.outcome().await;
    assert_eq!((stdout.as_str(), exit_code(&status)), ("done\n", 0));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A command that does not exist is a failure, not a hang.
    let url = fx.exec_url(&["/no/such/binary"], false, false).await;
    let exec = open_exec(&url, V4, false, false).await;
    let (_, _, status) = exec.outcome().await;
    assert_ne!(exit_code(&status), 0, "{status}");
}

#[tokio::test]
async fn exec_pipes_stdin_and_large_output_with_and_without_flow_control() {
    let fx = Fixture::start("exec-stdin", &["sleep", "3600"]).await;

    // stdin is copied in and its end closes the process's stdin.
    let url = fx.exec_url(&["cat"], false, true).await;
    let exec = open_exec(&url, ALL, false, true).await;
    let stdin = exec.stdin.unwrap();
    exec.client.write(stdin, b"hello\n").await.unwrap();
    exec.client
        .wait_for_output(exec.stdout, "hello\n", WAIT)
        .await
        .unwrap();
    // The server keeps its side of stdin open: client-go closes stdin when it sees it closed.
    assert!(!exec.client.stream(stdin).fin);
    exec.client.write(stdin, b"world\n").await.unwrap();
    exec.client.close(stdin).await.unwrap();
    let (stdout, _, status) = exec.outcome().await;
    assert_eq!(stdout, "hello\nworld\n");
    assert_eq!(exit_code(&status), 0);

    // Megabytes through a client that keeps windows, and through one that ignores them
    // (Kubernetes' Go client), both in and out.
    const SIZE: usize = 3 << 20;
    let cmd = format!("head -c {SIZE} /dev/zero | tr '\\0' x");
    for strict in [true, false] {
        let url = fx.exec_url(&["sh", "-c", &cmd], false, false).await;
        let client = if strict {
            SpdyClient::connect(&url, V4).await.unwrap()
        } else {
            SpdyClient::without_flow_control(&url, V4).await.unwrap()
        };
        let exec = open_exec_streams(client, false, false).await;
        let (stdout, _, status) = exec.outcome().await;
        assert_eq!(stdout.len(), SIZE, "strict={strict}");
        assert!(stdout.bytes().all(|b| b == b'x'));
        assert_eq!(exit_code(&status), 0);
    }
    let url = fx.exec_url(&["wc", "-c"], false, true).await;
    let exec = open_exec(&url, V4, false, true).await;
    let stdin = exec.stdin.unwrap();
    exec.client.write(stdin, &vec![b'y'; SIZE]).await.unwrap();
    exec.client.close(stdin).await.unwrap();
    let (stdout, _, status) = exec.outcome().await;
    assert_eq!(stdout.trim(), SIZE.to_string());
    assert_eq!(exit_code(&status), 0);
}

#[tokio::test]
async fn exec_with_tty_applies_resizes() {
    let fx = Fixture::start("exec-tty", &["sleep", "3600"]).await;
    let url = fx.exec_url(&["sh"], true, true).await;
    let exec = open_exec(&url, ALL, true, true).await;
    assert!(exec.stderr.is_none());
    let (stdin, resize) = (exec.stdin.unwrap(), exec.resize.unwrap());
    exec.client
        .write(resize, br#"{"Width":123,"Height":45}"#)
        .await
        .unwrap();
    // The shell reads its input once the size is applied.
    tokio::time::sleep(Duration::from_millis(300)).await;
    exec.client
        .write(stdin, b"stty size; echo term=$TERM; tty\n")
        .await
        .unwrap();
    exec.client
        .wait_for_output(exec.stdout, "45 123", WAIT)
        .await
        .unwrap();
    exec.client
        .write(resize, b"{\"Width\":90,\"Height\":30}\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    exec.client
        .write(stdin, b"stty size; exit 3\n")
        .await
        .unwrap();
    let (stdout, _, status) = exec.outcome().await;
    assert!(stdout.contains("30 90"), "{stdout:?}");
    assert!(stdout.contains("term=xterm"), "{stdout:?}");
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    // A terminal turns \n into \r\n.
    assert!(stdout.contains("\r\n"), "{stdout:?}");
    assert_eq!(exit_code(&status), 3);
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_no_process() {
    let fx = Fixture::start("exec-gone", &["sleep", "3600"]).await;
    for (tty, marker) in [(false, "4242"), (true, "4343")] {
        let script = format!("sleep {marker} & sleep {marker}; echo never");
        let url = fx.exec_url(&["sh", "-c", &script], tty, true).await;
        let exec = open_exec(&url, V4, tty, true).await;
        let sleep = ["sleep", marker];
        let shell = ["sh", "-c", script.as_str()];
        wait_until("the exec'd processes", || {
            processes_running(&sleep).len() == 2 && processes_running(&shell).len() == 1
        })
        .await;
        // Gone without a goodbye: the TCP connection just closes.
        drop(exec);
        wait_until("the exec'd processes to be killed", || {
            processes_running(&sleep).is_empty() && processes_running(&shell).is_empty()
        })
        .await;
    }
    // The skiff-oci processes of those execs reaped them and exited too.
    let scratch = fx.daemon.dir().join("run/streaming");
    let scratch = scratch.to_str().unwrap();
    wait_until("skiff-oci exec to exit", || {
        processes_with(scratch).is_empty()
    })
    .await;
    // The container is still fine.
    let reply = exec(&fx.daemon, &fx.container, &["echo", "alive"], 5)
        .await
        .unwrap();
    assert_eq!(reply.stdout, b"alive\n");
}

#[tokio::test]
async fn port_forward_reaches_a_server_in_the_pod() {
    let fx = Fixture::start(
        "port-forward",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    let url = fx.port_forward_url().await;
    let client = SpdyClient::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("portforward.k8s.io"));

    // Two forwarded connections, one after the other, over one session.
    for request in 0..2 {
        let request = request.to_string();
        let mut body = String::new();
        // httpd may still be starting.
        for _ in 0..50 {
            let headers = |kind| {
                [
                    ("streamType", kind),
                    ("port", "8080"),
                    ("requestID", request.as_str()),
                ]
            };
            let error = client.open_stream(&headers("error")).await.unwrap();
            client.close(error).await.unwrap();
            let data = client.open_stream(&headers("data")).await.unwrap();
            client
                .write(data, b"GET /index.html HTTP/1.0\r\n\r\n")
                .await
                .unwrap();
            client.close(data).await.unwrap();
            let reply = client.read_to_end(data, WAIT).await.unwrap();
            let error = client.read_to_end(error, WAIT).await.unwrap();
            if error.is_empty() {
                body = String::from_utf8_lossy(&reply).to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            body.starts_with("HTTP/1.") && body.contains(" 200 OK\r\n"),
            "{body:?}"
        );
        assert!(body.ends_with("\r\n\r\nhello-from-the-pod\n"), "{body:?}");
    }

    // Nothing listens on this port: the error stream says so.
    let error = client
        .open_stream(&[("streamType", "error"), ("port", "9"), ("requestID", "7")])
        .await
        .unwrap();
    let data = client
        .open_stream(&[("streamType", "data"), ("port", "9"), ("requestID", "7")])
        .await
        .unwrap();
    let message = client.read_to_end(error, WAIT).await.unwrap();
    assert!(
        String::from_utf8_lossy(&message).contains("refused"),
        "{:?}",
        String::from_utf8_lossy(&message)
    );
    client.read_to_end(data, WAIT).await.unwrap();

    // Streams without a valid port are refused.
    let err = client
        .open_stream(&[("streamType", "data"), ("port", "0"), ("requestID", "8")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RST_STREAM"), "{err}");
    client.ping().await.unwrap();
}

#[tokio::test]
async fn streaming_urls_are_single_use_and_expire() {
    let fx = Fixture::start("tokens", &["sleep", "3600"]).await;
    let refused = |e: anyhow::Error| e.downcast::<UpgradeRefused>().unwrap().status;

    let url = fx.exec_url(&["true"], false, false).await;
    let exec = open_exec(&url, V4, false, false).await;
    assert_eq!(exit_code(&exec.outcome().await.2), 0);
    let reused = SpdyClient::connect(&url, V4).await.err().unwrap();
    assert_eq!(refused(reused), 404);

    let url = fx.exec_url(&["true"], false, false).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = SpdyClient::connect(&url, V4).await.err().unwrap();
    assert_eq!(refused(expired), 404);

    // A token is bound to its kind of request.
    let url = fx.port_forward_url().await;
    let wrong = SpdyClient::connect(&url.replace("/portforward/", "/exec/"), V4)
        .await
        .err()
        .unwrap();
    assert_eq!(refused(wrong), 404);
    let made_up = format!(
        "{}/exec/{}",
        &url[..url.find("/portforward").unwrap()],
        "0".repeat(32)
    );
    assert_eq!(
        refused(SpdyClient::connect(&made_up, V4).await.err().unwrap()),
        404
    );

    // An unknown sub-protocol is refused with 403 and the accepted list.
    let url = fx.exec_url(&["true"], false, false).await;
    let unknown = SpdyClient::connect(&url, &["v9.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    let unknown = unknown.downcast::<UpgradeRefused>().unwrap();
    assert_eq!(unknown.status, 403);
    assert!(
        unknown.body.contains("v4.channel.k8s.io"),
        "{}",
        unknown.body
    );

    // The RPCs check their arguments.
    let mut runtime = fx.daemon.runtime().await.unwrap();
    let err = runtime
        .exec(cri::ExecRequest {
            container_id: fx.container.clone(),
            cmd: vec!["true".into()],
            tty: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "0".repeat(64),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = runtime
        .attach(cri::AttachRequest {
            container_id: fx.container.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = runtime
        .attach(cri::AttachRequest {
            container_id: "0".repeat(64),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    remove_pod(&fx.daemon, &fx.pod).await.unwrap();
}

/// A kubeconfig in `dir` pointing kubectl at the fake API server at `api`.
fn write_kubeconfig(dir: &std::path::Path, api: std::net::SocketAddr) -> std::path::PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    )
    .unwrap();
    kubeconfig
}

type RuntimeClient = skiff_proto::runtime::v1::runtime_service_client::RuntimeServiceClient<
    tonic::transport::Channel,
>;

/// kubectl in PATH, if installed: the real client-go, for an interoperability check.
fn kubectl() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join("kubectl"))
        .find(|p| p.is_file())
}

/// Decodes `%XX` and `+` in a query component.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// A stand-in for the Kubernetes API server, as far as `kubectl exec` and `kubectl
/// port-forward` need one: it serves the pod object and, like a kubelet, turns each exec or
/// port-forward request into a CRI call and proxies the upgrade to the URL skiffd returns.
async fn fake_apiserver(
    runtime: RuntimeClient,
    pod_id: String,
    container_id: String,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (mut runtime, pod_id, container_id) =
                (runtime.clone(), pod_id.clone(), container_id.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = conn.read_u8().await else { return };
                    head.push(b);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let param = |name: &str| -> Vec<String> {
                    query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .filter(|(k, _)| *k == name)
                        .map(|(_, v)| percent_decode(v))
                        .collect()
                };
                let flag = |n: &str| param(n).first().is_some_and(|v| v == "true" || v == "1");
                let url = if path.ends_with("/attach") {
                    runtime
                        .attach(cri::AttachRequest {
                            container_id,
                            tty: flag("tty"),
                            stdin: flag("stdin"),
                            stdout: flag("stdout"),
                            stderr: flag("stderr"),
                        })
                        .await
                        .map(|r| r.into_inner().url)
                } else if path.ends_with("/exec") {
                    runtime
                        .exec(cri::ExecRequest {
                            container_id,
                            cmd: param("command"),
                            tty: flag("tty"),
                            stdin: flag("stdin"),
                            stdout: flag("stdout"),
                            stderr: flag("stderr"),
                        })
                        .await
                        .map(|r| r.into_inner().url)
                } else if path.ends_with("/portforward") {
                    runtime
                        .port_forward(cri::PortForwardRequest {
                            pod_sandbox_id: pod_id,
                            port: vec![],
                        })
                        .await
                        .map(|r| r.into_inner().url)
                } else {
                    let name = path.rsplit('/').next().unwrap_or_default();
                    // Legacy discovery, then the pod object.
                    let pod = match path {
                        "/api" => serde_json::json!({"kind": "APIVersions", "versions": ["v1"]}),
                        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
                        "/api/v1" => serde_json::json!({
                            "kind": "APIResourceList", "groupVersion": "v1",
                            "resources": [{"name": "pods", "singularName": "pod", "namespaced": true,
                                           "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]}],
                        }),
                        _ => serde_json::json!({
                            "apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
                            "status": {"phase": "Running"},
                        }),
                    }
                    .to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{pod}",
                        pod.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    return;
                };
                let Ok(url) = url else {
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                        )
                        .await;
                    return;
                };
                let rest = url.strip_prefix("http://").unwrap();
                let (host, new_path) = rest.split_at(rest.find('/').unwrap());
                let mut upstream = tokio::net::TcpStream::connect(host).await.unwrap();
                let rewritten = text.replacen(&target, new_path, 1);
                upstream.write_all(rewritten.as_bytes()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn kubectl_exec_and_port_forward_work_against_skiffd() {
    let Some(kubectl) = kubectl() else {
        eprintln!("kubectl not installed: skipping the client-go interoperability check");
        return;
    };
    let fx = Fixture::start(
        "kubectl",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo served-by-httpd > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    let api = fake_apiserver(
        fx.daemon.runtime().await.unwrap(),
        fx.pod.clone(),
        fx.container.clone(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), api);
    let kubectl_exec = |args: &[&str], stdin: &'static [u8], websockets: bool| {
        let mut all: Vec<String> = ["exec", "web", "-c", "main"].map(String::from).to_vec();
        all.extend(args.iter().map(|a| a.to_string()));
        let (kubectl, kubeconfig) = (kubectl.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--cache-dir")
                .arg(kubeconfig.with_file_name("cache"))
                .args(&all)
                .env(
                    "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
                    if websockets { "true" } else { "false" },
                )
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            child.wait_with_output().unwrap()
        })
    };

    // Over SPDY, and over WebSocket (kubectl's default since 1.30).
    for websockets in [false, true] {
        let out = kubectl_exec(
            &["--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
            b"",
            websockets,
        )
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n", "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("to-err"),
            "{out:?}"
        );
    }
    // stdin's end is a SPDY half-close, or v5's close signal over WebSocket.
    for websockets in [false, true] {
        let out = kubectl_exec(&["-i", "--", "cat"], b"piped through\n", websockets)
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "piped through\n");
    }

    // kubectl port-forward, then a request through the forwarded port: over SPDY, and over
    // WebSocket (SPDY tunnelled in binary messages).
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    for websockets in [false, true] {
        let mut forward = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(kubeconfig.with_file_name("cache"))
            .args(["port-forward", "pod/web", ":8080"])
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(forward.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let local = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("{line}"))
            .to_string();
        let mut body = String::new();
        for _ in 0..50 {
            let mut tcp = tokio::net::TcpStream::connect(&local).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            body.clear();
            let _ = tokio::time::timeout(WAIT, tcp.read_to_string(&mut body)).await;
            if body.contains("served-by-httpd") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(body.contains(" 200 OK"), "{body:?}");
        assert!(body.ends_with("served-by-httpd\n"), "{body:?}");
        forward.kill().await.unwrap();
    }
}

#[tokio::test]
async fn attach_joins_a_containers_stdin_and_output() {
    // `cat` with stdin kept open for attach; its first session's end closes it (stdin_once).
    let fx = Fixture::start_with("attach-cat", &["sh", "-c", "cat; echo eof >&2"], |c| {
        c.stdin = true;
        c.stdin_once = true;
    })
    .await;

    // An output-only client over WebSocket, next to a SPDY client that types.
    let url = fx.attach_url(false, false).await;
    let watcher = WsClient::connect(&url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(watcher.protocol.as_deref(), Some("v4.channel.k8s.io"));
    let url = fx.attach_url(false, true).await;
    let typist = open_exec(&url, ALL, false, true).await;
    let stdin = typist.stdin.unwrap();
    typist.client.write(stdin, b"hello\n").await.unwrap();
    typist
        .client
        .wait_for_output(typist.stdout, "hello\n", WAIT)
        .await
        .unwrap();
    watcher
        .wait(WAIT, |r| {
            r.channels[ws_client::STDOUT as usize] == b"hello\n"
        })
        .await
        .unwrap();
    typist.client.write(stdin, b"world\n").await.unwrap();
    // Closing stdin ends the container's input: cat exits and so does the container.
    typist.client.close(stdin).await.unwrap();
    let (stdout, stderr, status) = typist.outcome().await;
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("hello\nworld\n", "eof\n")
    );
    assert_eq!(exit_code(&status), 0);
    typist.client.wait_closed(WAIT).await.unwrap();
    let seen = watcher.wait_closed(WAIT).await.unwrap();
    assert_eq!(seen.channels[ws_client::STDOUT as usize], b"hello\nworld\n");
    assert_eq!(seen.channels[ws_client::STDERR as usize], b"eof\n");
    assert_eq!(
        exit_code(&String::from_utf8_lossy(
            &seen.channels[ws_client::ERROR as usize]
        )),
        0
    );
    let status = wait_exited(&fx.daemon, &fx.container, 10).await.unwrap();
    assert_eq!(status.exit_code, 0);

    // An exited container cannot be attached to.
    let err = fx
        .daemon
        .runtime()
        .await
        .unwrap()
        .attach(cri::AttachRequest {
            container_id: fx.container.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
}

#[tokio::test]
async fn attach_to_a_tty_container_applies_resizes() {
    let fx = Fixture::start_with(
        "attach-tty",
        &[
            "sh",
            "-c",
            "while read l; do echo \"size $(stty size) $l\"; done",
        ],
        |c| {
            c.tty = true;
            c.stdin = true;
        },
    )
    .await;
    let url = fx.attach_url(true, true).await;
    let attach = open_exec(&url, ALL, true, true).await;
    let (stdin, resize) = (attach.stdin.unwrap(), attach.resize.unwrap());
    attach
        .client
        .write(resize, br#"{"Width":123,"Height":45}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    attach.client.write(stdin, b"one\n").await.unwrap();
    attach
        .client
        .wait_for_output(attach.stdout, "size 45 123 one", WAIT)
        .await
        .unwrap();
    // The client leaving only detaches: the container carries on for the next one.
    drop(attach);

    let url = fx.attach_url(true, true).await;
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    ws.send(ws_client::RESIZE, br#"{"Width":90,"Height":30}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(ws_client::STDIN, b"two\n").await.unwrap();
    ws.wait(WAIT, |r| {
        String::from_utf8_lossy(&r.channels[ws_client::STDOUT as usize]).contains("size 30 90 two")
    })
    .await
    .unwrap();
    let status = container_status(&fx.daemon, &fx.container).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
}

#[tokio::test]
async fn exec_over_websocket() {
    let fx = Fixture::start("exec-ws", &["sleep", "3600"]).await;
    let status_of = |r: &ws_client::Received| {
        exit_code(&String::from_utf8_lossy(
            &r.channels[ws_client::ERROR as usize],
        ))
    };

    // Output on its channels, the exit code as a v4+ status, then a close.
    let url = fx
        .exec_url(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        )
        .await;
    let ws = WsClient::connect(&url, &["base64.channel.k8s.io", "v5.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    let got = ws.wait_closed(WAIT).await.unwrap();
    assert_eq!(got.channels[ws_client::STDOUT as usize], b"out\n");
    assert_eq!(got.channels[ws_client::STDERR as usize], b"err\n");
    assert_eq!(status_of(&got), 3);
    // The server announced the streams with an empty message first.
    assert_eq!(got.empty_messages[ws_client::STDOUT as usize], 1);

    // v5: stdin in, and its close signal is the process's EOF.
    let url = fx.exec_url(&["cat"], false, true).await;
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    ws.send(ws_client::STDIN, b"hi\n").await.unwrap();
    ws.wait(WAIT, |r| r.channels[ws_client::STDOUT as usize] == b"hi\n")
        .await
        .unwrap();
    ws.close_channel(ws_client::STDIN).await.unwrap();
    let got = ws.wait_closed(WAIT).await.unwrap();
    assert_eq!(got.channels[ws_client::STDOUT as usize], b"hi\n");
    assert_eq!(status_of(&got), 0);

    // v4, with a terminal and a resize.
    let url = fx.exec_url(&["sh"], true, true).await;
    let mut ws = WsClient::connect(&url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v4.channel.k8s.io"));
    ws.send(ws_client::RESIZE, br#"{"Width":100,"Height":20}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(ws_client::STDIN, b"stty size; exit 4\n")
        .await
        .unwrap();
    let got = ws.wait_closed(WAIT).await.unwrap();
    let stdout = String::from_utf8_lossy(&got.channels[ws_client::STDOUT as usize]).to_string();
    assert!(stdout.contains("20 100"), "{stdout:?}");
    assert_eq!(status_of(&got), 4);

    // A client that leaves mid-stream leaves no process behind.
    let url = fx.exec_url(&["sleep", "4545"], false, true).await;
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    wait_until("the exec'd process", || {
        processes_running(&["sleep", "4545"]).len() == 1
    })
    .await;
    ws.close().await.unwrap();
    drop(ws);
    wait_until("the exec'd process to be killed", || {
        processes_running(&["sleep", "4545"]).is_empty()
    })
    .await;

    // No subprotocol we speak: 400, and the URL still works for the SPDY fallback.
    let url = fx.exec_url(&["echo", "spdy"], false, false).await;
    let refused = WsClient::connect(&url, &["base64.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.downcast::<WsRefused>().unwrap().status, 400);
    let exec = open_exec(&url, ALL, false, false).await;
    let (stdout, _, status) = exec.outcome().await;
    assert_eq!((stdout.as_str(), exit_code(&status)), ("spdy\n", 0));
    // A used token is refused over WebSocket too.
    let reused = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert_eq!(reused.downcast::<WsRefused>().unwrap().status, 404);
}

#[tokio::test]
async fn kubectl_attach_works_against_skiffd() {
    let Some(kubectl) = kubectl() else {
        eprintln!("kubectl not installed: skipping the client-go interoperability check");
        return;
    };
    let fx = Fixture::start_with("kubectl-attach", &["sh", "-c", "cat; echo done >&2"], |c| {
        c.stdin = true;
        c.stdin_once = true;
    })
    .await;
    let api = fake_apiserver(
        fx.daemon.runtime().await.unwrap(),
        fx.pod.clone(),
        fx.container.clone(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), api);
    // kubectl's default transport (WebSocket); the end of its stdin ends the container's.
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(kubeconfig.with_file_name("cache"))
            .args(["attach", "web", "-c", "main", "-i"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // After the session is up, so the echo is not missed.
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"attached\n").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "attached\n",
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("done"),
        "{out:?}"
    );
    let status = wait_exited(&fx.daemon, &fx.container, 10).await.unwrap();
    assert_eq!(status.exit_code, 0);
}
