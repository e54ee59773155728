//! skiff-bridge driven as a runtime drives it: real binary, real namespaces.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

#[test]
fn add_gives_a_reachable_ip_and_del_removes_everything() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(1);
    let ns = net.netns();
    let conf = net.conf(json!({}));

    let result = net.bridge("ADD", "pod1", &ns, &conf).expect_ok("ADD");
    assert_eq!(result["cniVersion"], "1.1.0");
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 3);
    assert_eq!(interfaces[0]["name"], net.bridge.as_str());
    assert!(interfaces[1]["name"].as_str().unwrap().starts_with("veth"));
    assert_eq!(interfaces[2]["name"], "eth0");
    assert_eq!(interfaces[2]["sandbox"], ns.as_str());
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(result["ips"][0]["gateway"], format!("10.213.{}.1", net.n));
    let ip = ip_of(&result, 0);
    assert_eq!(ip, format!("10.213.{}.2", net.n));
    assert_eq!(net.leases(), std::slice::from_ref(&ip));

    // The container sees the address; the host reaches it (ping and TCP).
    let addrs = String::from_utf8_lossy(&in_netns(&ns, "ip -o addr show eth0").stdout).into_owned();
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
    assert!(sh(&format!("busybox ping -c1 -W2 {ip}")).status.success());
    let mut server = serve_once(&ns, 8080, "pong");
    let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
    assert_eq!(fetch(addr).trim(), "pong");
    let _ = server.wait();

    // DEL: interface gone, lease gone, bridge stays for other pods.
    net.bridge("DEL", "pod1", &ns, &conf).expect_ok("DEL");
    assert!(!in_netns(&ns, "ip link show eth0").status.success());
    assert!(net.leases().is_empty());
    assert!(sh(&format!("ip link show {}", net.bridge)).status.success());
}

#[test]
fn every_result_version_has_its_shape() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(2);
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let ns = net.netns();
        let id = format!("ver{i}");
        let conf = net.conf(json!({
            "cniVersion": version,
            "ipam": {"type": "host-local", "dataDir": net.data_dir.path(),
                     "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]]},
        }));
        let r = net.bridge("ADD", &id, &ns, &conf).expect_ok(version);
        assert_eq!(r["cniVersion"], *version);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert!(r["dns"].is_object());
        let pre_1_0 = version.starts_with('0');
        for ip in r["ips"].as_array().unwrap() {
            assert_eq!(ip.get("version").is_some(), pre_1_0, "{version}: {ip}");
            assert_eq!(ip["interface"], 2);
        }
        if pre_1_0 {
            assert_eq!(r["ips"][0]["version"], "4");
            assert_eq!(r["ips"][1]["version"], "6");
        }
        // The interface MTU is a 1.1.0 field.
        assert_eq!(
            r["interfaces"][2].get("mtu").is_some(),
            *version == "1.1.0",
            "{version}"
        );
        net.bridge("DEL", &id, &ns, &conf).expect_ok("DEL");
    }
    assert!(net.leases().is_empty());
}

