//! `skiff-routes --kubeconfig FILE --node NAME`: keeps this node's routes to the other nodes'
//! pod networks in step with the Node objects, until SIGTERM. The routes stay when it stops
//! (pods keep reaching each other); started again, it removes what went stale meanwhile.

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use skiff_cni::netlink::Netlink;
use skiff_routes::{apply, desired};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Parser)]
#[command(
    version,
    about = "Route this node's pods to the other nodes' pod networks, from the Node objects"
)]
struct Args {
    /// A kubeconfig that may list and watch Nodes (the node's kubelet's will do).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// This node's name: its own pod network needs no route.
    #[arg(long)]
    node: String,
    /// Seconds between checks of the routes without any change to the Nodes, which put back
    /// a route someone else removed.
    #[arg(long, default_value_t = 30)]
    resync_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // rustls cannot pick a crypto provider when a build enables two (the workspace does).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    let nodes: Api<Node> = Api::all(Client::try_from(config)?);

    let (store, writer) = reflector::store();
    let changes = reflector(writer, watcher(nodes, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    // The watch runs on its own task (it also fills the store) and rings on every change.
    let changed = Arc::new(Notify::new());
    let ring = changed.clone();
    let mut watching = tokio::spawn(async move {
        futures::pin_mut!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Ok(_) => ring.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watching Nodes"),
            }
        }
    });
    let mut resync = tokio::time::interval(Duration::from_secs(args.resync_secs.max(1)));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(node = %args.node, "watching Nodes");
    // Until the first full list, a node not seen yet would look gone.
    store
        .wait_until_ready()
        .await
        .context("the Node store was dropped")?;
    loop {
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        let wanted = desired::routes(&nodes, &args.node);
        // Netlink is blocking: off the async workers.
        let outcome = tokio::task::spawn_blocking(move || {
            let mut netlink = Netlink::open()?;
            apply::reconcile(&mut netlink, &wanted).map_err(anyhow::Error::from)
        })
        .await?;
        match outcome {
            Ok(done) => {
                for route in &done.added {
                    tracing::info!(node = %route.node, dst = %route.dst, via = %route.via, "route added");
                }
                for route in &done.removed {
                    tracing::info!(dst = %route.dst, via = ?route.via, "stale route removed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating the routes; retried on the next change or check")
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => {}
            _ = &mut watching => bail!("the Node watch ended"),
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: stopping; the routes stay");
                return Ok(());
            }
        }
    }
}
