//! A cluster made by `scripts/cluster.sh`, seen from outside as a user sees it: `kubectl`,
//! `crictl`, HTTP from the host, and the files and cgroups the node keeps.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where `scripts/cluster.sh` writes the cluster's settings by default.
pub const DEFAULT_ENV_FILE: &str = "/var/lib/skiff-cluster/cluster.env";

/// A program `scripts/gotools.sh` built (`kubelet`, `crictl`, `critest`…), from its cache
/// (`$SKIFF_GOTOOLS`, default `/var/cache/skiff/gotools`). `make test`'s install step builds
/// them, so a missing one is an error that says how to build it, never a silent skip.
pub fn gotool(name: &str) -> Result<PathBuf> {
    let cache = std::env::var_os("SKIFF_GOTOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/skiff/gotools"));
    let path = cache.join("bin").join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the Go tools with scripts/gotools.sh (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running cluster, from the `KEY=VALUE` file `scripts/cluster.sh up` writes.
#[derive(Debug, Clone)]
pub struct Cluster {
    vars: HashMap<String, String>,
}

impl Cluster {
    /// Reads the cluster's settings.
    pub fn from_env_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (is the cluster up?)", path.display()))?;
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Cluster { vars })
    }

    /// One setting, e.g. `NODE_IP`.
    pub fn var(&self, key: &str) -> Result<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{key} missing from the cluster's env file"))
    }

    /// A program the cluster's tools directory holds (`kubectl`, `crictl`).
    pub fn tool(&self, name: &str) -> Result<PathBuf> {
        Ok(Path::new(self.var("GOTOOLS_BIN")?).join(name))
    }

    /// `kubectl ARGS` with the admin kubeconfig, as a command to adjust.
    pub fn kubectl_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(self.tool("kubectl")?);
        cmd.arg("--kubeconfig")
            .arg(self.var("KUBECONFIG")?)
            .args(args);
        Ok(cmd)
    }

    /// Runs `kubectl ARGS` and returns its standard output; fails with its standard error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        output(self.kubectl_command(args)?.stdin(Stdio::null()))
    }

    /// Runs `kubectl ARGS` with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        let mut child = self
            .kubectl_command(args)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `crictl ARGS` against the node's skiffd.
    pub fn crictl(&self, args: &[&str]) -> Result<String> {
        let endpoint = format!("unix://{}", self.var("SOCKET")?);
        output(
            Command::new(self.tool("crictl")?)
                .args([
                    "--runtime-endpoint",
                    &endpoint,
                    "--image-endpoint",
                    &endpoint,
                ])
                .args(args)
                .stdin(Stdio::null()),
        )
    }

    /// A field of an object, by JSONPath (`{.status.podIP}`).
    pub fn get(&self, object: &str, jsonpath: &str) -> Result<String> {
        let mut args = vec!["get"];
        args.extend(object.split_whitespace());
        let format = format!("jsonpath={jsonpath}");
        args.extend(["-o", &format]);
        Ok(self.kubectl(&args)?.trim().to_string())
    }

    /// Waits until `pod` (in the default namespace) is Ready.
    pub fn wait_ready(&self, pod: &str, timeout: Duration) -> Result<()> {
        let timeout = format!("--timeout={}s", timeout.as_secs());
        self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            &timeout,
        ])
        .with_context(|| self.describe(pod))?;
        Ok(())
    }

    /// `kubectl describe pod` and the pod's events, for an error message.
    pub fn describe(&self, pod: &str) -> String {
        self.kubectl(&["describe", "pod", pod])
            .unwrap_or_else(|e| format!("(describe failed: {e})"))
    }

    /// Runs `command` in `pod` (its `container`, or its first) and returns the output.
    pub fn exec(&self, pod: &str, container: Option<&str>, command: &[&str]) -> Result<String> {
        let mut args = vec!["exec", pod];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        args.push("--");
        args.extend(command);
        self.kubectl(&args)
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?}: {}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `attempt` until it succeeds or `timeout` passes; the last error is returned.
pub fn retry<T>(timeout: Duration, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `GET /` over HTTP/1.0 from this host; returns the status line and the body.
pub fn http_get(addr: &str) -> Result<(String, String)> {
    http_get_path(addr, "/")
}

/// `GET path` over HTTP/1.0 from this host; returns the status line and the body.
pub fn http_get_path(addr: &str, path: &str) -> Result<(String, String)> {
    let addr: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: skiff\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    // The blank line ends the header; a CGI behind busybox httpd ends its lines with \n alone.
    let (head, body) = response
        .split_once("\r\n\r\n")
        .or_else(|| response.split_once("\n\n"))
        .with_context(|| format!("no HTTP response from {addr}: {response:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// The `<title>` of an HTML page, or its first line.
pub fn title(body: &str) -> String {
    body.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| body.lines().next().unwrap_or_default().trim().to_string())
}
