//! Interop with the reference plugins (Debian's containernetworking-plugins):
//! `/usr/lib/cni/bridge` + `host-local` and skiff-bridge get the same config,
//! sharing the bridge and the lease directory (same on-disk layout), and must
//! produce the same interface, addresses and routes in their namespaces.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const REF_DIR: &str = "/usr/lib/cni";

/// Runs the reference bridge plugin.
fn reference(command: &str, id: &str, ns: &str, conf: &Value) -> Reply {
    let mut child = Command::new(format!("{REF_DIR}/bridge"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", ns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REF_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reference bridge");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    Reply {
        ok: out.status.success(),
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ip -j` output inside a namespace.
fn ip_json(ns: &str, args: &str) -> Value {
    let out = in_netns(ns, &format!("ip -j {args}"));
    assert!(out.status.success(), "ip {args}");
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

/// The container interface, reduced to what must match, with the
/// container's own addresses replaced by "SELF".
fn interface_view(ns: &str, own: &[String]) -> Value {
    let link = &ip_json(ns, "addr show dev eth0")[0];
    let addrs: Vec<Value> = link["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| {
            let local = a["local"].as_str().unwrap_or_default();
            json!({
                "family": a["family"],
                "local": if own.iter().any(|o| o == local) { "SELF" } else { local },
                "prefixlen": a["prefixlen"],
                "broadcast": a["broadcast"],
                "scope": a["scope"],
            })
        })
        .collect();
    json!({
        "ifname": link["ifname"],
        "flags": link["flags"],
        "mtu": link["mtu"],
        "operstate": link["operstate"],
        "link_type": link["link_type"],
        "addresses": addrs,
    })
}

/// The main table routes of both families, "prefsrc" normalised.
fn routes_view(ns: &str, own: &[String]) -> Value {
    let mut all = Vec::new();
    for family in ["-4", "-6"] {
        for r in ip_json(ns, &format!("{family} route show table main"))
            .as_array()
            .expect("routes")
        {
            let mut r = r.clone();
            if let Some(src) = r.get("prefsrc").and_then(Value::as_str) {
                if own.iter().any(|o| o == src) {
                    r["prefsrc"] = json!("SELF");
                }
            }
            all.push(r);
        }
    }
    Value::Array(all)
}

/// A result with per-container values (addresses, MACs, names) blanked.
fn result_shape(r: &Value) -> Value {
    let mut r = r.clone();
    for intf in r["interfaces"].as_array_mut().expect("interfaces") {
        intf["mac"] = json!("MAC");
        if intf["name"].as_str().is_some_and(|n| n.starts_with("veth")) {
            intf["name"] = json!("VETH");
        }
        if intf.get("sandbox").is_some() {
            intf["sandbox"] = json!("NETNS");
        }
    }
    for ip in r["ips"].as_array_mut().expect("ips") {
        ip["address"] = json!("ADDR");
    }
    r
}

#[test]
fn reference_and_skiff_bridge_configure_the_same_pod_network() {
    if !have_root() {
        return;
    }
    if !Path::new(&format!("{REF_DIR}/bridge")).exists() {
        eprintln!("skipping: reference plugins not installed in {REF_DIR}");
        return;
    }
    let mut net = TestNet::new(30);
    let (ref_ns, our_ns) = (net.netns(), net.netns());
    // 1.0.0: the newest version the Debian reference plugins (1.1.1) speak.
    let mut conf = net.conf(json!({
        "cniVersion": "1.0.0",
        "isDefaultGateway": true,
        "hairpinMode": true,
        "mtu": 1450,
        "ipam": {"type": "host-local", "dataDir": net.data_dir.path(),
            "ranges": [[{"subnet": net.subnet4()}], [{"subnet": net.subnet6()}]],
            "routes": [{"dst": "192.0.2.0/24"}]},
    }));

    conf["type"] = json!("bridge");
    let theirs = reference("ADD", "ref", &ref_ns, &conf).expect_ok("reference ADD");
    conf["type"] = json!("skiff-bridge");
    let ours = net
        .bridge("ADD", "our", &our_ns, &conf)
        .expect_ok("skiff-bridge ADD");

    // The shared lease store: we continued after the reference's lease.
    let n = net.n;
    assert_eq!(ip_of(&theirs, 0), format!("10.213.{n}.2"));
    assert_eq!(ip_of(&ours, 0), format!("10.213.{n}.3"));
    assert_eq!(net.leases().len(), 4);

    let own_ref = vec![ip_of(&theirs, 0), ip_of(&theirs, 1)];
    let own_our = vec![ip_of(&ours, 0), ip_of(&ours, 1)];
    assert_eq!(
        interface_view(&ref_ns, &own_ref),
        interface_view(&our_ns, &own_our)
    );
    assert_eq!(
        routes_view(&ref_ns, &own_ref),
        routes_view(&our_ns, &own_our)
    );
    assert_eq!(result_shape(&theirs), result_shape(&ours));

    // Both host veths are hairpinned ports of the same bridge.
    for r in [&theirs, &ours] {
        let veth = r["interfaces"][1]["name"].as_str().expect("veth");
        let detail = sh_ok(&format!("ip -d link show {veth}"));
        assert!(
            detail.contains(&format!("master {}", net.bridge)),
            "{detail}"
        );
        assert!(detail.contains("hairpin on"), "{detail}");
    }

    // Each plugin's DEL releases the other's leases: same layout.
    conf["type"] = json!("skiff-bridge");
    net.bridge("DEL", "ref", &ref_ns, &conf)
        .expect_ok("skiff DEL of reference pod");
    conf["type"] = json!("bridge");
    reference("DEL", "our", &our_ns, &conf).expect_ok("reference DEL of skiff pod");
    assert!(net.leases().is_empty());
}
