//! A real OCI registry (Debian's `docker-registry`, distribution 2.8) on loopback, one per test,
//! and pushing OCI layouts into it with `skopeo`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// How long [`Registry::start`] waits for `GET /v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at finding a port nobody grabs between our probe and the registry's bind.
const PORT_ATTEMPTS: usize = 5;

/// How a registry is exposed: plain HTTP by default; optionally basic auth and/or TLS with a
/// self-signed certificate, to test credentials and `skip_verify`.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Serve TLS with a fresh self-signed certificate for 127.0.0.1.
    pub tls: bool,
}

/// A running `docker-registry` with its own storage, config and log in a tempdir.
/// Dropping it kills and reaps the process and removes the tempdir, also during a panic.
pub struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
    // Dropped after `child` is reaped (see `Drop`), removing storage and logs.
    dir: TempDir,
}

impl Registry {
    /// Starts a registry on `127.0.0.1` with a free port and waits until it answers `GET /v2/`.
    pub fn start() -> Result<Registry> {
        for _ in 0..PORT_ATTEMPTS {
            if let Some(registry) = Self::try_start()? {
                return Ok(registry);
            }
        }
        bail!("docker-registry: no free port after {PORT_ATTEMPTS} attempts")
    }

    /// `Ok(None)` when another process took the port first.
    fn try_start() -> Result<Option<Registry>> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-registry-")
            .tempdir()?;
        // Port 0 asks the kernel for a free port; we release it for the registry to bind,
        // which can race with other tests, hence the retry in `start`.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        fs::write(&config, config_yaml(&dir.path().join("storage"), &addr))?;
        let log = dir.path().join("registry.log");
        let out = File::create(&log)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning docker-registry (Debian package docker-registry)")?;
        // From here on, `Drop` cleans up whatever goes wrong.
        let mut registry = Registry {
            child,
            addr,
            log,
            dir,
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = registry.child.try_wait()? {
                let log = registry.log_text();
                if log.contains("address already in use") {
                    return Ok(None);
                }
                bail!("docker-registry exited with {status}:\n{log}");
            }
            if let Ok(resp) = http_get(&registry.addr, "/v2/", &[]) {
                if resp.status == 200 {
                    return Ok(Some(registry));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry not ready on {} after {READY_TIMEOUT:?}:\n{}",
                    registry.addr,
                    registry.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts the registry on the same port and storage with `security` (push images first
    /// over plain HTTP, then lock the registry down).
    pub fn secure(&mut self, security: &Security) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut extra = String::new();
        if let Some((user, password)) = &security.basic_auth {
            let htpasswd = self.dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4)?;
            fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            extra.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let mut tls = String::new();
        if security.tls {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
            let (cert_path, key_path) = (
                self.dir.path().join("cert.pem"),
                self.dir.path().join("key.pem"),
            );
            fs::write(&cert_path, cert.cert.pem())?;
            fs::write(&key_path, cert.signing_key.serialize_pem())?;
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert_path.display(),
                key_path.display()
            );
        }
        let config = self.dir.path().join("config.yml");
        let yaml = config_yaml(&self.dir.path().join("storage"), &self.addr) + &tls + &extra;
        fs::write(&config, yaml)?;
        let out = fs::OpenOptions::new().append(true).open(&self.log)?;
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("restarting docker-registry")?;
        // Plain HTTP probes no longer answer 200 (auth, TLS): wait for the port to accept.
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(&self.addr).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("docker-registry exited with {status}:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not come back on {}", self.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tempdir holding config, storage and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's log (application log and access log).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (empty if unreadable).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many `GET /v2/<repo>/blobs/<digest>` requests (any repo) the registry answered with
    /// a 2xx status, from its access log. The access log line is written before the response
    /// is flushed to the client, so a finished download is always counted.
    pub fn blob_fetches(&self, digest: &str) -> usize {
        let suffix = format!("/blobs/{digest}");
        self.log_text()
            .lines()
            .filter_map(served_get)
            .filter(|(path, status)| {
                path.starts_with("/v2/") && path.ends_with(&suffix) && (200..300).contains(status)
            })
            .count()
    }

    /// `GET path` on this registry with the given `Accept` media types.
    pub fn get(&self, path: &str, accept: &[&str]) -> Result<HttpResponse> {
        http_get(&self.addr, path, accept)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: the registry's view often explains why.
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("--- docker-registry {} log tail ---\n{tail}", self.addr);
        }
    }
}

fn config_yaml(storage: &Path, addr: &str) -> String {
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: {addr}
",
        storage.display()
    )
}

/// Parses an access-log line (`… "GET /path HTTP/1.1" 200 …`) into path and status.
fn served_get(line: &str) -> Option<(&str, u16)> {
    let rest = line.split_once("\"GET ")?.1;
    let (path, rest) = rest.split_once(' ')?;
    let rest = rest.split_once("\" ")?.1;
    let status = rest.split(' ').next()?.parse().ok()?;
    Some((path, status))
}

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain-HTTP `GET` to `addr` (`host:port`), following no redirects.
pub fn http_get(addr: &str, path: &str, accept: &[&str]) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0 so the server closes the connection and never chunks the body:
    // the response is simply everything until EOF.
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if !accept.is_empty() {
        request.push_str(&format!("Accept: {}\r\n", accept.join(", ")));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("HTTP response without end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("non-UTF-8 HTTP headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Manifest format of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OCI manifests and indexes.
    Oci,
    /// Docker v2 schema 2 manifests and manifest lists (`skopeo --format v2s2`). Converting
    /// zstd layers to this format fails: schema 2 has no zstd media type.
    DockerV2,
}

/// Pushes image `tag` of the OCI layout `layout` to `registry` as `dest` (`repo:tag`) and
/// returns the manifest digest the registry stored.
pub fn push(
    layout: &Path,
    tag: &str,
    registry: &Registry,
    dest: &str,
    format: Format,
) -> Result<String> {
    push_to(
        layout,
        tag,
        &format!("{}/{dest}", registry.addr()),
        format,
        false,
    )
}

/// Like [`push`] for a tag that names an image index: copies every platform image and the
/// index (`skopeo copy --all`), returning the index digest.
pub fn push_index(
    layout: &Path,
    tag: &str,
    registry: &Registry,
    dest: &str,
    format: Format,
) -> Result<String> {
    push_to(
        layout,
        tag,
        &format!("{}/{dest}", registry.addr()),
        format,
        true,
    )
}

/// Pushes `oci:layout:tag` to `docker://target` (`host:port/repo:tag`) over plain HTTP with
/// `skopeo copy`, copying all platforms if `all`. Returns the pushed manifest (or index) digest.
pub fn push_to(
    layout: &Path,
    tag: &str,
    target: &str,
    format: Format,
    all: bool,
) -> Result<String> {
    let layout_str = layout.to_str().context("non-UTF-8 layout path")?;
    if layout_str.contains(':') {
        // skopeo splits `oci:PATH:TAG` at colons.
        bail!("layout path {layout_str} contains ':'");
    }
    let tmp = tempfile::tempdir()?;
    let digest_file = tmp.path().join("digest");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"])
        .args(["--format", format_arg(format)])
        .arg("--digestfile")
        .arg(&digest_file);
    if all {
        cmd.arg("--all");
    }
    if format == Format::Oci {
        // Push the layout's bytes as they are: without this skopeo compresses uncompressed
        // layers, changing the manifest digest.
        cmd.arg("--preserve-digests");
    }
    cmd.arg(format!("oci:{layout_str}:{tag}"))
        .arg(format!("docker://{target}"))
        .stdin(Stdio::null());
    let out = cmd.output().context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo copy oci:{layout_str}:{tag} docker://{target} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let digest = fs::read_to_string(&digest_file).context("reading skopeo's digest file")?;
    Ok(digest.trim().to_string())
}

fn format_arg(format: Format) -> &'static str {
    match format {
        Format::Oci => "oci",
        Format::DockerV2 => "v2s2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let line = r#"127.0.0.1 - - [26/Nov/2026:13:05:18 +0000] "GET /v2/a/b/blobs/sha256:ab HTTP/1.1" 200 157 "" "curl/7.88.1""#;
        assert_eq!(served_get(line), Some(("/v2/a/b/blobs/sha256:ab", 200)));
        let app = r#"time="x" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/"#;
        assert_eq!(served_get(app), None);
        let head = r#"127.0.0.1 - - [x] "HEAD /v2/a/blobs/sha256:ab HTTP/1.1" 200 0 "" "skopeo""#;
        assert_eq!(served_get(head), None);
    }

    #[test]
    fn parses_http_response() {
        let resp =
            parse_response(b"HTTP/1.0 404 Not Found\r\nContent-Type: x\r\n\r\nbody").unwrap();
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("content-type"), Some("x"));
        assert_eq!(resp.body, b"body");
    }
}
