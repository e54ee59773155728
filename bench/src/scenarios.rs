//! The CRI measurements. Each one runs the runtimes interleaved (A B, then B A, …) so that
//! whatever else the machine does at a moment hits both.

use crate::cri::Target;
use crate::procs::{self, Memory};
use crate::report::{Report, Unit};
use crate::stats::ms;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The container of latency, exec and memory pods.
const SLEEP: &[&str] = &["sleep", "3600"];
/// The container of the concurrent pods: a web server the host can fetch from.
const HTTPD: &[&str] = &["httpd", "-f", "-p", "8080", "-h", "/etc"];
const HTTP_PORT: u16 = 8080;

/// Runtime indices in the order of round `round`: forwards on even rounds, backwards on odd.
fn order(targets: &[Target], round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// The RPCs of one pod's life, in order, as timed by [`pod_cycle`].
const CYCLE_RPCS: [&str; 5] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

/// One timed RPC, on the CLOCK_MONOTONIC time line `perf record -k monotonic` uses, so a
/// kernel trace of the same run lines up with it (see `chain`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub runtime: String,
    pub daemon_pid: u32,
    pub pod: String,
    pub rpc: String,
    /// Seconds.
    pub start: f64,
    pub end: f64,
}

/// Seconds on CLOCK_MONOTONIC.
fn monotonic() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// One pod taken through a kubelet's sequence; the time before each call and after the last.
async fn pod_cycle(target: &Target, name: &str, image: &str) -> Result<[f64; 6]> {
    let config = target.pod_config(name)?;
    let mut marks = [0.0; 6];
    marks[0] = monotonic();
    let pod = target.run_pod(&config).await?;
    marks[1] = monotonic();
    let container = target.create_container(&pod, &config, image, SLEEP).await?;
    marks[2] = monotonic();
    target.start_container(&container).await?;
    marks[3] = monotonic();
    target.stop_pod(&pod).await?;
    marks[4] = monotonic();
    target.remove_pod(&pod).await?;
    marks[5] = monotonic();
    Ok(marks)
}

/// Pod ready latency: RunPodSandbox, CreateContainer, StartContainer, their sum, then
/// StopPodSandbox and RemovePodSandbox, one pod at a time. Every RPC goes to `spans`.
pub async fn pod_latency(
    targets: &[Target],
    image: &str,
    iterations: usize,
    report: &mut Report,
    spans: &mut Vec<Span>,
) -> Result<()> {
    // Untimed: the first pod creates bridges, chains and caches on both sides.
    for target in targets {
        pod_cycle(target, "warmup", image).await?;
    }
    for i in 0..iterations {
        for t in order(targets, i) {
            let target = &targets[t];
            let pod = format!("lat-{i}");
            let marks = pod_cycle(target, &pod, image).await?;
            let goals = [Some(0.1), None, None, None, None];
            for (k, rpc) in CYCLE_RPCS.iter().enumerate() {
                let (start, end) = (marks[k], marks[k + 1]);
                report.add(rpc, Unit::Millis, goals[k], t, (end - start) * 1000.0);
                spans.push(Span {
                    runtime: target.name.clone(),
                    daemon_pid: target.daemon_pid,
                    pod: pod.clone(),
                    rpc: rpc.to_string(),
                    start,
                    end,
                });
            }
            let ready = (marks[3] - marks[0]) * 1000.0;
            report.add(
                "pod ready (run+create+start)",
                Unit::Millis,
                Some(0.1),
                t,
                ready,
            );
        }
    }
    // Keep the table in the kubelet's order: ready right after the three calls it sums.
    if let Some(i) = report
        .rows
        .iter()
        .position(|r| r.name.starts_with("pod ready"))
    {
        let ready = report.rows.remove(i);
        let at = report
            .rows
            .iter()
            .position(|r| r.name == "StartContainer")
            .map_or(report.rows.len(), |p| p + 1);
        report.rows.insert(at, ready);
    }
    Ok(())
}

