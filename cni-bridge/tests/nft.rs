//! The nf_tables netlink backend against the kernel, read back with the real
//! `nft` binary: chains, comments and every kind of expression must read
//! as a user would have written them.

mod common;

use common::*;
use serde_json::{json, Value};
use skiff_cni::nft::expr::{host, loopback4, multicast4, multicast6, net};
use skiff_cni::nft::{self, Chain, Expr, Family, Hook, L4Proto, Op, Rule};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The chains of test network `net`: masquerade, DNAT (prerouting), SNAT.
fn chains(net: &TestNet) -> [Chain; 3] {
    [
        Chain {
            name: format!("masq-{}", net.name),
            hook: Hook::Postrouting,
            prio: 100,
        },
        Chain {
            name: format!("hostport-dnat-{}", net.name),
            hook: Hook::Prerouting,
            prio: -100,
        },
        Chain {
            name: format!("hostport-snat-{}", net.name),
            hook: Hook::Postrouting,
            prio: 100,
        },
    ]
}

/// Rules with every expression kind, each with what `nft -j` must print
/// for it (the JSON the former `nft -j -f -` backend was fed).
fn rules_and_json(test: &TestNet, tag: &str) -> Vec<(Rule, Value)> {
    let [masq, dnat, snat] = chains(test);
    let n = test.n;
    let payload =
        |protocol: &str, field: &str| json!({"payload": {"protocol": protocol, "field": field}});
    let is = |op: &str, left: Value, right: Value| json!({"match": {"op": op, "left": left, "right": right}});
    let prefix = |addr: &str, len: u8| json!({"prefix": {"addr": addr, "len": len}});
    let rule = |chain: &Chain, expr: Vec<Expr>| Rule {
        chain: chain.name.clone(),
        comment: tag.to_string(),
        expr,
    };
    let (pod4, pod6) = (format!("10.213.{n}.5"), format!("fd00:213:{n}::5"));
    let local = is(
        "==",
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        json!("local"),
    );
    vec![
        (
            rule(
                &masq,
                vec![
                    Expr::saddr(Op::Eq, host(ip(&pod4))),
                    Expr::daddr(Op::Ne, net(ip(&format!("10.213.{n}.0")), 24)),
                    Expr::daddr(Op::Ne, multicast4()),
                    Expr::Masquerade,
                ],
            ),
            json!([
                is("==", payload("ip", "saddr"), json!(pod4)),
                is("!=", payload("ip", "daddr"), prefix(&format!("10.213.{n}.0"), 24)),
                is("!=", payload("ip", "daddr"), prefix("224.0.0.0", 4)),
                {"masquerade": null},
            ]),
        ),
        (
            rule(
                &masq,
                vec![
                    Expr::saddr(Op::Eq, host(ip(&pod6))),
                    Expr::daddr(Op::Ne, net(ip(&format!("fd00:213:{n}::")), 64)),
                    Expr::daddr(Op::Ne, multicast6()),
                    Expr::Masquerade,
                ],
            ),
            json!([
                is("==", payload("ip6", "saddr"), json!(pod6)),
                is("!=", payload("ip6", "daddr"), prefix(&format!("fd00:213:{n}::"), 64)),
                is("!=", payload("ip6", "daddr"), prefix("ff00::", 8)),
                {"masquerade": null},
            ]),
        ),
        (
            rule(
                &dnat,
                vec![
                    Expr::Nfproto(Family::Ipv4),
                    Expr::DaddrIsLocal,
                    Expr::L4proto(L4Proto::Tcp),
                    Expr::Dport {
                        proto: L4Proto::Tcp,
                        op: Op::Eq,
                        port: 18080,
                    },
                    Expr::Dnat {
                        addr: ip(&pod4),
                        port: 80,
                    },
                ],
            ),
            json!([
                is("==", json!({"meta": {"key": "nfproto"}}), json!("ipv4")),
                local,
                is("==", payload("tcp", "dport"), json!(18080)),
                {"dnat": {"family": "ip", "addr": pod4, "port": 80}},
            ]),
        ),
        (
            rule(
                &dnat,
                vec![
                    Expr::Nfproto(Family::Ipv6),
                    Expr::DaddrIsLocal,
                    Expr::Dport {
                        proto: L4Proto::Sctp,
                        op: Op::Eq,
                        port: 18081,
                    },
                    Expr::Dnat {
                        addr: ip(&pod6),
                        port: 81,
                    },
                ],
            ),
            json!([
                is("==", json!({"meta": {"key": "nfproto"}}), json!("ipv6")),
                local,
                is("==", payload("sctp", "dport"), json!(18081)),
                {"dnat": {"family": "ip6", "addr": pod6, "port": 81}},
            ]),
        ),
        (
            rule(
                &dnat,
                vec![
                    Expr::daddr(Op::Eq, host(ip("127.0.0.1"))),
                    Expr::Dport {
                        proto: L4Proto::Udp,
                        op: Op::Ne,
                        port: 53,
                    },
                    Expr::L4proto(L4Proto::Tcp),
                    Expr::Dnat {
                        addr: ip(&pod4),
                        port: 53,
                    },
                ],
            ),
            json!([
                is("==", payload("ip", "daddr"), json!("127.0.0.1")),
                is("!=", payload("udp", "dport"), json!(53)),
                is("==", json!({"meta": {"key": "l4proto"}}), json!("tcp")),
                {"dnat": {"family": "ip", "addr": pod4, "port": 53}},
            ]),
        ),
        (
            rule(
                &snat,
                vec![
                    Expr::daddr(Op::Eq, host(ip(&pod4))),
                    Expr::L4proto(L4Proto::Tcp),
                    Expr::Dport {
                        proto: L4Proto::Tcp,
                        op: Op::Eq,
                        port: 80,
                    },
                    Expr::CtStatusDnat,
                    Expr::saddr(Op::Eq, loopback4()),
                    Expr::Masquerade,
                ],
            ),
            json!([
                is("==", payload("ip", "daddr"), json!(pod4)),
                is("==", payload("tcp", "dport"), json!(80)),
                is("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                is("==", payload("ip", "saddr"), prefix("127.0.0.0", 8)),
                {"masquerade": null},
            ]),
        ),
        (
            // A prefix that is not whole bytes.
            rule(
                &snat,
                vec![
                    Expr::saddr(Op::Eq, net(ip("10.213.16.0"), 20)),
                    Expr::Masquerade,
                ],
            ),
            json!([
                is("==", payload("ip", "saddr"), prefix("10.213.16.0", 20)),
                {"masquerade": null},
            ]),
        ),
    ]
}

/// `nft -j list table inet skiff-cni`'s items.
fn nft_items() -> Vec<Value> {
    let out = sh_ok("nft -j list table inet skiff-cni");
    let doc: Value = serde_json::from_str(&out).expect("nft JSON");
    doc["nftables"].as_array().cloned().unwrap_or_default()
}

#[test]
fn rules_read_back_through_nft_and_leave_nothing() {
    if !have_root() {
        return;
    }
    let net = TestNet::new(40);
    let tag = nft::tag("nfttest", "eth0");
    let expected = rules_and_json(&net, &tag);
    let rules: Vec<Rule> = expected.iter().map(|(r, _)| r.clone()).collect();
    assert!(nft::available());
    nft::add_rules(&chains(&net), &rules).expect("add rules");

    let items = nft_items();
    for chain in chains(&net) {
        let listed = items
            .iter()
            .filter_map(|i| i.get("chain"))
            .find(|c| c["name"] == chain.name)
            .unwrap_or_else(|| panic!("chain {} missing", chain.name));
        let hook = match chain.hook {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        };
        assert_eq!(listed["type"], "nat");
        assert_eq!(listed["hook"], hook);
        assert_eq!(listed["prio"], chain.prio);
        assert_eq!(listed["policy"], "accept");
    }
    let ours: Vec<&Value> = items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["comment"] == tag.as_str())
        .collect();
    assert_eq!(ours.len(), expected.len(), "{ours:#?}");
    // Rules are appended in order within each chain.
    for (rule, json) in &expected {
        let found = ours
            .iter()
            .any(|r| r["chain"] == rule.chain.as_str() && r["expr"] == *json);
        assert!(found, "{} {json} not in {ours:#?}", rule.chain);
    }
    let text = sh_ok("nft list table inet skiff-cni");
    assert!(text.contains(&format!(
        "ip saddr 10.213.40.5 ip daddr != 10.213.40.0/24 ip daddr != 224.0.0.0/4 masquerade comment \"{tag}\""
    )));
    assert_eq!(net.rules_tagged(&tag), expected.len());

    // Listed by the library with their comments.
    let names = chains(&net).map(|c| c.name);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let listed = nft::list_rules(&refs).expect("list");
    assert_eq!(listed.iter().filter(|r| r.comment == tag).count(), 7);

    // GC keeps valid tags, deletes the rest; the last rule takes its chain,
    // the last chain the table.
    let kept = nft::delete_rules_where(&refs, |c| c != tag).expect("gc");
    assert_eq!(kept, 0);
    assert_eq!(net.rules_tagged(&tag), 7);
    let deleted = nft::delete_rules_where(&refs, |c| c == tag).expect("delete");
    assert_eq!(deleted, 7);
    assert_eq!(net.rules_tagged(&tag), 0);
    net.assert_no_nft_leftovers();
    assert_eq!(nft::delete_rules_where(&refs, |_| true).expect("again"), 0);
}

