//! `ipMasq`: masquerade traffic from the container to anywhere outside its
//! subnet, with nftables rules tagged by attachment.

use serde_json::json;
use std::collections::HashSet;

use crate::config::Config;
use crate::nft::{self, Chain, NftError, Rule};
use crate::spec::IpConfig;

/// The network's masquerade chain (created on first use).
pub fn chain(conf: &Config) -> Chain {
    Chain {
        name: conf.masq_chain(),
        hook: "postrouting",
        prio: 100,
    }
}

/// One rule per address: from the container's address, to anything but its
/// own subnet and multicast, masquerade.
pub fn rules(conf: &Config, tag: &str, ips: &[IpConfig]) -> Vec<Rule> {
    ips.iter()
        .map(|ip| {
            let (proto, multicast) = if ip.address.is_ipv4() {
                ("ip", nft::prefix("224.0.0.0", 4))
            } else {
                ("ip6", nft::prefix("ff00::", 8))
            };
            let subnet = ip.address.truncated();
            Rule {
                chain: conf.masq_chain(),
                comment: tag.to_string(),
                expr: vec![
                    nft::payload_match(proto, "saddr", "==", json!(ip.address.addr.to_string())),
                    nft::payload_match(
                        proto,
                        "daddr",
                        "!=",
                        nft::prefix(&subnet.addr.to_string(), subnet.prefix),
                    ),
                    nft::payload_match(proto, "daddr", "!=", multicast),
                    nft::masquerade(),
                ],
            }
        })
        .collect()
}

/// Installs the rules of one attachment.
pub fn add(conf: &Config, tag: &str, ips: &[IpConfig]) -> Result<(), NftError> {
    nft::add_rules(&[chain(conf)], &rules(conf, tag, ips))
}

/// How many rules the attachment has.
pub fn count(conf: &Config, tag: &str) -> Result<usize, NftError> {
    let name = conf.masq_chain();
    Ok(nft::list_rules(&[&name])?
        .iter()
        .filter(|r| r.comment == tag)
        .count())
}

/// Removes the rules of one attachment (none is fine).
pub fn remove(conf: &Config, tag: &str) -> Result<usize, NftError> {
    let name = conf.masq_chain();
    nft::delete_rules_where(&[&name], |comment| comment == tag)
}

/// Removes every rule whose tag is not in `valid_tags`.
pub fn gc(conf: &Config, valid_tags: &HashSet<String>) -> Result<usize, NftError> {
    let name = conf.masq_chain();
    nft::delete_rules_where(&[&name], |comment| !valid_tags.contains(comment))
}
