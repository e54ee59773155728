//! Port-forward (`portforward.k8s.io`) over SPDY: for each forwarded connection the client
//! opens an `error` and a `data` stream carrying the same `port` and `requestID` headers; the
//! server connects to that port on the pod's loopback and copies bytes both ways.
//!
//! The connection is opened inside the pod's network namespace by a short-lived std thread
//! that `setns`es itself: namespaces are per thread, and a tokio worker must never change its
//! own. The connected socket stays in the pod's namespace after the thread is gone.

use super::spdy::frame::rst;
use super::spdy::{Incoming, Session, Stream, StreamReader, StreamWriter};
use super::PortForwardRequest;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The only protocol spoken.
pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long the second stream of a pair may take to arrive.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the pod's port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size of the copy from the pod.
const CHUNK: usize = 32 << 10;

/// The two streams of one forwarded connection, as they arrive.
struct Pair {
    port: u16,
    opened: Instant,
    error: Option<StreamWriter>,
    data: Option<(StreamReader, StreamWriter)>,
}

/// Serves one port-forward session until the client closes it.
pub async fn serve(session: Session, mut incoming: Incoming, request: PortForwardRequest) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { break };
                if let Some((port, error, data)) = add_stream(&mut pairs, stream) {
                    forwards.spawn(forward(request.clone(), port, error, data));
                }
            }
            Some(_) = forwards.join_next() => {}
            _ = sweep.tick() => {
                let now = Instant::now();
                let stale: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| now.duration_since(p.opened) > PAIR_TIMEOUT)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in stale {
                    if let Some(Pair { error: Some(mut error), .. }) = pairs.remove(&id) {
                        tokio::spawn(async move {
                            let message = format!("timed out waiting for the streams of request {id}");
                            let _ = error.write(message.as_bytes()).await;
                            let _ = error.finish().await;
                        });
                    }
                }
            }
        }
    }
    // The client is gone: the forwards stop with the session.
    drop(forwards);
    drop(session);
}

/// Files a new stream under its request; returns the pair once both streams are there.
fn add_stream(
    pairs: &mut HashMap<String, Pair>,
    stream: Stream,
) -> Option<(u16, StreamWriter, (StreamReader, StreamWriter))> {
    let headers = stream.headers();
    let port = headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let kind = headers.get("streamtype").unwrap_or_default().to_string();
    let given_id = headers.get("requestid").unwrap_or_default().to_string();
    let Some(port) = port.filter(|_| kind == "error" || kind == "data") else {
        tracing::debug!(headers = ?stream.headers().pairs(), "refusing a port-forward stream");
        stream.reject(rst::REFUSED_STREAM);
        return None;
    };
    // Clients before request IDs opened error then data on consecutive odd stream IDs.
    let request_id = match given_id {
        id if !id.is_empty() => id,
        _ if kind == "error" => stream.id().to_string(),
        _ => stream.id().saturating_sub(2).to_string(),
    };
    let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
        port,
        opened: Instant::now(),
        error: None,
        data: None,
    });
    if pair.port != port
        || (kind == "error" && pair.error.is_some())
        || (kind == "data" && pair.data.is_some())
    {
        stream.reject(rst::PROTOCOL_ERROR);
        return None;
    }
    let (reader, writer) = stream.accept();
    if kind == "error" {
        // Nothing is read from the error stream.
        drop(reader);
        pair.error = Some(writer);
    } else {
        pair.data = Some((reader, writer));
    }
    if pair.error.is_some() && pair.data.is_some() {
        let pair = pairs.remove(&request_id)?;
        return Some((pair.port, pair.error?, pair.data?));
    }
    None
}

/// Connects to the pod's port and copies until the pod's side is done.
async fn forward(
    request: PortForwardRequest,
    port: u16,
    mut error: StreamWriter,
    (mut from_client, mut to_client): (StreamReader, StreamWriter),
) {
    let tcp = match connect(request.netns.as_deref(), port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::info!(sandbox = %request.sandbox_id, port, error = %e, "port-forward connect failed");
            let message = format!(
                "error forwarding port {port} to pod {}, uid : {e}",
                request.sandbox_id
            );
            let _ = error.write(message.as_bytes()).await;
            let _ = error.finish().await;
            let _ = to_client.finish().await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = tcp.into_split();
    // Client to pod: the client's FIN becomes a TCP half-close; a reset stops the forward.
    let upstream = async {
        loop {
            match from_client.read().await {
                Ok(Some(data)) => {
                    if pod_write.write_all(&data).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => {
                    let _ = pod_write.shutdown().await;
                    return false;
                }
                Err(_) => return true,
            }
        }
    };
    // Pod to client: its end is the end of this forward.
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match pod_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_client.finish().await;
    };
    tokio::pin!(upstream, downstream);
    let mut upstream_done = false;
    loop {
        tokio::select! {
            reset = &mut upstream, if !upstream_done => {
                upstream_done = true;
                if reset {
                    break;
                }
            }
            _ = &mut downstream => break,
        }
    }
    let _ = error.finish().await;
}

/// A TCP connection to `port` on the loopback of the network namespace at `netns` (the host's
/// when `None`), IPv4 first, then IPv6.
async fn connect(netns: Option<&Path>, port: u16) -> io::Result<TcpStream> {
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-dial".into())
        .spawn(move || {
            let _ = tx.send(dial(netns.as_deref(), port));
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the dialing thread died"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// Runs on its own thread: joins the namespace (this thread only) and connects.
fn dial(netns: Option<&Path>, port: u16) -> io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(path)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT).or_else(|e| {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT).map_err(|_| e)
    })
}
