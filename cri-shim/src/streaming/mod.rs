//! The streaming server: where clients go for Exec, Attach and PortForward.
//!
//! The RPCs do not stream themselves; they store the request under a single-use token
//! ([`tokens`]) and answer with a URL on this server. The client then opens an HTTP connection
//! to that URL and upgrades it to SPDY/3.1 ([`spdy`]), over which it speaks Kubernetes'
//! remotecommand ([`remotecommand`], [`attach`]) or port-forward ([`portforward`]) protocol;
//! all three are also served over WebSocket ([`websocket`]).

mod attach;
mod portforward;
mod process;
mod pty;
mod remotecommand;
mod server;
pub mod spdy;
mod tokens;
mod transport;
mod websocket;

pub use process::ExecEnv;

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokens::TokenCache;

/// The `[streaming]` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Where the streaming HTTP server listens; port 0 picks a free port at startup.
    pub address: SocketAddr,
    /// How long a URL handed out by Exec, Attach or PortForward stays valid.
    pub token_ttl_secs: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token_ttl_secs: 60,
        }
    }
}

/// The streaming server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The listening socket.
    #[error("binding the streaming server to {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The scratch directory for console sockets and PID files.
    #[error("preparing {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An exec waiting for its client: what the Exec RPC asked for.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The container (full ID).
    pub container_id: String,
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// Run it on a terminal.
    pub tty: bool,
    /// The client sends stdin.
    pub stdin: bool,
    /// The client reads stdout.
    pub stdout: bool,
    /// The client reads stderr.
    pub stderr: bool,
}

/// An attach waiting for its client: what the Attach RPC asked for, and where the container's
/// monitor is.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// The container (full ID).
    pub container_id: String,
    /// The monitor's socket directory.
    pub socket_dir: PathBuf,
    /// The monitor's exit file: present once the container has exited.
    pub exit_file: PathBuf,
    /// The client uses a terminal (it may send resizes; no stderr stream).
    pub tty: bool,
    /// The client sends stdin.
    pub stdin: bool,
    /// The client reads stdout.
    pub stdout: bool,
    /// The client reads stderr.
    pub stderr: bool,
}

/// A port-forward waiting for its client.
#[derive(Debug, Clone)]
pub struct PortForwardRequest {
    /// The pod (full ID).
    pub sandbox_id: String,
    /// The pod's pinned network namespace; `None` for host network.
    pub netns: Option<PathBuf>,
}

/// What a token stands for.
#[derive(Debug)]
enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

/// A handle on the running streaming server.
#[derive(Clone)]
pub struct StreamingServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StreamingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingServer")
            .field("base_url", &self.inner.base_url)
            .finish()
    }
}

struct Inner {
    /// `http://host:port`, without a trailing slash.
    base_url: String,
    tokens: TokenCache<Pending>,
    exec: ExecEnv,
}

impl StreamingServer {
    /// Binds the configured address and serves in the background for as long as the tokio
    /// runtime runs.
    pub async fn start(
        config: &StreamingConfig,
        exec: ExecEnv,
    ) -> Result<StreamingServer, StreamingError> {
        // Console sockets and PID files of a previous run are stale.
        let scratch = exec.scratch.clone();
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|source| StreamingError::Scratch {
            path: scratch.clone(),
            source,
        })?;
        let bind = |source| StreamingError::Bind {
            address: config.address,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let inner = Arc::new(Inner {
            base_url: format!("http://{}", advertised(local)),
            tokens: TokenCache::new(Duration::from_secs(config.token_ttl_secs)),
            exec,
        });
        tracing::info!(url = %inner.base_url, "streaming server listening");
        tokio::spawn(server::serve(listener, inner.clone()));
        Ok(StreamingServer { inner })
    }

    /// The URL where the client of `request` runs it.
    pub fn exec_url(&self, request: ExecRequest) -> String {
        self.url("exec", Pending::Exec(request))
    }

    /// The URL where the client of `request` attaches.
    pub fn attach_url(&self, request: AttachRequest) -> String {
        self.url("attach", Pending::Attach(request))
    }

    /// The URL where the client of `request` forwards its ports.
    pub fn port_forward_url(&self, request: PortForwardRequest) -> String {
        self.url("portforward", Pending::PortForward(request))
    }

    fn url(&self, kind: &str, pending: Pending) -> String {
        let token = self.inner.tokens.insert(pending);
        format!("{}/{kind}/{token}", self.inner.base_url)
    }
}

/// The address clients are told: a wildcard listener is advertised on loopback.
fn advertised(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_advertised_on_loopback() {
        assert_eq!(
            advertised("0.0.0.0:10010".parse().unwrap()).to_string(),
            "127.0.0.1:10010"
        );
        assert_eq!(advertised("[::]:7".parse().unwrap()).to_string(), "[::1]:7");
        assert_eq!(
            advertised("10.0.0.5:1".parse().unwrap()).to_string(),
            "10.0.0.5:1"
        );
    }
}
