//! skiff-portmap chained after skiff-bridge, as in a conflist.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn portmap(net: &TestNet, command: &str, id: &str, ns: &str, conf: &Value) -> Reply {
    let call = Call {
        command,
        container_id: id,
        netns: ns,
        ifname: "eth0",
    };
    let _ = net;
    invoke(PORTMAP, &call, conf.to_string().as_bytes())
}

fn portmap_conf(net: &TestNet, mappings: Value, prev: Option<&Value>) -> Value {
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": net.name,
        "type": "skiff-portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings},
    });
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

#[test]
fn host_port_on_localhost_reaches_the_pod() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(20);
    let (pod, client) = (net.netns(), net.netns());
    let bridge_conf =
        net.conf(json!({"isDefaultGateway": true, "ipMasq": true, "hairpinMode": true}));
    let result = net
        .bridge("ADD", "web", &pod, &bridge_conf)
        .expect_ok("bridge ADD");
    let mappings = json!([{"hostPort": 18020, "containerPort": 80, "protocol": "tcp"}]);
    let conf = portmap_conf(&net, mappings.clone(), Some(&result));

    // The chained plugin passes the previous result through unchanged.
    let out = portmap(&net, "ADD", "web", &pod, &conf).expect_ok("portmap ADD");
    assert_eq!(out, result);
    assert_eq!(
        net.rules_tagged("web/eth0"),
        1 + 4,
        "masq + dnat, out, snat from the subnet and from 127/8"
    );
    portmap(&net, "CHECK", "web", &pod, &conf).expect_ok("portmap CHECK");

    // From the host's loopback.
    let mut server = serve_once(&pod, 80, "via-localhost");
    let addr: SocketAddr = "127.0.0.1:18020".parse().unwrap();
    assert_eq!(fetch(addr).trim(), "via-localhost");
    let _ = server.wait();

    // From another pod through the gateway address (hairpin through the host).
    net.bridge("ADD", "client", &client, &bridge_conf)
        .expect_ok("client ADD");
    let mut server = serve_once(&pod, 80, "via-gateway");
    let gw = format!("10.213.{}.1", net.n);
    let mut got = String::new();
    for _ in 0..50 {
        let out = in_netns(&client, &format!("busybox nc {gw} 18020 </dev/null"));
        got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(got, "via-gateway");
    let _ = server.wait();

    // DEL removes exactly this attachment's rules; CHECK then notices.
    portmap(&net, "DEL", "web", &pod, &conf).expect_ok("portmap DEL");
    portmap(&net, "DEL", "web", &pod, &conf).expect_ok("portmap DEL again");
    assert_eq!(
        net.rules_tagged("web/eth0"),
        1,
        "only the bridge's masq rule remains"
    );
    assert_eq!(portmap(&net, "CHECK", "web", &pod, &conf).code(), Some(101));
    net.bridge("DEL", "web", &pod, &bridge_conf)
        .expect_ok("bridge DEL");
    net.bridge("DEL", "client", &client, &bridge_conf)
        .expect_ok("client DEL");
    assert_eq!(net.rules_tagged("web/eth0"), 0);
    net.assert_no_nft_leftovers();
}

