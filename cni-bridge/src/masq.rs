//! `ipMasq`: masquerade traffic from the container to anywhere outside its
//! subnet, with nftables rules tagged by attachment.

use std::collections::HashSet;

use crate::config::Config;
use crate::nft::expr::{host, multicast4, multicast6};
use crate::nft::{self, Chain, Expr, Hook, NftError, Op, Rule};
use crate::spec::IpConfig;

/// The network's masquerade chain (created on first use).
pub fn chain(conf: &Config) -> Chain {
    Chain {
        name: conf.masq_chain(),
        hook: Hook::Postrouting,
        prio: 100,
    }
}

/// One rule per address: from the container's address, to anything but its
/// own subnet, multicast and the excluded networks of its family, masquerade.
pub fn rules(conf: &Config, tag: &str, ips: &[IpConfig]) -> Vec<Rule> {
    ips.iter()
        .map(|ip| {
            let multicast = if ip.address.is_ipv4() {
                multicast4()
            } else {
                multicast6()
            };
            let mut expr = vec![
                Expr::saddr(Op::Eq, host(ip.address.addr)),
                Expr::daddr(Op::Ne, ip.address.truncated()),
                Expr::daddr(Op::Ne, multicast),
            ];
            expr.extend(
                conf.ip_masq_exclude
                    .iter()
                    .filter(|net| net.addr.is_ipv4() == ip.address.is_ipv4())
                    .map(|net| Expr::daddr(Op::Ne, net.truncated())),
            );
            expr.push(Expr::Masquerade);
            Rule {
                chain: conf.masq_chain(),
                comment: tag.to_string(),
                expr,
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
