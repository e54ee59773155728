//! A TCP proxy in front of a registry that can cut a blob download half-way, as a flaky
//! network or a registry restarting mid-pull would. It runs on a thread of its own (with its own
//! tokio runtime), so it keeps forwarding while the test blocks, and stops when dropped.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `cut_after` value meaning "never cut".
const NEVER: u64 = u64::MAX;

/// What the connections share with the test.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// Bytes of a blob response forwarded before the connection is cut ([`NEVER`]: no cut).
    cut_after: AtomicU64,
    /// Connections cut so far.
    cuts: AtomicUsize,
}

/// A running proxy; dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct FlakyProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlakyProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`host:port`), passing
    /// everything through until [`FlakyProxy::cut_blobs_after`] arms it.
    pub fn start(upstream: &str) -> Result<FlakyProxy> {
        let upstream: SocketAddr = upstream.parse().context("upstream address")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            cut_after: AtomicU64::new(NEVER),
            cuts: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn({
            let shared = shared.clone();
            move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = accept_loop(listener, shared) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task, closing their sockets.
            }
        });
        Ok(FlakyProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`, to put in an image name.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// From now on, cut every connection `bytes` bytes into the response to a blob GET
    /// (`/v2/<name>/blobs/<digest>`); `None` passes everything through again.
    pub fn cut_blobs_after(&self, bytes: Option<u64>) {
        self.shared
            .cut_after
            .store(bytes.unwrap_or(NEVER), Ordering::SeqCst);
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(serve(client, shared.clone()));
    }
}

/// Forwards one connection both ways. A blob GET seen going up resets the count of response
/// bytes coming down; once that count reaches the armed limit, both sides are closed.
async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // Response bytes since the last blob request on this connection; NEVER before any.
    let since_blob_request = Arc::new(AtomicU64::new(NEVER));

    let up = {
        let since = since_blob_request.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if is_blob_get(&buf[..n]) {
                    since.store(0, Ordering::SeqCst);
                }
                if upstream_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = upstream_write.shutdown().await;
        }
    };
    let down = {
        let since = since_blob_request.clone();
        let shared = shared.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match upstream_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let limit = shared.cut_after.load(Ordering::SeqCst);
                let sent = since.load(Ordering::SeqCst);
                if limit != NEVER && sent != NEVER && sent + n as u64 >= limit {
                    let keep = usize::try_from(limit.saturating_sub(sent))
                        .unwrap_or(n)
                        .min(n);
                    let _ = client_write.write_all(&buf[..keep]).await;
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    // Returning drops the write half (and the select below the rest): a
                    // connection that dies in the middle of a body.
                    return true;
                }
                if sent != NEVER {
                    since.fetch_add(n as u64, Ordering::SeqCst);
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = client_write.shutdown().await;
            false
        }
    };
    tokio::pin!(down);
    tokio::select! {
        // The client finished sending: keep forwarding the response until upstream is done.
        _ = up => { let _ = (&mut down).await; }
        // A cut or the end of the response: drop everything, closing both sockets.
        _ = &mut down => {}
    }
}

/// True if `chunk` starts (or holds) an HTTP request line for a blob download.
fn is_blob_get(chunk: &[u8]) -> bool {
    chunk
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"GET /v2/") && contains(line, b"/blobs/"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_blob_downloads_only() {
        assert!(is_blob_get(
            b"GET /v2/bb/blobs/sha256:ab HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(!is_blob_get(
            b"GET /v2/bb/manifests/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(!is_blob_get(
            b"HEAD /v2/bb/blobs/sha256:ab HTTP/1.1\r\n\r\n"
        ));
    }

    #[test]
    fn forwards_then_cuts_a_blob_response_at_the_limit() {
        use std::io::{Read, Write};
        // A one-shot upstream answering any request with 100 KB.
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_addr = upstream.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, _) = upstream.accept().unwrap();
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request).unwrap();
                let _ = conn.write_all(&[b'x'; 100_000]);
            }
        });
        let proxy = FlakyProxy::start(&upstream_addr).unwrap();
        let fetch = |path: &str| {
            let mut conn = std::net::TcpStream::connect(proxy.addr()).unwrap();
            conn.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
                .unwrap();
            let mut body = Vec::new();
            let _ = conn.read_to_end(&mut body);
            body.len()
        };
        proxy.cut_blobs_after(Some(1000));
        assert_eq!(fetch("/v2/a/blobs/sha256:ab"), 1000);
        assert_eq!(proxy.cuts(), 1);
        proxy.cut_blobs_after(None);
        assert_eq!(fetch("/v2/a/blobs/sha256:ab"), 100_000);
        server.join().unwrap();
    }
}
