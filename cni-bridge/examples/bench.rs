//! ADD/DEL latency of skiff-bridge vs the reference bridge + host-local,
//! both exec'd the same way a runtime does (a benchmark, not a test).
//!
//! ```text
//! cargo build -p skiff-cni --release
//! sudo target/release/examples/bench [pods] [--masq] [--one-at-a-time]
//! sudo target/release/examples/bench [rounds] --nft
//! ```
//!
//! For each plugin: create `pods` namespaces, ADD each (timed), then DEL
//! each (timed), and print the medians. With `--one-at-a-time`, each pod is
//! added and deleted before the next (a CRI runtime running one pod at a
//! time): with `--masq`, every ADD then finds the masquerade chain gone.
//! Uses bridge `skcnibench0` and 10.213.248.0/24; needs root and
//! /usr/lib/cni/{bridge,host-local}.
//!
//! `--nft` times only the nftables work of one pod's masquerade rule,
//! through the library, in this process: adding it when the table is
//! missing and deleting it with the chain and table, then the same while
//! another rule keeps the chain alive.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REF_DIR: &str = "/usr/lib/cni";
const BRIDGE: &str = "skcnibench0";

fn sh(cmd: &str) {
    let _ = Command::new("sh").arg("-c").arg(cmd).status();
}

/// Execs `bin` once with the CNI environment; returns the wall time.
fn exec(bin: &Path, command: &str, id: &str, netns: &str, conf: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REF_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("exec {}: {e}", bin.display()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed();
    if !out.status.success() {
        eprintln!(
            "{} {command} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Returns (ADD median, DEL median).
fn run(
    bin: &Path,
    plugin_type: &str,
    pods: usize,
    masq: bool,
    one_at_a_time: bool,
) -> (Duration, Duration) {
    let data = std::env::temp_dir().join(format!("skcni-bench-{}", std::process::id()));
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "skcni-bench", "type": plugin_type,
        "bridge": BRIDGE, "isGateway": true, "ipMasq": masq,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.213.248.0/24"}]],
                 "dataDir": data},
    })
    .to_string();
    let namespaces: Vec<String> = (0..pods).map(|i| format!("skcni-bench{i}")).collect();
    for ns in &namespaces {
        sh(&format!("ip netns add {ns}"));
    }
    let path = |ns: &str| format!("/run/netns/{ns}");
    // Warm-up: the first ADD creates the bridge and chains.
    exec(bin, "ADD", "warm", &path(&namespaces[0]), &conf);
    exec(bin, "DEL", "warm", &path(&namespaces[0]), &conf);
    std::thread::sleep(Duration::from_millis(500));

    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    if one_at_a_time {
        for (i, ns) in namespaces.iter().enumerate() {
            adds.push(exec(bin, "ADD", &format!("b{i}"), &path(ns), &conf));
            dels.push(exec(bin, "DEL", &format!("b{i}"), &path(ns), &conf));
        }
    } else {
        for (i, ns) in namespaces.iter().enumerate() {
            adds.push(exec(bin, "ADD", &format!("b{i}"), &path(ns), &conf));
        }
        std::thread::sleep(Duration::from_millis(500));
        for (i, ns) in namespaces.iter().enumerate() {
            dels.push(exec(bin, "DEL", &format!("b{i}"), &path(ns), &conf));
        }
    }

    for ns in &namespaces {
        sh(&format!("ip netns del {ns}"));
    }
    sh(&format!("ip link del {BRIDGE}"));
    let _ = skiff_cni::nft::delete_chains(&["masq-skcni-bench"]);
    let _ = std::fs::remove_dir_all(&data);
    (median(adds), median(dels))
}

/// The iptables-nft tables the reference plugin's ipMasq touches.
const IPTABLES_NAT: [&str; 2] = ["ip nat", "ip6 nat"];

fn table_exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table"])
        .args(table.split(' '))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes the iptables-nft NAT tables that `existed` says were not there
/// before and that hold no rule: the reference ipMasq creates the table and
/// its POSTROUTING chain on ADD, and its DEL leaves them.
fn remove_new_empty_nat_tables(existed: &[bool]) {
    for (table, existed) in IPTABLES_NAT.iter().zip(existed) {
        if *existed {
            continue;
        }
        let listing = Command::new("nft")
            .args(["-j", "list", "table"])
            .args(table.split(' '))
            .output();
        let Ok(listing) = listing else { continue };
        let doc: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap_or_default();
        let has_rules = doc["nftables"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i.get("rule").is_some()));
        if listing.status.success() && !has_rules {
            sh(&format!("nft delete table {table}"));
        }
    }
}

