//! skiff-bench: skiff side by side with containerd + runc, through the same client code.
//!
//! `cri` drives CRI runtimes over their unix sockets (one persistent connection each, like a
//! kubelet) and measures them interleaved; `kubelet` has one real kubelet drive each in turn;
//! `oci` compares runc-shaped runtimes on one bundle; `images` pushes the benchmark images to a
//! registry. `scripts/bench.sh` sets everything up.

mod chain;
mod cri;
mod images;
mod kubelet;
mod oci;
mod procs;
mod report;
mod scenarios;
mod stats;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use cri::{Kind, Target};
use report::Report;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "skiff-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure CRI runtimes: pod latency, ExecSync, memory per pod, concurrent pods.
    Cri(CriArgs),
    /// One kubelet drives skiffd, then containerd (a cluster from scripts/cluster.sh): pods from
    /// `kubectl apply` to Ready, one and a batch, and the kubelet's startup SLI.
    Kubelet(kubelet::KubeletArgs),
    /// Measure runc-shaped OCI runtimes: create+start+wait+delete of `true` on one bundle.
    Oci(OciArgs),
    /// Show the processes each RPC of one pod ran, from `cri --spans` and a perf trace.
    Chain {
        /// The spans written by `cri --spans`.
        #[arg(long)]
        spans: PathBuf,
        /// `perf script -F comm,pid,tid,time,event,trace` of `perf record -k monotonic -e
        /// sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit -a`.
        #[arg(long)]
        perf_script: PathBuf,
        /// The pod to show (default: the one with the median pod-ready time per runtime).
        #[arg(long)]
        pod: Option<String>,
    },
    /// Build the benchmark images (busybox:bench, pause:bench) and push them to a registry.
    Images {
        /// The registry, HOST:PORT, plain HTTP.
        #[arg(long)]
        registry: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Latency,
    Exec,
    Poll,
    Memory,
    Concurrent,
}

#[derive(clap::Args)]
struct CriArgs {
    /// skiffd's CRI socket.
    #[arg(long)]
    skiff: Option<PathBuf>,
    /// containerd's CRI socket.
    #[arg(long)]
    containerd: Option<PathBuf>,
    /// The workload image (busybox), pulled through CRI if missing.
    #[arg(long)]
    image: String,
    /// Pods per runtime for the latency measurement.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// ExecSync calls per runtime.
    #[arg(long, default_value_t = 20)]
    exec_iterations: usize,
    /// Running pods for the memory measurement.
    #[arg(long, default_value_t = 30)]
    memory_pods: usize,
    /// How long the pods run before memory is read, seconds.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Concurrent pod counts.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    concurrent: Vec<usize>,
    /// Rounds per concurrent pod count.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// How long a concurrent batch may take until every pod answers, seconds.
    #[arg(long, default_value_t = 300)]
    ready_timeout_secs: u64,
    /// Measurements to leave out.
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Scenario>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every timed RPC of the latency measurement (JSON lines) here, for `chain`.
    #[arg(long)]
    spans: Option<PathBuf>,
}

#[derive(clap::Args)]
struct OciArgs {
    /// skiff's runc-shaped runtime.
    #[arg(long, default_value = "skiff-oci")]
    skiff_oci: PathBuf,
    /// runc.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// Cycles per runtime.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Cri(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let table = runtime.block_on(run_cri(&args))?;
            emit(&table, args.out.as_ref())
        }
        Cmd::Kubelet(args) => {
            let table = kubelet::run(&args)?;
            emit(&table, args.out.as_ref())
        }
        Cmd::Oci(args) => {
            let table = run_oci(&args)?;
            emit(&table, args.out.as_ref())
        }
        Cmd::Chain {
            spans,
            perf_script,
            pod,
        } => {
            print!("{}", chain::render(&spans, &perf_script, pod.as_deref())?);
            Ok(())
        }
        Cmd::Images { registry } => images::push(&registry),
    }
}