#[test]
fn a_refused_batch_changes_nothing_and_says_why() {
    if !have_root() {
        return;
    }
    let net = TestNet::new(41);
    let [masq, ..] = chains(&net);
    let good = Rule {
        chain: masq.name.clone(),
        comment: "ok/eth0".into(),
        expr: vec![Expr::Masquerade],
    };
    let orphan = Rule {
        chain: format!("nosuchchain-{}", net.name),
        comment: "bad/eth0".into(),
        expr: vec![Expr::Masquerade],
    };
    let err = nft::add_rules(std::slice::from_ref(&masq), &[good, orphan]).expect_err("must fail");
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    assert!(err.to_string().contains("nosuchchain"), "{err}");
    // All or nothing: the chain declared in the same batch is not there.
    let text = String::from_utf8_lossy(&sh("nft list table inet skiff-cni").stdout).into_owned();
    assert!(!text.contains(&masq.name), "{text}");
    net.assert_no_nft_leftovers();
}

#[test]
fn thousands_of_rules_go_in_one_batch_each_way() {
    if !have_root() {
        return;
    }
    let net = TestNet::new(42);
    let [masq, ..] = chains(&net);
    // ≈ 0.5 MB of messages: more than the socket's default send buffer.
    // Plus one rule that stays, so the deletion is 3000 rule deletions
    // rather than one table deletion.
    let rules: Vec<Rule> = (0..=3000u32)
        .map(|i| Rule {
            chain: masq.name.clone(),
            comment: match i {
                3000 => "keep/eth0".to_string(),
                _ => format!("bulk{i}/eth0"),
            },
            expr: vec![
                Expr::saddr(
                    Op::Eq,
                    host(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()),
                ),
                Expr::daddr(Op::Ne, multicast4()),
                Expr::Masquerade,
            ],
        })
        .collect();
    nft::add_rules(std::slice::from_ref(&masq), &rules).expect("add");
    assert_eq!(net.rules_tagged("bulk2999/eth0"), 1);
    let gone = nft::delete_rules_where(&[&masq.name], |c| c.starts_with("bulk")).expect("delete");
    assert_eq!(gone, 3000);
    assert_eq!(net.rules_tagged("keep/eth0"), 1);
    nft::delete_rules_where(&[&masq.name], |c| c == "keep/eth0").expect("delete keeper");
    net.assert_no_nft_leftovers();
}