/// `--nft`: medians of adding and deleting one masquerade rule, with the
/// table missing (ADD creates table, chain and rule; DEL deletes them) and
/// with the chain held by another rule.
fn nft_only(rounds: usize) {
    use skiff_cni::nft::expr::{host, multicast4, net};
    use skiff_cni::nft::{self, Chain, Expr, Hook, Op, Rule};

    let chain = Chain {
        name: "masq-skcni-bench".into(),
        hook: Hook::Postrouting,
        prio: 100,
    };
    let rule = |id: &str, last: u8| Rule {
        chain: chain.name.clone(),
        comment: nft::tag(id, "eth0"),
        expr: vec![
            Expr::saddr(Op::Eq, host([10, 213, 248, last].into())),
            Expr::daddr(Op::Ne, net([10, 213, 248, 0].into(), 24)),
            Expr::daddr(Op::Ne, multicast4()),
            Expr::Masquerade,
        ],
    };
    let chains = std::slice::from_ref(&chain);
    let names = [chain.name.as_str()];
    let cycle = |id: &str| {
        let started = Instant::now();
        nft::add_rules(chains, &[rule(id, 5)]).expect("add");
        let added = started.elapsed();
        let started = Instant::now();
        nft::delete_rules_where(&names, |c| c == nft::tag(id, "eth0")).expect("delete");
        (added, started.elapsed())
    };
    let (cold_add, cold_del): (Vec<_>, Vec<_>) = (0..rounds).map(|_| cycle("cold")).unzip();
    nft::add_rules(chains, &[rule("keeper", 6)]).expect("add keeper");
    let (warm_add, warm_del): (Vec<_>, Vec<_>) = (0..rounds).map(|_| cycle("warm")).unzip();
    let _ = nft::delete_chains(&names);
    println!("nftables work of one masquerade rule, {rounds} rounds, medians:");
    println!(
        "  table missing   ADD {:>10.2?}  DEL (takes chain+table) {:>10.2?}",
        median(cold_add),
        median(cold_del)
    );
    println!(
        "  chain present   ADD {:>10.2?}  DEL {:>10.2?}",
        median(warm_add),
        median(warm_del)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pods = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(20usize)
        .max(1);
    if args.iter().any(|a| a == "--nft") {
        nft_only(pods);
        return;
    }
    let masq = args.iter().any(|a| a == "--masq");
    let one_at_a_time = args.iter().any(|a| a == "--one-at-a-time");
    let ours: PathBuf = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("skiff-bridge")))
        .expect("locate skiff-bridge next to the example");

    let existed: Vec<bool> = IPTABLES_NAT.iter().map(|t| table_exists(t)).collect();
    let reference = Path::new(REF_DIR).join("bridge");
    let (ref_add, ref_del) = run(&reference, "bridge", pods, masq, one_at_a_time);
    remove_new_empty_nat_tables(&existed);
    let (our_add, our_del) = run(&ours, "skiff-bridge", pods, masq, one_at_a_time);
    let mode = if one_at_a_time { ", one at a time" } else { "" };
    println!("{pods} pods, ipMasq={masq}{mode}, medians:");
    println!("  reference bridge+host-local  ADD {ref_add:>10.2?}  DEL {ref_del:>10.2?}");
    println!("  skiff-bridge                 ADD {our_add:>10.2?}  DEL {our_del:>10.2?}");
    println!(
        "  skiff-bridge ADD = {:.2} x reference (target <= 0.33)",
        our_add.as_secs_f64() / ref_add.as_secs_f64()
    );
}