#[test]
fn portmap_gc_and_validation() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(21);
    let (a, b) = (net.netns(), net.netns());
    let bridge_conf = net.conf(json!({}));
    let ra = net.bridge("ADD", "a", &a, &bridge_conf).expect_ok("ADD a");
    let rb = net.bridge("ADD", "b", &b, &bridge_conf).expect_ok("ADD b");
    let m = |port: u16| json!([{"hostPort": port, "containerPort": 80}]);
    portmap(
        &net,
        "ADD",
        "a",
        &a,
        &portmap_conf(&net, m(18021), Some(&ra)),
    )
    .expect_ok("pm a");
    portmap(
        &net,
        "ADD",
        "b",
        &b,
        &portmap_conf(&net, m(18022), Some(&rb)),
    )
    .expect_ok("pm b");
    assert_eq!(net.rules_tagged("a/eth0"), 4);
    assert_eq!(net.rules_tagged("b/eth0"), 4);

    let mut gc = portmap_conf(&net, json!([]), None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
    portmap(&net, "GC", "", "", &gc).expect_ok("GC");
    assert_eq!(net.rules_tagged("a/eth0"), 4);
    assert_eq!(net.rules_tagged("b/eth0"), 0);

    // Not chained: no prevResult.
    let reply = portmap(&net, "ADD", "c", &a, &portmap_conf(&net, m(18023), None));
    assert_eq!(reply.code(), Some(7));
    // Bad protocol.
    let bad = json!([{"hostPort": 1, "containerPort": 2, "protocol": "icmp"}]);
    let reply = portmap(&net, "ADD", "c", &a, &portmap_conf(&net, bad, Some(&ra)));
    assert_eq!(reply.code(), Some(7));
    // No mappings: pass-through, no rules.
    let out = portmap(
        &net,
        "ADD",
        "c",
        &a,
        &portmap_conf(&net, json!([]), Some(&ra)),
    )
    .expect_ok("empty mappings");
    assert_eq!(out, ra);
    assert_eq!(net.rules_tagged("c/eth0"), 0);
    // STATUS needs 1.1.0 and nf_tables.
    portmap(&net, "STATUS", "", "", &portmap_conf(&net, json!([]), None)).expect_ok("STATUS");

    portmap(&net, "DEL", "a", &a, &portmap_conf(&net, m(18021), None)).expect_ok("DEL a");
    net.bridge("DEL", "a", &a, &bridge_conf).expect_ok("DEL a");
    net.bridge("DEL", "b", &b, &bridge_conf).expect_ok("DEL b");
    net.assert_no_nft_leftovers();
}

/// How many of the host's conntrack entries are UDP flows to `dst`:`port`.
fn udp_flows_to(dst: &str, port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/nf_conntrack").unwrap_or_default();
    let (dst, port) = (format!(" dst={dst} "), format!(" dport={port} "));
    table
        .lines()
        .filter(|l| l.contains(" udp ") && l.contains(&dst) && l.contains(&port))
        .count()
}

/// A UDP socket bound to `port` inside the namespace at `netns`.
fn udp_socket_in(netns: &str, port: u16) -> UdpSocket {
    let ns = std::fs::File::open(netns).expect("netns file");
    std::thread::spawn(move || {
        // Only this short-lived thread switches; the socket keeps the namespace.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        UdpSocket::bind(("0.0.0.0", port)).expect("bind in the pod")
    })
    .join()
    .expect("netns thread")
}

#[test]
fn a_udp_client_that_sent_before_the_mapping_reaches_the_pod() {
    if !have_root() {
        return;
    }
    let mut net = TestNet::new(18);
    let pod = net.netns();
    // Masquerade puts NAT hooks in the host namespace, so conntrack follows its flows.
    let bridge_conf = net.conf(json!({"ipMasq": true}));
    let result = net
        .bridge("ADD", "dns", &pod, &bridge_conf)
        .expect_ok("bridge ADD");
    let gw = format!("10.213.{}.1", net.n);
    let port = 18018;
    let target: SocketAddr = format!("{gw}:{port}").parse().unwrap();

    // A client with one source port for everything, as a resolver's socket, sends
    // before the port is mapped: conntrack records a flow without DNAT.
    let client = UdpSocket::bind(format!("{gw}:0")).expect("client socket");
    client.send_to(b"early", target).expect("early datagram");
    assert!(
        udp_flows_to(&gw, port) > 0,
        "conntrack did not record the flow"
    );

    let mappings = json!([{"hostPort": port, "containerPort": 53, "protocol": "udp"}]);
    let conf = portmap_conf(&net, mappings, Some(&result));
    portmap(&net, "ADD", "dns", &pod, &conf).expect_ok("portmap ADD");
    let server = udp_socket_in(&pod, 53);
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    // The same client sends again: its datagrams must now reach the pod.
    let mut heard = None;
    for _ in 0..30 {
        let _ = client.send_to(b"late", target);
        let mut buf = [0u8; 16];
        if let Ok((n, _)) = server.recv_from(&mut buf) {
            heard = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            break;
        }
    }
    assert_eq!(
        heard.as_deref(),
        Some("late"),
        "the pod never heard the client"
    );

    portmap(&net, "DEL", "dns", &pod, &conf).expect_ok("portmap DEL");
    net.bridge("DEL", "dns", &pod, &bridge_conf)
        .expect_ok("bridge DEL");
    net.assert_no_nft_leftovers();
}
