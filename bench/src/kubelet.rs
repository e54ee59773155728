//! One real kubelet drives skiffd and then containerd, on the same node and control plane
//! (`scripts/cluster.sh runtime`), and skiffd again with the kubelet's evented PLEG, rotating
//! which goes first in each round: the time from
//! `kubectl apply` to Ready for one pod and for a batch of pods at once, and the kubelet's own
//! pod startup SLI (`kubelet_pod_start_sli_duration_seconds`, which leaves out image pulls).
//!
//! The times include what `kubectl` itself costs (a process start and an API round trip per
//! call), the same for both runtimes.

use crate::report::{Report, Unit};
use crate::stats::ms;
use anyhow::{bail, ensure, Context, Result};
use skiff_tests::kube::Cluster;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A way to run the node: its runtime, and whether the kubelet uses the runtime's event stream.
struct Setup {
    /// The column's title.
    label: &'static str,
    /// `scripts/cluster.sh runtime` arguments.
    args: &'static [&'static str],
}

/// The setups, in report order (the ratio column is the first over the second). containerd 1.6
/// has no event stream (GetContainerEvents came in 1.7), so only skiff runs the evented PLEG.
const SETUPS: [Setup; 3] = [
    Setup {
        label: "skiff",
        args: &["skiff"],
    },
    Setup {
        label: "containerd",
        args: &["containerd"],
    },
    Setup {
        label: "skiff, evented PLEG",
        args: &["skiff", "evented-pleg"],
    },
];

/// What to measure, and against which cluster.
#[derive(clap::Args)]
pub struct KubeletArgs {
    /// The settings file `scripts/cluster.sh up` wrote.
    #[arg(long)]
    env: PathBuf,
    /// `scripts/cluster.sh`, run with this process's environment to switch runtimes.
    #[arg(long)]
    cluster_script: PathBuf,
    /// The pods' image (busybox with a fixed tag, so the kubelet pulls it once).
    #[arg(long, default_value = "busybox:1.35.0")]
    image: String,
    /// Rounds; each measures both runtimes.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Single pods per runtime and round.
    #[arg(long, default_value_t = 5)]
    singles: usize,
    /// Pods created at once.
    #[arg(long, default_value_t = 30)]
    batch: usize,
    /// How long pods may take to become Ready, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs every round and returns the Markdown table; the node ends on skiff.
pub fn run(args: &KubeletArgs) -> Result<String> {
    let cluster = Cluster::from_env_file(&args.env)?;
    let mut report = Report::new(SETUPS.iter().map(|s| s.label.to_string()).collect());
    let measured = (|| -> Result<()> {
        for round in 0..args.rounds {
            // Each round starts with another setup, so drift over the run spreads evenly.
            for step in 0..SETUPS.len() {
                let index = (round + step) % SETUPS.len();
                eprintln!("round {}: {}", round + 1, SETUPS[index].label);
                measure_runtime(args, &cluster, index, round, &mut report)?;
            }
        }
        Ok(())
    })();
    let back = switch_runtime(args, &["skiff"]);
    measured?;
    back?;
    Ok(report.markdown())
}

fn measure_runtime(
    args: &KubeletArgs,
    cluster: &Cluster,
    index: usize,
    round: usize,
    report: &mut Report,
) -> Result<()> {
    switch_runtime(args, SETUPS[index].args)?;
    let runtime = index;
    // The first pod on a fresh runtime pulls the image; it is not measured.
    let warm = format!("bench-{runtime}-{round}-warm");
    timed_apply(args, cluster, std::slice::from_ref(&warm), &warm)?;
    delete(cluster, &warm)?;

    for n in 0..args.singles {
        let name = format!("bench-{runtime}-{round}-{n}");
        let took = timed_apply(args, cluster, std::slice::from_ref(&name), &name)?;
        report.add(
            "1 pod: kubectl apply → Ready",
            Unit::Millis,
            None,
            index,
            ms(took),
        );
        delete(cluster, &name)?;
    }
    let group = format!("bench-{runtime}-{round}-batch");
    let names: Vec<String> = (0..args.batch).map(|n| format!("{group}-{n}")).collect();
    let before = KubeletMetrics::read(cluster)?;
    let took = timed_apply(args, cluster, &names, &group)?;
    let after = KubeletMetrics::read(cluster)?;
    delete(cluster, &group)?;
    let batch = args.batch;
    report.add(
        &format!("{batch} pods at once: kubectl apply → all Ready"),
        Unit::Seconds,
        Some(0.5),
        index,
        took.as_secs_f64(),
    );
    let pods = after.sli_count - before.sli_count;
    ensure!(pods > 0.0, "the kubelet counted no pod start");
    report.add(
        &format!("{batch} pods at once: the kubelet's startup SLI per pod, mean"),
        Unit::Millis,
        None,
        index,
        (after.sli_sum - before.sli_sum) / pods * 1000.0,
    );
    report.add(
        &format!("{batch} pods at once: CRI calls per pod (run + create + start, as the kubelet timed them), mean"),
        Unit::Millis,
        None,
        index,
        (after.cri_sum - before.cri_sum) / batch as f64 * 1000.0,
    );
    Ok(())
}

fn switch_runtime(args: &KubeletArgs, setup: &[&str]) -> Result<()> {
    let out = Command::new(&args.cluster_script)
        .arg("runtime")
        .args(setup)
        .output()
        .with_context(|| format!("running {}", args.cluster_script.display()))?;
    if !out.status.success() {
        bail!(
            "switching the node to {setup:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Creates `names` (pods labelled `group`) in one `kubectl apply` and waits until all are Ready.
fn timed_apply(
    args: &KubeletArgs,
    cluster: &Cluster,
    names: &[String],
    group: &str,
) -> Result<Duration> {
    let manifests: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{skiff-bench: {group}}}\n\
                 spec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: sleep\n    \
                 image: {}\n    command: [sleep, \"3600\"]\n",
                args.image
            )
        })
        .collect();
    let timeout = format!("--timeout={}s", args.timeout_secs);
    let selector = format!("skiff-bench={group}");
    let begin = Instant::now();
    cluster.kubectl_with_input(&["apply", "-f", "-"], &manifests.join("---\n"))?;
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            &selector,
            &timeout,
        ])
        .with_context(|| format!("pods {group} did not become Ready"))?;
    Ok(begin.elapsed())
}

