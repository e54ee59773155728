//! Soak: many pod create/start/stop/remove cycles leave nothing behind, and skiffd's memory and
//! file descriptors stay flat. `SKIFF_SOAK_CYCLES` sets the count (CI: 100; the long run: 1000).

use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn leftovers(daemon: &Skiffd) -> Vec<String> {
    let dir = daemon.dir().display().to_string();
    let mut found: Vec<String> = daemon
        .mounts_left()
        .into_iter()
        .map(|m| format!("mount {m}"))
        .collect();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("skiff-monitor") && cmdline.contains(&dir) {
            found.push(format!("process {cmdline}"));
        }
    }
    let net = daemon.network().unwrap();
    let leases = std::fs::read_dir(
        daemon
            .dir()
            .join(format!("cni-leases/skiff-test-{}", net.number)),
    )
    .map(|d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
            .count()
    })
    .unwrap_or(0);
    if leases > 0 {
        found.push(format!("{leases} IP leases"));
    }
    let veths = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &net.bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    if veths > 0 {
        found.push(format!("{veths} veths on {}", net.bridge));
    }
    for dir in [
        "run/sandboxes",
        "run/containers",
        "run/oci",
        "root/containers",
    ] {
        let n = std::fs::read_dir(daemon.dir().join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        if n > 0 {
            found.push(format!("{n} entries in {dir}"));
        }
    }
    found
}

#[tokio::test]
async fn pod_cycles_leave_nothing_and_keep_skiffd_flat() {
    let cycles: usize = std::env::var("SKIFF_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let pid = daemon.pid().unwrap();
    let mut samples = Vec::new();
    let started = std::time::Instant::now();
    for cycle in 0..cycles {
        let pod = pod_config(&format!("soak-{cycle}"), "soak", logs.path());
        let pod_id = run_pod(&daemon, &pod).await.unwrap();
        start_container(
            &daemon,
            &pod_id,
            &pod,
            container_config("c", &image, &["sleep", "3600"]),
        )
        .await
        .unwrap();
        remove_pod(&daemon, &pod_id).await.unwrap();
        if cycle == 9 || cycle + 1 == cycles {
            samples.push((cycle + 1, rss_kb(pid), open_fds(pid)));
        }
    }
    let elapsed = started.elapsed();
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    println!(
        "soak: {cycles} cycles in {elapsed:?}; skiffd RSS {} kB after {} cycles, {} kB after {}; fds {} -> {}",
        first.1, first.0, last.1, last.0, first.2, last.2
    );
    assert!(leftovers(&daemon).is_empty(), "{:?}", leftovers(&daemon));
    assert!(
        last.2 <= first.2 + 2,
        "skiffd file descriptors grew: {first:?} -> {last:?}"
    );
    // Allocator noise is fine; a per-cycle leak of even 10 kB over 90 cycles is not.
    assert!(
        last.1 <= first.1 + 2048,
        "skiffd RSS grew: {first:?} -> {last:?}"
    );
}
