//! The gRPC server on the CRI unix socket: exclusive ownership of the socket, serving until
//! SIGTERM or SIGINT, and cleaning up the socket on the way out.

use crate::authority::AuthorityFix;
use crate::cni::Cni;
use crate::config::Config;
use crate::container::oci::Helpers;
use crate::container::recover::recover_containers;
use crate::image_service::Images;
use crate::runtime_service::Runtime;
use crate::sandbox::pin_space;
use crate::sandbox::recover::recover_sandboxes;
use crate::state::StateStore;
use crate::streaming::{ExecEnv, StreamingServer};
use anyhow::{bail, Context};
use skiff_proto::runtime::v1::image_service_server::ImageServiceServer;
use skiff_proto::runtime::v1::runtime_service_server::RuntimeServiceServer;
use skiff_runtime::image::ImageStore;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// After SIGTERM, how long in-flight RPCs get before open connections are dropped. Clients such
/// as kubelets keep their connection open forever, so waiting for them to close is no option.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Kubelets send and accept CRI messages up to 16 MiB (e.g. ListContainers on a busy node).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The accepted connections, each behind [`AuthorityFix`] so that clients sending the socket
/// path as `:authority` (crictl) are served rather than reset.
fn incoming(
    listener: UnixListener,
) -> impl futures::Stream<Item = std::io::Result<AuthorityFix<tokio::net::UnixStream>>> {
    use futures::TryStreamExt;
    UnixListenerStream::new(listener).map_ok(AuthorityFix::new)
}

/// Holds the socket's lock file for as long as the daemon runs.
struct SocketLock {
    _file: File,
}

/// Takes an exclusive lock next to the socket so a second skiffd refuses to start instead of
/// stealing the socket of a running one.
fn lock_socket(socket: &Path) -> anyhow::Result<SocketLock> {
    let lock_path = PathBuf::from(format!("{}.lock", socket.display()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // SAFETY: flock on a valid, owned fd; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another skiffd is already serving {} (lock {} is held)",
            socket.display(),
            lock_path.display()
        );
    }
    Ok(SocketLock { _file: file })
}

/// Binds the socket: a stale socket file (its daemon is gone, we hold the lock) is replaced, and
/// the socket is made accessible to root and its group only.
fn bind_socket(socket: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", socket.display()))
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", socket.display()))?;
    Ok(listener)
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop skiffd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Opens the stores and serves CRI on the configured socket until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    for dir in [&config.root_dir, &config.state_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(parent) = config.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let _lock = lock_socket(&config.socket)?;

    let images_root = config.root_dir.join("images");
    let registry = config.registry.clone();
    let limits = config.images.unpack_limits();
    let store = tokio::task::spawn_blocking(move || {
        ImageStore::open(&images_root, registry).map(|s| s.with_unpack_limits(limits))
    })
    .await
    .context("opening the image store")??;
    let store = Arc::new(store);
    let images = Images::new(store.clone());
    let helpers = Helpers::beside_current_exe(&config.state_dir).context("locating helpers")?;
    let state_path = config.root_dir.join("state.redb");
    let sandboxes_dir = config.state_dir.join("sandboxes");
    let state_dir = config.state_dir.clone();
    let state = tokio::task::spawn_blocking(move || -> anyhow::Result<StateStore> {
        // Before recovery, which checks and releases pins.
        pin_space::open(&state_dir).context("opening the pin space")?;
        let state = StateStore::open(&state_path)?;
        recover_sandboxes(&state, &sandboxes_dir)?;
        Ok(state)
    })
    .await
    .context("opening the state database")??;
    recover_containers(&state, &helpers, &config.root_dir)
        .await
        .context("recovering containers")?;
    let cni = Arc::new(
        Cni::new(
            config.cni.conf_dir.clone(),
            config.cni.bin_dirs.clone(),
            config.root_dir.join("cni-cache"),
        )
        .with_timeout(std::time::Duration::from_secs(
            config.cni.plugin_timeout_secs,
        )),
    );
    // Leases and rules of sandboxes that no longer exist (a crash, a missed DEL) are released.
    let live: Vec<String> = state
        .sandboxes()?
        .into_iter()
        .filter(|s| s.network_attached)
        .map(|s| s.id)
        .collect();
    if let Err(e) = cni.gc(&live).await {
        tracing::warn!(error = %e, "CNI GC at startup failed");
    }
    let streaming = StreamingServer::start(
        &config.streaming,
        ExecEnv {
            oci: helpers.oci.clone(),
            oci_root: helpers.oci_root.clone(),
            scratch: config.state_dir.join("streaming"),
        },
    )
    .await
    .context("starting the streaming server")?;
    let runtime = Runtime::new(config.clone(), Arc::new(state), store, helpers, cni)
        .with_streaming(streaming)
        .with_exit_watch()
        .context("starting the exit watcher")?;

    let listener = bind_socket(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), version = env!("CARGO_PKG_VERSION"), "skiffd serving CRI v1");
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ImageServiceServer::new(images)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming(listener), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    let served = tokio::select! {
        result = &mut server => result,
        _ = shutdown_signal() => {
            let _ = stop_accepting.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::info!("dropping connections still open after {SHUTDOWN_GRACE:?}");
                    Ok(())
                }
            }
        }
    };
    let _ = std::fs::remove_file(&config.socket);
    served.context("serving CRI")?;
    tracing::info!("skiffd stopped");
    Ok(())
}