#[test]
fn dual_stack_is_ready_at_once() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(3);
    let ns = net.netns();
    let conf = net.conf(json!({
        "isDefaultGateway": true,
        "mtu": 1400,
        "ipam": {"type": "skiff", "dataDir": net.data_dir.path(),
                 "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]]},
    }));
    let started = Instant::now();
    let r = net.bridge("ADD", "dual", &ns, &conf).expect_ok("ADD");
    let took = started.elapsed();
    assert!(
        took.as_millis() < 1000,
        "ADD took {took:?}: DAD must not stall it"
    );

    let v6 = ip_of(&r, 1);
    assert_eq!(v6, format!("fd00:213:{}::2", net.n));
    let addrs =
        String::from_utf8_lossy(&in_netns(&ns, "ip -o -6 addr show eth0").stdout).into_owned();
    assert!(addrs.contains(&format!("{v6}/64")), "{addrs}");
    assert!(!addrs.contains("tentative"), "{addrs}");
    let link = String::from_utf8_lossy(&in_netns(&ns, "ip -o link show eth0").stdout).into_owned();
    assert!(link.contains("mtu 1400"), "{link}");
    // Default routes for both families.
    let routes4 = String::from_utf8_lossy(&in_netns(&ns, "ip route").stdout).into_owned();
    let routes6 = String::from_utf8_lossy(&in_netns(&ns, "ip -6 route").stdout).into_owned();
    assert!(
        routes4.contains(&format!("default via 10.213.{}.1", net.n)),
        "{routes4}"
    );
    assert!(
        routes6.contains(&format!("default via fd00:213:{}::1", net.n)),
        "{routes6}"
    );
    assert_eq!(r["routes"].as_array().unwrap().len(), 2);

    // Reachable over IPv6 right away, TCP included.
    assert!(sh(&format!("busybox ping -6 -c1 -W2 {v6}"))
        .status
        .success());
    let mut server = serve_once(&ns, 8081, "v6pong");
    let addr: SocketAddr = format!("[{v6}]:8081").parse().unwrap();
    assert_eq!(fetch(addr).trim(), "v6pong");
    let _ = server.wait();

    net.bridge("DEL", "dual", &ns, &conf).expect_ok("DEL");
    assert!(net.leases().is_empty());
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut conf = conf.clone();
    conf["prevResult"] = prev.clone();
    conf
}

#[test]
fn check_passes_then_detects_a_removed_route() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(4);
    let ns = net.netns();
    let conf = net.conf(json!({"isDefaultGateway": true, "ipMasq": true}));
    let r = net.bridge("ADD", "chk", &ns, &conf).expect_ok("ADD");

    let check_conf = with_prev(&conf, &r);
    net.bridge("CHECK", "chk", &ns, &check_conf)
        .expect_ok("CHECK");

    assert!(in_netns(&ns, "ip route del default").status.success());
    let reply = net.bridge("CHECK", "chk", &ns, &check_conf);
    assert_eq!(reply.code(), Some(101), "{:?}", reply);
    assert!(reply.json["details"]
        .as_str()
        .unwrap()
        .contains("0.0.0.0/0"));

    // CHECK without prevResult is a configuration error.
    assert_eq!(net.bridge("CHECK", "chk", &ns, &conf).code(), Some(7));
    net.bridge("DEL", "chk", &ns, &check_conf).expect_ok("DEL");
}

#[test]
fn del_is_idempotent_and_survives_a_missing_netns() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(5);
    let conf = net.conf(json!({"ipMasq": true}));

    let ns = net.netns();
    net.bridge("ADD", "twice", &ns, &conf).expect_ok("ADD");
    net.bridge("DEL", "twice", &ns, &conf).expect_ok("DEL 1");
    net.bridge("DEL", "twice", &ns, &conf).expect_ok("DEL 2");

    let ns2 = net.netns();
    net.bridge("ADD", "gone", &ns2, &conf).expect_ok("ADD");
    assert_eq!(net.leases().len(), 1);
    assert_eq!(net.rules_tagged("gone/eth0"), 1);
    net.delete_netns(&ns2);
    net.bridge("DEL", "gone", &ns2, &conf)
        .expect_ok("DEL, netns gone");
    assert!(net.leases().is_empty(), "the address is released anyway");
    assert_eq!(net.rules_tagged("gone/eth0"), 0);
    // DEL without CNI_NETNS at all.
    net.bridge("DEL", "gone", "", &conf)
        .expect_ok("DEL, no netns");

    // The veth was removed behind our back: DEL still releases the address.
    let ns3 = net.netns();
    net.bridge("ADD", "noveth", &ns3, &conf).expect_ok("ADD");
    assert!(in_netns(&ns3, "ip link del eth0").status.success());
    net.bridge("DEL", "noveth", &ns3, &conf)
        .expect_ok("DEL, veth gone");
    assert!(net.leases().is_empty());

    // CNI_NETNS is a leftover file that no longer holds a namespace (an
    // unmounted pin): treated as gone.
    let stale = net.data_dir.path().join("stale-netns");
    std::fs::write(&stale, b"").unwrap();
    let ns4 = net.netns();
    net.bridge("ADD", "stale", &ns4, &conf).expect_ok("ADD");
    let stale = stale.display().to_string();
    net.bridge("DEL", "stale", &stale, &conf)
        .expect_ok("DEL, stale netns file");
    assert!(net.leases().is_empty());
}

