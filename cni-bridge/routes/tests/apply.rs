//! The agent's reconcile against a real kernel, in a network namespace of the test's own: it
//! adds the wanted routes with its own protocol, removes its stale ones, and leaves every route
//! it did not make alone.

use skiff_cni::netlink::Netlink;
use skiff_routes::apply::{reconcile, PROTOCOL};
use skiff_routes::desired::NodeRoute;
use std::collections::BTreeSet;
use std::process::Command;

/// A network namespace with a bridge on 10.1.2.1/24, deleted with the guard.
struct Ns(String);

impl Ns {
    fn new() -> Ns {
        let name = format!("skroutes-{}", std::process::id());
        let ns = Ns(name.clone());
        for cmd in [
            format!("ip netns add {name}"),
            format!("ip -n {name} link add br0 type bridge"),
            format!("ip -n {name} addr add 10.1.2.1/24 dev br0"),
            format!("ip -n {name} link set br0 up"),
            // Someone else's route, which the agent must not touch.
            format!("ip -n {name} route add 10.244.8.0/24 via 10.1.2.8 proto static"),
        ] {
            let status = Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
            assert!(status.success(), "{cmd}");
        }
        ns
    }

    fn netlink(&self) -> Netlink {
        Netlink::open_in(&std::path::Path::new("/run/netns").join(&self.0)).unwrap()
    }

    fn routes(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "route", "show"])
            .output()
            .unwrap();
        // The routes to pod networks, not the bridge's own.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("10.244."))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn route(dst: &str, via: &str, node: &str) -> NodeRoute {
    NodeRoute {
        dst: dst.parse().unwrap(),
        via: via.parse().unwrap(),
        node: node.to_string(),
    }
}

#[test]
fn routes_follow_the_nodes_and_others_are_left_alone() {
    let ns = Ns::new();
    let mut netlink = ns.netlink();

    let wanted = BTreeSet::from([
        route("10.244.1.0/24", "10.1.2.2", "b"),
        route("10.244.2.0/24", "10.1.2.3", "c"),
    ]);
    let changes = reconcile(&mut netlink, &wanted).unwrap();
    assert_eq!(changes.added.len(), 2);
    let shown = ns.routes();
    assert!(
        shown.contains(&format!(
            "10.244.1.0/24 via 10.1.2.2 dev br0 proto {PROTOCOL}"
        )),
        "{shown}"
    );
    assert!(shown.contains("10.244.2.0/24 via 10.1.2.3"), "{shown}");

    // Nothing changed: nothing to do.
    let again = reconcile(&mut netlink, &wanted).unwrap();
    assert!(again.added.is_empty() && again.removed.is_empty());

    // Node c is gone and b moved to another address.
    let wanted = BTreeSet::from([route("10.244.1.0/24", "10.1.2.20", "b")]);
    let changes = reconcile(&mut netlink, &wanted).unwrap();
    assert_eq!(changes.removed.len(), 2, "{changes:?}");
    assert_eq!(changes.added.len(), 1);
    let shown = ns.routes();
    assert!(shown.contains("10.244.1.0/24 via 10.1.2.20"), "{shown}");
    assert!(!shown.contains("10.244.2.0/24"), "{shown}");
    assert!(
        shown.contains("10.244.8.0/24 via 10.1.2.8 dev br0 proto static"),
        "another's route stays: {shown}"
    );

    // No nodes left: only the other route remains.
    reconcile(&mut netlink, &BTreeSet::new()).unwrap();
    let shown = ns.routes();
    assert_eq!(shown.lines().count(), 1, "{shown}");
}