fn emit(table: &str, out: Option<&PathBuf>) -> Result<()> {
    print!("{table}");
    if let Some(path) = out {
        std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_cri(args: &CriArgs) -> Result<String> {
    let logs = tempfile::Builder::new()
        .prefix("skiff-bench-logs-")
        .tempdir()?;
    let mut targets = Vec::new();
    // skiff first: the ratio column is first / second.
    for (name, kind, socket) in [
        ("skiff", Kind::Skiff, &args.skiff),
        ("containerd", Kind::Containerd, &args.containerd),
    ] {
        if let Some(socket) = socket {
            targets.push(Target::connect(name, kind, socket, logs.path()).await?);
        }
    }
    if targets.is_empty() {
        bail!("name at least one runtime: --skiff SOCKET and/or --containerd SOCKET");
    }
    let mut report = Report::new(targets.iter().map(|t| t.name.clone()).collect());
    let mut spans = Vec::new();
    let measured = measure(args, &targets, &mut report, &mut spans).await;
    // Whatever happened, leave no pod behind.
    for target in &targets {
        let left = target.cleanup().await;
        if left > 0 && measured.is_ok() {
            eprintln!("{}: removed {left} pods left behind", target.name);
        }
    }
    cri::remove_cgroup_parent();
    measured?;
    if let Some(path) = &args.spans {
        let mut lines = String::new();
        for span in &spans {
            lines.push_str(&serde_json::to_string(span)?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.markdown())
}

async fn measure(
    args: &CriArgs,
    targets: &[Target],
    report: &mut Report,
    spans: &mut Vec<scenarios::Span>,
) -> Result<()> {
    let wants = |s: Scenario| !args.skip.contains(&s);
    for target in targets {
        target.ensure_image(&args.image).await?;
    }
    scenarios::check_network(targets, &args.image).await?;
    if wants(Scenario::Latency) {
        eprintln!("pod latency, {} pods per runtime", args.iterations);
        scenarios::pod_latency(targets, &args.image, args.iterations, report, spans).await?;
    }
    if wants(Scenario::Exec) {
        eprintln!("ExecSync, {} calls per runtime", args.exec_iterations);
        scenarios::exec_latency(targets, &args.image, args.exec_iterations, report).await?;
    }
    if wants(Scenario::Poll) {
        eprintln!("polled calls, {} rounds", args.iterations);
        scenarios::poll_latency(targets, &args.image, args.iterations, report).await?;
    }
    if wants(Scenario::Memory) {
        eprintln!("memory, {} pods", args.memory_pods);
        let settle = Duration::from_secs(args.settle_secs);
        scenarios::memory_per_pod(targets, &args.image, args.memory_pods, settle, report).await?;
    }
    if wants(Scenario::Concurrent) && !args.concurrent.is_empty() {
        eprintln!("concurrent pods: {:?}", args.concurrent);
        let timeout = Duration::from_secs(args.ready_timeout_secs);
        scenarios::concurrent_pods(
            targets,
            &args.image,
            &args.concurrent,
            args.rounds,
            timeout,
            report,
        )
        .await?;
    }
    Ok(())
}

fn run_oci(args: &OciArgs) -> Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("skiff-bench-oci-")
        .tempdir()?;
    let bundle = oci::write_bundle(dir.path(), &args.runc)?;
    let runtimes = vec![
        oci::OciRuntime {
            name: "skiff-oci".into(),
            binary: args.skiff_oci.clone(),
            root: dir.path().join("skiff-oci-root"),
        },
        oci::OciRuntime {
            name: "runc".into(),
            binary: args.runc.clone(),
            root: dir.path().join("runc-root"),
        },
    ];
    let mut report = Report::new(runtimes.iter().map(|r| r.name.clone()).collect());
    let measured = oci::lifecycle(&runtimes, &bundle, args.iterations, &mut report);
    oci::remove_cgroups();
    measured?;
    Ok(report.markdown())
}