/// ExecSync `true` round trip into a running container.
pub async fn exec_latency(
    targets: &[Target],
    image: &str,
    iterations: usize,
    report: &mut Report,
) -> Result<()> {
    let mut running = Vec::new();
    for target in targets {
        let config = target.pod_config("exec")?;
        let pod = target.run_pod(&config).await?;
        let container = target.create_container(&pod, &config, image, SLEEP).await?;
        target.start_container(&container).await?;
        // Untimed warm-up.
        target.exec_sync(&container, &["true"]).await?;
        running.push((pod, container));
    }
    for i in 0..iterations {
        for t in order(targets, i) {
            let started = Instant::now();
            targets[t].exec_sync(&running[t].1, &["true"]).await?;
            report.add(
                "ExecSync `true`",
                Unit::Millis,
                None,
                t,
                ms(started.elapsed()),
            );
        }
    }
    for (target, (pod, _)) in targets.iter().zip(&running) {
        target.delete_pod(pod).await?;
    }
    Ok(())
}

/// Memory of the daemon plus its per-pod helpers with `pods` running pods, divided by `pods`.
/// Runtimes are measured one after the other: memory does not suffer from timing noise, and
/// having only one runtime's pods up keeps the process table unambiguous.
/// The calls a kubelet polls (its pod workers, the PLEG relist, image GC), on one running pod
/// per runtime, each timed on its own.
pub async fn poll_latency(
    targets: &[Target],
    image: &str,
    iterations: usize,
    report: &mut Report,
) -> Result<()> {
    const CALLS: [&str; 6] = [
        "ImageStatus",
        "ListImages",
        "PodSandboxStatus",
        "ContainerStatus",
        "ListPodSandbox",
        "ListContainers",
    ];
    let mut running = Vec::new();
    for target in targets {
        let config = target.pod_config("poll")?;
        let pod = target.run_pod(&config).await?;
        let container = target.create_container(&pod, &config, image, SLEEP).await?;
        target.start_container(&container).await?;
        running.push((pod, container));
    }
    for i in 0..iterations {
        for call in CALLS {
            for t in order(targets, i) {
                let (pod, container) = &running[t];
                let started = Instant::now();
                targets[t].poll(call, pod, container, image).await?;
                report.add(call, Unit::Millis, None, t, ms(started.elapsed()));
            }
        }
    }
    for (target, (pod, _)) in targets.iter().zip(&running) {
        target.delete_pod(pod).await?;
    }
    Ok(())
}

pub async fn memory_per_pod(
    targets: &[Target],
    image: &str,
    pods: usize,
    settle: Duration,
    report: &mut Report,
) -> Result<()> {
    let label = format!("{pods} pods: memory per pod, RSS");
    for (t, target) in targets.iter().enumerate() {
        let baseline: HashSet<u32> = procs::all().into_iter().map(|p| p.pid).collect();
        let idle = procs::memory(target.daemon_pid);
        let mut pod_ids = Vec::new();
        let mut containers = HashSet::new();
        for i in 0..pods {
            let config = target.pod_config(&format!("mem-{i}"))?;
            let pod = target.run_pod(&config).await?;
            let container = target.create_container(&pod, &config, image, SLEEP).await?;
            target.start_container(&container).await?;
            pod_ids.push(pod);
            containers.insert(container);
        }
        // Let lazily started goroutines, caches and short-lived helpers settle.
        tokio::time::sleep(settle).await;
        let daemon = procs::memory(target.daemon_pid);
        let helpers = target.helpers(&containers, &baseline);
        let helper_memory = helpers
            .iter()
            .map(|p| procs::memory(p.pid))
            .fold(Memory::default(), |a, b| a + b);
        let total = daemon + helper_memory;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_pod = |kib: u64| mib(kib) / pods as f64;
        report.add(&label, Unit::MiB, Some(0.07), t, per_pod(total.rss_kib));
        report.add(
            &format!("{pods} pods: memory per pod, PSS"),
            Unit::MiB,
            None,
            t,
            per_pod(total.pss_kib),
        );
        report.add("daemon RSS, no pods", Unit::MiB, None, t, mib(idle.rss_kib));
        report.add(
            &format!("{pods} pods: daemon RSS"),
            Unit::MiB,
            None,
            t,
            mib(daemon.rss_kib),
        );
        report.add(
            &format!("{pods} pods: helper processes"),
            Unit::Count,
            None,
            t,
            helpers.len() as f64,
        );
        let helper_rss = if helpers.is_empty() {
            0.0
        } else {
            mib(helper_memory.rss_kib) / helpers.len() as f64
        };
        report.add(
            &format!("{pods} pods: RSS per helper process"),
            Unit::MiB,
            None,
            t,
            helper_rss,
        );
        eprintln!(
            "{}: daemon RSS {:.1} MiB idle, {:.1} MiB with {pods} pods; {} helpers, {:.1} MiB RSS",
            target.name,
            mib(idle.rss_kib),
            mib(daemon.rss_kib),
            helpers.len(),
            mib(helper_memory.rss_kib)
        );
        for pod in &pod_ids {
            target.delete_pod(pod).await?;
        }
    }
    Ok(())
}