#[test]
fn gc_releases_leaked_leases_and_rules() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(6);
    let conf = net.conf(json!({"ipMasq": true}));
    let (ns1, ns2) = (net.netns(), net.netns());
    let r1 = net.bridge("ADD", "live", &ns1, &conf).expect_ok("ADD live");
    net.bridge("ADD", "leaked", &ns2, &conf)
        .expect_ok("ADD leaked");
    assert_eq!(net.leases().len(), 2);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    net.bridge("GC", "", "", &gc).expect_ok("GC");
    assert_eq!(net.leases(), [ip_of(&r1, 0)]);
    assert_eq!(net.rules_tagged("leaked/eth0"), 0);
    assert_eq!(net.rules_tagged("live/eth0"), 1);

    // GC without the list is refused rather than releasing everything.
    assert_eq!(net.bridge("GC", "", "", &conf).code(), Some(7));
    net.bridge("DEL", "live", &ns1, &conf).expect_ok("DEL");
    net.assert_no_nft_leftovers();
}

#[test]
fn exhausted_range_fails_status_and_add() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(7);
    let n = net.n;
    let conf = net.conf(json!({
        "ipam": {"type": "host-local", "dataDir": net.data_dir.path(), "ranges": [[{
            "subnet": net.subnet4(),
            "rangeStart": format!("10.213.{n}.10"),
            "rangeEnd": format!("10.213.{n}.11"),
        }]]},
    }));
    net.bridge("STATUS", "", "", &conf)
        .expect_ok("STATUS empty");
    let (a, b, c) = (net.netns(), net.netns(), net.netns());
    net.bridge("ADD", "a", &a, &conf).expect_ok("ADD a");
    net.bridge("ADD", "b", &b, &conf).expect_ok("ADD b");

    let status = net.bridge("STATUS", "", "", &conf);
    assert_eq!(status.code(), Some(50), "{status:?}");
    let add = net.bridge("ADD", "c", &c, &conf);
    assert_eq!(add.code(), Some(11), "{add:?}");
    assert!(add.json["details"]
        .as_str()
        .unwrap()
        .contains("no IP addresses available"));
    // The failed ADD left nothing behind.
    assert!(!in_netns(&c, "ip link show eth0").status.success());
    assert_eq!(net.leases().len(), 2);

    net.bridge("DEL", "a", &a, &conf).expect_ok("DEL a");
    net.bridge("STATUS", "", "", &conf)
        .expect_ok("STATUS after DEL");
    net.bridge("ADD", "c", &c, &conf)
        .expect_ok("ADD c after DEL");
    net.bridge("DEL", "b", &b, &conf).expect_ok("DEL b");
    net.bridge("DEL", "c", &c, &conf).expect_ok("DEL c");
}