/// Deletes the pods of `group` and waits until the kubelet has stopped them.
fn delete(cluster: &Cluster, group: &str) -> Result<()> {
    let selector = format!("skiff-bench={group}");
    cluster.kubectl(&[
        "delete",
        "pod",
        "-l",
        &selector,
        "--wait=true",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// What the kubelet's own metrics say: its pod startup SLI histogram
/// (`kubelet_pod_start_sli_duration_seconds`, creation to running, image pulls left out) and
/// the time it spent in the CRI calls that start a pod (`kubelet_runtime_operations_duration_seconds`).
struct KubeletMetrics {
    sli_sum: f64,
    sli_count: f64,
    cri_sum: f64,
}

impl KubeletMetrics {
    fn read(cluster: &Cluster) -> Result<KubeletMetrics> {
        let node = cluster.var("NODE_NAME")?;
        let text = cluster.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/metrics"),
        ])?;
        let value = |series: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let operation = |op: &str| {
            value(&format!(
                "kubelet_runtime_operations_duration_seconds_sum{{operation_type=\"{op}\"}}"
            ))
        };
        let sli_count = value("kubelet_pod_start_sli_duration_seconds_count");
        if sli_count == 0.0 && !text.contains("kubelet_pod_start_sli_duration_seconds") {
            bail!("the kubelet's metrics have no pod startup SLI");
        }
        Ok(KubeletMetrics {
            sli_sum: value("kubelet_pod_start_sli_duration_seconds_sum"),
            sli_count,
            cri_sum: operation("run_podsandbox")
                + operation("create_container")
                + operation("start_container"),
        })
    }
}
