//! Which routes a node needs: one per other node, to that node's pod networks through that
//! node's address (what flannel's host-gw mode does). Pure: from the Node objects to a list.

use k8s_openapi::api::core::v1::Node;
use skiff_cni::spec::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A route to another node's pods.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRoute {
    /// The other node's pod network.
    pub dst: IpNet,
    /// The other node's address.
    pub via: IpAddr,
    /// The other node's name, for the log.
    pub node: String,
}

/// The routes node `me` needs to reach every other node's pods. A node without a pod network
/// yet, or without an internal address of the network's family, gets no route (yet).
pub fn routes(nodes: &[Node], me: &str) -> BTreeSet<NodeRoute> {
    let mut out = BTreeSet::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name == me {
            continue;
        }
        let addresses: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        for cidr in pod_cidrs(node) {
            let Some(via) = addresses
                .iter()
                .find(|a| a.is_ipv4() == cidr.addr.is_ipv4())
            else {
                continue;
            };
            out.insert(NodeRoute {
                dst: cidr.truncated(),
                via: *via,
                node: name.clone(),
            });
        }
    }
    out
}

/// `spec.podCIDRs`, or the older single `spec.podCIDR`; unparsable entries are left out.
fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let listed = spec.pod_cidrs.clone().unwrap_or_default();
    let all = if listed.is_empty() {
        spec.pod_cidr.clone().into_iter().collect()
    } else {
        listed
    };
    all.iter().filter_map(|c| c.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDRs": cidrs},
            "status": {"addresses": ips.iter().map(|ip| serde_json::json!(
                {"type": "InternalIP", "address": ip})).chain(std::iter::once(serde_json::json!(
                {"type": "Hostname", "address": name}))).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    #[test]
    fn every_other_node_gets_a_route_per_family() {
        let nodes = [
            node("a", &["10.244.0.0/24"], &["10.250.0.1"]),
            node(
                "b",
                &["10.244.1.0/24", "fd00:244:1::/64"],
                &["10.250.0.2", "fd00::2"],
            ),
            // No address of the network's family: no route for it.
            node("c", &["10.244.2.0/24", "fd00:244:2::/64"], &["10.250.0.3"]),
        ];
        let got: Vec<(String, String)> = routes(&nodes, "a")
            .into_iter()
            .map(|r| (r.dst.to_string(), r.via.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.244.1.0/24".to_string(), "10.250.0.2".to_string()),
                ("10.244.2.0/24".to_string(), "10.250.0.3".to_string()),
                ("fd00:244:1::/64".to_string(), "fd00::2".to_string()),
            ]
        );
    }

    #[test]
    fn nodes_without_a_pod_network_or_address_get_none() {
        let mut no_spec = node("d", &[], &["10.250.0.4"]);
        no_spec.spec = None;
        let old_style: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e"},
            "spec": {"podCIDR": "10.244.5.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.250.0.5"}]},
        }))
        .unwrap();
        let nodes = [
            no_spec,
            node("f", &["10.244.6.0/24"], &[]),
            node("g", &["not a cidr"], &["10.250.0.7"]),
            old_style,
        ];
        let got: Vec<String> = routes(&nodes, "a")
            .into_iter()
            .map(|r| format!("{} via {} ({})", r.dst, r.via, r.node))
            .collect();
        assert_eq!(got, ["10.244.5.0/24 via 10.250.0.5 (e)"]);
    }
}