#[test]
fn bad_input_gets_the_right_error_codes() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(8);
    let ns = net.netns();
    let add = |stdin: &str| {
        let call = Call {
            command: "ADD",
            container_id: "bad",
            netns: &ns,
            ifname: "eth0",
        };
        invoke(BRIDGE, &call, stdin.as_bytes())
    };
    let base = net.conf(json!({}));
    let with = |patch: Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    };

    let cases: Vec<(String, u64)> = vec![
        ("{ this is not json".into(), 6),
        ("[]".into(), 6),
        (with(json!({"mtu": "1500"})), 6),
        (with(json!({"isGateway": 1})), 6),
        (
            with(json!({"ipam": {"type": "host-local", "ranges": "10.0.0.0/8"}})),
            6,
        ),
        (with(json!({"cniVersion": "0.2.0"})), 1),
        (with(json!({"cniVersion": 1})), 6),
        (with(json!({"name": "has space"})), 7),
        (
            with(
                json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.213.8.7/24"}]]}}),
            ),
            7,
        ),
        (with(json!({"ipam": {"type": "dhcp"}})), 2),
        (with(json!({"vlan": 42})), 2),
    ];
    for (stdin, code) in &cases {
        let reply = add(stdin);
        assert!(!reply.ok, "{stdin} should fail");
        assert_eq!(reply.code(), Some(*code), "{stdin}: {}", reply.json);
        assert!(reply.json["msg"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(reply.json["details"].is_string());
        assert!(reply.json["cniVersion"].is_string());
    }
    // Environment problems: code 4, naming the variable.
    let call = Call {
        command: "ADD",
        container_id: "",
        netns: &ns,
        ifname: "eth0",
    };
    let reply = invoke(BRIDGE, &call, base.to_string().as_bytes());
    assert_eq!(reply.code(), Some(4));
    assert!(reply.json["details"]
        .as_str()
        .unwrap()
        .contains("CNI_CONTAINERID"));
    let call = Call {
        command: "FROB",
        container_id: "x",
        netns: &ns,
        ifname: "eth0",
    };
    assert_eq!(invoke(BRIDGE, &call, b"{}").code(), Some(4));
    let call = Call {
        command: "ADD",
        container_id: "x",
        netns: &ns,
        ifname: "much-too-long-ifname",
    };
    assert_eq!(
        invoke(BRIDGE, &call, base.to_string().as_bytes()).code(),
        Some(4)
    );
    // ADD into a netns that does not exist.
    let call = Call {
        command: "ADD",
        container_id: "x",
        netns: "/run/netns/skcni-does-not-exist",
        ifname: "eth0",
    };
    assert_eq!(
        invoke(BRIDGE, &call, base.to_string().as_bytes()).code(),
        Some(4)
    );
    // Nothing above leased anything.
    assert!(net.leases().is_empty());
}

#[test]
fn version_reports_supported_versions() {
    let call = Call {
        command: "VERSION",
        container_id: "",
        netns: "",
        ifname: "",
    };
    let reply = invoke(BRIDGE, &call, br#"{"cniVersion":"1.0.0"}"#).expect_ok("VERSION");
    assert_eq!(reply["cniVersion"], "1.0.0");
    assert_eq!(
        reply["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let reply = invoke(BRIDGE, &call, b"").expect_ok("VERSION without input");
    assert_eq!(reply["cniVersion"], "1.1.0");
}

#[test]
fn concurrent_adds_get_unique_ips() {
    if !have_root() {
        return;
    }
    const PODS: usize = 20;
    let mut net = TestNet::new(9);
    let conf = net.conf(
        json!({"ipam": {"type": "host-local", "dataDir": net.data_dir.path(),
        "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]]}}),
    );
    let namespaces: Vec<String> = (0..PODS).map(|_| net.netns()).collect();

    // Start all processes before waiting for any.
    let stdin = conf.to_string();
    let children: Vec<_> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let id = format!("conc{i}");
            let ns = ns.clone();
            let stdin = stdin.clone();
            std::thread::spawn(move || {
                let call = Call {
                    command: "ADD",
                    container_id: &id,
                    netns: &ns,
                    ifname: "eth0",
                };
                invoke(BRIDGE, &call, stdin.as_bytes())
            })
        })
        .collect();
    let results: Vec<Value> = children
        .into_iter()
        .map(|h| h.join().expect("thread").expect_ok("concurrent ADD"))
        .collect();

    let v4: HashSet<String> = results.iter().map(|r| ip_of(r, 0)).collect();
    let v6: HashSet<String> = results.iter().map(|r| ip_of(r, 1)).collect();
    assert_eq!(v4.len(), PODS, "{v4:?}");
    assert_eq!(v6.len(), PODS, "{v6:?}");
    assert_eq!(net.leases().len(), 2 * PODS);

    for (i, ns) in namespaces.iter().enumerate() {
        net.bridge("DEL", &format!("conc{i}"), ns, &conf)
            .expect_ok("DEL");
    }
    assert!(net.leases().is_empty());
}

#[test]
fn concurrent_add_and_del_share_the_masq_chain_safely() {
    if !have_root() {
        return;
    }
    const WORKERS: usize = 6;
    const CYCLES: usize = 5;
    let mut net = TestNet::new(16);
    let conf = net.conf(json!({"ipMasq": true})).to_string();
    let namespaces: Vec<String> = (0..WORKERS).map(|_| net.netns()).collect();
    // Each DEL of a last rule removes the chain (and maybe the table) while
    // other workers add to it: the table lock must keep every call working.
    let workers: Vec<_> = namespaces
        .into_iter()
        .enumerate()
        .map(|(w, ns)| {
            let conf = conf.clone();
            std::thread::spawn(move || {
                for c in 0..CYCLES {
                    let id = format!("w{w}c{c}");
                    for command in ["ADD", "DEL"] {
                        let call = Call {
                            command,
                            container_id: &id,
                            netns: &ns,
                            ifname: "eth0",
                        };
                        invoke(BRIDGE, &call, conf.as_bytes()).expect_ok(command);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert!(net.leases().is_empty());
    net.assert_no_nft_leftovers();
}

#[test]
fn ip_masq_rules_are_added_and_removed() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(10);
    let ns = net.netns();
    let conf = net.conf(json!({"ipMasq": true, "ipam": {"type": "host-local",
        "dataDir": net.data_dir.path(),
        "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]]}}));
    let r = net.bridge("ADD", "masq", &ns, &conf).expect_ok("ADD");
    assert_eq!(net.rules_tagged("masq/eth0"), 2, "one rule per address");
    let ruleset = sh_ok("nft list table inet skiff-cni");
    assert!(ruleset.contains(&format!(
        "ip saddr {} ip daddr != {}",
        ip_of(&r, 0),
        net.subnet4()
    )));
    assert!(ruleset.contains(&format!("ip6 saddr {}", ip_of(&r, 1))));

    net.bridge("DEL", "masq", &ns, &conf).expect_ok("DEL");
    assert_eq!(net.rules_tagged("masq/eth0"), 0);
    // The last rule took its chain, and the table if it was the last chain.
    net.assert_no_nft_leftovers();
}

/// `ipMasqExclude`: a cluster's other pod networks are reached with the pod's own address
/// (routes between nodes, no NAT); each exclusion goes to the rules of its own family.
#[test]
fn excluded_networks_are_left_out_of_the_masquerade() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(11);
    let ns = net.netns();
    let conf = net.conf(json!({"ipMasq": true,
        "ipMasqExclude": ["10.244.0.0/16", "10.96.7.0/24", "fd00:244::/56"],
        "ipam": {"type": "host-local", "dataDir": net.data_dir.path(),
        "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]]}}));
    let r = net.bridge("ADD", "excl", &ns, &conf).expect_ok("ADD");
    let ruleset = sh_ok("nft list table inet skiff-cni");
    let rule_of = |addr: &str| {
        ruleset
            .lines()
            .find(|l| l.contains(&format!("saddr {addr} ")))
            .unwrap_or_else(|| panic!("no rule for {addr} in {ruleset}"))
            .to_string()
    };
    let v4 = rule_of(&ip_of(&r, 0));
    assert!(
        v4.contains("ip daddr != 10.244.0.0/16") && v4.contains("ip daddr != 10.96.7.0/24"),
        "{v4}"
    );
    assert!(!v4.contains("fd00:244::"), "{v4}");
    let v6 = rule_of(&ip_of(&r, 1));
    assert!(v6.contains("ip6 daddr != fd00:244::/56"), "{v6}");
    assert!(!v6.contains("10.244.0.0"), "{v6}");

    // A value that is not a network is a configuration error, as any bad field.
    let bad = net.conf(json!({"ipMasq": true, "ipMasqExclude": ["10.244.0.0"],
        "ipam": {"type": "host-local", "dataDir": net.data_dir.path(),
        "ranges": [[{"subnet": net.subnet4()}]]}}));
    let ns2 = net.netns();
    assert!(net.bridge("ADD", "excl-bad", &ns2, &bad).code().is_some());

    net.bridge("DEL", "excl", &ns, &conf).expect_ok("DEL");
    net.assert_no_nft_leftovers();
}

#[test]
fn status_is_fine_on_a_fresh_network() {
    if !have_root() {
        return;
    }
    let net = TestNet::new(11);
    let conf = net.conf(json!({"ipMasq": true}));
    net.bridge("STATUS", "", "", &conf).expect_ok("STATUS");
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    assert_eq!(net.bridge("STATUS", "", "", &old).code(), Some(1));
}

#[test]
fn bridge_options_promisc_and_force_address() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(12);
    let n = net.n;
    // A stale address of the same subnet is already on the bridge.
    sh_ok(&format!(
        "ip link add {} type bridge && ip addr add 10.213.{n}.200/24 dev {}",
        net.bridge, net.bridge
    ));
    let ns = net.netns();
    let conf = net.conf(json!({"promiscMode": true}));
    let reply = net.bridge("ADD", "opt", &ns, &conf);
    assert_eq!(reply.code(), Some(7), "{reply:?}");
    assert!(net.leases().is_empty(), "the failed ADD released its lease");
    assert!(!in_netns(&ns, "ip link show eth0").status.success());

    let conf = net.conf(json!({"promiscMode": true, "forceAddress": true}));
    net.bridge("ADD", "opt", &ns, &conf)
        .expect_ok("ADD with forceAddress");
    let addrs = sh_ok(&format!("ip -o -4 addr show dev {}", net.bridge));
    assert!(addrs.contains(&format!("10.213.{n}.1/24")), "{addrs}");
    assert!(!addrs.contains(".200/"), "{addrs}");
    let link = sh_ok(&format!("ip -d link show {}", net.bridge));
    assert!(link.contains("PROMISC"), "{link}");
    assert_eq!(sh_ok("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");

    // A name taken by something that is not a bridge is refused.
    let mut other = conf.clone();
    other["bridge"] = json!("lo");
    let ns2 = net.netns();
    assert_eq!(net.bridge("ADD", "opt2", &ns2, &other).code(), Some(7));
    net.bridge("DEL", "opt", &ns, &conf).expect_ok("DEL");
}

#[test]
fn status_reports_a_missing_bridge_with_live_leases() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(13);
    let ns = net.netns();
    let conf = net.conf(json!({}));
    net.bridge("ADD", "s", &ns, &conf).expect_ok("ADD");
    net.bridge("STATUS", "", "", &conf).expect_ok("STATUS");
    sh_ok(&format!("ip link del {}", net.bridge));
    assert_eq!(net.bridge("STATUS", "", "", &conf).code(), Some(51));
    net.bridge("DEL", "s", &ns, &conf).expect_ok("DEL");
    net.bridge("STATUS", "", "", &conf)
        .expect_ok("STATUS, nothing leased");
}

/// The issue's leak check: many ADD/DEL cycles (with masquerade and a host
/// port) leave no lease, veth or nftables rule behind. Slow, so opt-in:
/// `cargo test -p skiff-cni --test bridge -- --ignored` (SKCNI_CYCLES=N).
#[test]
#[ignore]
fn many_add_del_cycles_leave_nothing_behind() {
    if !have_root() {
        return;
    }
    let cycles: usize = std::env::var("SKCNI_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut net = TestNet::new(14);
    let ns = net.netns();
    let conf = net.conf(
        json!({"ipMasq": true, "hairpinMode": true, "ipam": {"type": "host-local",
        "dataDir": net.data_dir.path(),
        "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]]}}),
    );
    for i in 0..cycles {
        let id = format!("cycle{i}");
        let r = net.bridge("ADD", &id, &ns, &conf).expect_ok("ADD");
        let mut pm = json!({"cniVersion": "1.1.0", "name": net.name, "type": "skiff-portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": 18014, "containerPort": 80}]}});
        pm["prevResult"] = r;
        let call = Call {
            command: "ADD",
            container_id: &id,
            netns: &ns,
            ifname: "eth0",
        };
        invoke(PORTMAP, &call, pm.to_string().as_bytes()).expect_ok("portmap ADD");
        let call = Call {
            command: "DEL",
            ..call
        };
        invoke(PORTMAP, &call, pm.to_string().as_bytes()).expect_ok("portmap DEL");
        net.bridge("DEL", &id, &ns, &conf).expect_ok("DEL");
    }
    assert!(net.leases().is_empty());
    let ports = sh_ok(&format!("ip -o link show master {}", net.bridge));
    assert!(ports.trim().is_empty(), "veths left on the bridge: {ports}");
    net.assert_no_nft_leftovers();
}

/// The MAC the bridge's neighbor table has for `ip` (empty if none).
fn bridge_neighbor_mac(net: &TestNet, ip: &str) -> String {
    let out = sh_ok(&format!("ip -j neigh show {ip} dev {}", net.bridge));
    let entries: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    entries[0]["lladdr"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_reused_address_is_announced_to_the_bridge() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(15);
    let n = net.n;
    // Two addresses: one for a pod that keeps the bridge's carrier up (a bridge
    // without ports drops its neighbor entries), and the one the next two pods share.
    let (first_ip, only) = (format!("10.213.{n}.10"), format!("10.213.{n}.11"));
    let conf = net.conf(json!({
        "ipam": {"type": "host-local", "dataDir": net.data_dir.path(), "ranges": [[{
            "subnet": net.subnet4(), "rangeStart": first_ip, "rangeEnd": only,
        }]]},
    }));
    let (keeper, a, b) = (net.netns(), net.netns(), net.netns());
    let kept = net
        .bridge("ADD", "keeper", &keeper, &conf)
        .expect_ok("ADD keeper");
    assert_eq!(ip_of(&kept, 0), first_ip);
    let first = net.bridge("ADD", "a", &a, &conf).expect_ok("ADD a");
    assert_eq!(ip_of(&first, 0), only);
    // The host still knows the address by the old pod's MAC, as after talking to it.
    let old_mac = "02:00:00:00:0a:0a";
    sh_ok(&format!(
        "ip neigh replace {only} lladdr {old_mac} dev {} nud stale",
        net.bridge
    ));
    net.bridge("DEL", "a", &a, &conf).expect_ok("DEL a");

    let second = net.bridge("ADD", "b", &b, &conf).expect_ok("ADD b");
    assert_eq!(ip_of(&second, 0), only);
    let new_mac = second["interfaces"][2]["mac"].as_str().unwrap().to_string();
    assert_ne!(new_mac, old_mac);
    // The announcement crosses the veth and the bridge asynchronously: wait for it,
    // without sending the address anything that would make the host ask for it.
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    let mut seen = bridge_neighbor_mac(&net, &only);
    while seen != new_mac && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        seen = bridge_neighbor_mac(&net, &only);
    }
    assert_eq!(seen, new_mac, "the host kept the old pod's MAC");
    net.bridge("DEL", "b", &b, &conf).expect_ok("DEL b");
    net.bridge("DEL", "keeper", &keeper, &conf)
        .expect_ok("DEL keeper");
}

#[test]
fn the_bridge_keeps_its_mac_as_ports_come_and_go() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(17);
    let pod = net.netns();
    let added = net.bridge("ADD", "pod", &pod, &net.conf(json!({})));
    let bridge_mac = added.expect_ok("ADD")["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    // A port with the lowest possible MAC: a bridge left to itself would take it.
    // Its peer lives in a test namespace, so dropping the namespace removes both.
    let other = net.netns();
    let other_name = other.trim_start_matches("/run/netns/");
    let port = format!("{}lo", net.bridge);
    sh_ok(&format!(
        "ip link add {port} address 02:00:00:00:00:01 type veth peer name eth0 netns {other_name}"
    ));
    sh_ok(&format!("ip link set {port} master {} up", net.bridge));
    let now = sh_ok(&format!("cat /sys/class/net/{}/address", net.bridge));
    assert_eq!(now.trim(), bridge_mac, "the bridge took a port's MAC");
    sh_ok(&format!("ip link del {port}"));
    net.bridge("DEL", "pod", &pod, &net.conf(json!({})))
        .expect_ok("DEL");
}