/// `pods` pods started at once: wall time until every one runs a web server that answers on
/// the pod's IP from the host. Teardown (all at once too) is timed separately.
pub async fn concurrent_pods(
    targets: &[Target],
    image: &str,
    sizes: &[usize],
    rounds: usize,
    ready_timeout: Duration,
    report: &mut Report,
) -> Result<()> {
    let mut round = 0;
    for &pods in sizes {
        for _ in 0..rounds {
            for t in order(targets, round) {
                let target = &targets[t];
                let cpu_before = procs::busy_cpu_seconds();
                let started = Instant::now();
                let results = futures::future::join_all((0..pods).map(|i| {
                    let name = format!("conc{pods}-{round}-{i}");
                    pod_answering(target, name, image, started + ready_timeout)
                }))
                .await;
                let wall = started.elapsed();
                let cpu = procs::busy_cpu_seconds() - cpu_before;
                let mut pod_ids = Vec::new();
                let mut first_error = None;
                for result in results {
                    match result {
                        Ok(id) => pod_ids.push(id),
                        Err(e) => first_error = first_error.or(Some(e)),
                    }
                }
                let teardown = Instant::now();
                let removed =
                    futures::future::join_all(pod_ids.iter().map(|id| target.delete_pod(id))).await;
                let teardown = teardown.elapsed();
                if let Some(e) = first_error {
                    return Err(e.context(format!("{}: {pods} concurrent pods", target.name)));
                }
                removed.into_iter().collect::<Result<Vec<_>>>()?;
                let goal = (pods >= 100).then_some(0.2);
                report.add(
                    &format!("{pods} pods at once: all answering"),
                    Unit::Seconds,
                    goal,
                    t,
                    wall.as_secs_f64(),
                );
                // What bounds a batch on a small machine: CPU time, all processes included.
                report.add(
                    &format!("{pods} pods at once: machine CPU per pod"),
                    Unit::Millis,
                    None,
                    t,
                    cpu * 1000.0 / pods as f64,
                );
                report.add(
                    &format!("{pods} pods at once: stop+remove all"),
                    Unit::Seconds,
                    None,
                    t,
                    teardown.as_secs_f64(),
                );
                eprintln!(
                    "{}: {pods} pods answering after {wall:.2?}, removed in {teardown:.2?}",
                    target.name
                );
            }
            round += 1;
        }
    }
    Ok(())
}

/// Runs one web-server pod and waits until it answers on its IP; returns the pod ID.
async fn pod_answering(
    target: &Target,
    name: String,
    image: &str,
    deadline: Instant,
) -> Result<String> {
    let config = target.pod_config(&name)?;
    let pod = target.run_pod(&config).await?;
    let container = target.create_container(&pod, &config, image, HTTPD).await?;
    target.start_container(&container).await?;
    let ip = target.pod_ip(&pod).await?;
    let addr = format!("{ip}:{HTTP_PORT}");
    loop {
        if http_ok(&addr).await {
            return Ok(pod);
        }
        if Instant::now() > deadline {
            bail!("{}: pod {name} at {addr} never answered", target.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `GET /passwd` (the image's /etc/passwd, served by busybox httpd) answers 200.
async fn http_ok(addr: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /passwd HTTP/1.0\r\nHost: pod\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(response)) => {
            response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200")
        }
        _ => false,
    }
}

/// Fails unless every runtime can run a web-server pod that answers from the host, before
/// any timing starts.
pub async fn check_network(targets: &[Target], image: &str) -> Result<()> {
    for target in targets {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pod = pod_answering(target, "netcheck".into(), image, deadline)
            .await
            .with_context(|| format!("{}: a pod must answer on its IP", target.name))?;
        target.delete_pod(&pod).await?;
    }
    Ok(())
}
