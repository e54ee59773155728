//! nftables, spoken to the kernel over nf_tables netlink from the plugin
//! process: no `nft` executable, no JSON, a fraction of a millisecond per
//! change.
//!
//! Everything lives in one private table, `inet skiff-cni`, so we never touch
//! rules of other tools (and a flush of theirs leaves ours alone). Each rule
//! carries a comment naming its attachment (`<container id>/<ifname>`),
//! stored as rule userdata the way `nft` stores comments (so `nft list`
//! shows it); that is how DEL and GC find exactly the rules to remove.
//!
//! Deleting the last rule of a chain also deletes the chain, and deleting the
//! last chain deletes the table, so nothing is left once the last attachment
//! is gone. Every mutation holds [`LOCK_PATH`] (an exclusive flock shared by
//! all plugin processes): otherwise a DEL could delete a chain between a
//! concurrent ADD's check that it exists and its rule insertion.
//!
//! `netlink` sends and reads the messages, [`expr`] encodes the rules'
//! expressions. [`conntrack`] forgets UDP flows that predate a host port's rules.

pub mod conntrack;
pub mod expr;
mod netlink;

use nix::fcntl::{Flock, FlockArg};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

pub use conntrack::{forget_udp_flows, UdpPort};
pub use expr::{AddrField, Expr, Family, L4Proto, Op};
use netlink::Socket;

/// Address family of our table (one table for IPv4 and IPv6).
pub const FAMILY: &str = "inet";
/// Name of our table.
pub const TABLE: &str = "skiff-cni";
/// The lock serialising every change to our table across processes.
pub const LOCK_PATH: &str = "/run/skiff-cni/nft.lock";

/// nf_tables could not be reached, refused a change, or answered
/// something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The netlink socket could not be opened or used.
    #[error("nf_tables netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel refused a request.
    #[error("nf_tables: {op}: {source}")]
    Kernel {
        /// The request, e.g. "create chain masq-cni0".
        op: String,
        /// The errno the kernel answered.
        source: io::Error,
    },
    /// A reply could not be decoded.
    #[error("decoding an nf_tables reply: {0}")]
    Decode(String),
    /// The table lock could not be taken.
    #[error("locking {LOCK_PATH}: {0}")]
    Lock(io::Error),
}

impl NftError {
    /// The errno from the kernel or the socket, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Socket(e) | NftError::Kernel { source: e, .. } | NftError::Lock(e) => {
                e.raw_os_error()
            }
            NftError::Decode(_) => None,
        }
    }
}

/// A netfilter hook our NAT chains attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Before routing, for packets from outside (DNAT).
    Prerouting,
    /// Locally generated packets (DNAT of the host's own connections).
    Output,
    /// After routing (SNAT, masquerade).
    Postrouting,
}

impl Hook {
    /// `linux/netfilter.h`'s `enum nf_inet_hooks`.
    fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }
}

/// A NAT base chain of our table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Netfilter hook.
    pub hook: Hook,
    /// Priority: -100 (dstnat) for DNAT hooks, 100 (srcnat) for postrouting.
    pub prio: i32,
}

/// A rule to add: its chain, its attachment tag and its expressions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Chain name.
    pub chain: String,
    /// The attachment tag (see [`tag`]).
    pub comment: String,
    /// What the rule matches and does, in order.
    pub expr: Vec<Expr>,
}

/// A rule found in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// Chain name.
    pub chain: String,
    /// Kernel handle, for deletion.
    pub handle: u64,
    /// Its comment ("" if none).
    pub comment: String,
}

/// The tag identifying an attachment's rules. nftables comments hold at most
/// 127 bytes, so very long container ids are cut (deterministically, so DEL
/// and GC compute the same tag).
pub fn tag(container_id: &str, ifname: &str) -> String {
    let max_id = 126usize.saturating_sub(ifname.len());
    let mut id = container_id;
    if id.len() > max_id {
        let mut cut = max_id;
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id = &id[..cut];
    }
    format!("{id}/{ifname}")
}

/// True if nf_tables answers over netlink (for STATUS).
pub fn available() -> bool {
    Socket::open().and_then(|mut s| s.generation()).is_ok()
}

/// Takes the table lock; it is released when the returned guard is dropped.
fn lock() -> Result<Flock<File>, NftError> {
    let path = Path::new(LOCK_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(NftError::Lock)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(NftError::Lock)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| NftError::Lock(errno.into()))
}

/// Adds `rules`, creating the table and those of `chains` that are
/// missing, in one transaction.
///
/// The chains are listed first rather than re-declared: re-declaring an
/// existing base chain is an update the kernel has to process, and the
/// listing is one cheap round trip under the lock.
pub fn add_rules(chains: &[Chain], rules: &[Rule]) -> Result<(), NftError> {
    if rules.is_empty() {
        return Ok(());
    }
    let _lock = lock()?;
    let mut nl = Socket::open()?;
    let existing = nl.chains()?;
    let missing: Vec<&Chain> = chains
        .iter()
        .filter(|c| !existing.contains(&c.name))
        .collect();
    let mut batch = Vec::new();
    if !missing.is_empty() {
        // Creating a table that exists changes nothing.
        batch.push(netlink::new_table());
        batch.extend(missing.into_iter().map(netlink::new_chain));
    }
    batch.extend(rules.iter().map(netlink::new_rule));
    nl.batch(&batch)
}

/// Our table's chains and rules.
struct Listing {
    chains: Vec<String>,
    rules: Vec<RuleRef>,
}

/// Lists our table; `None` if it does not exist.
fn list_table(nl: &mut Socket) -> Result<Option<Listing>, NftError> {
    if !nl.has_table()? {
        return Ok(None);
    }
    Ok(Some(Listing {
        chains: nl.chains()?,
        rules: nl.rules()?,
    }))
}

/// Every rule of our table in the named chains.
pub fn list_rules(chains: &[&str]) -> Result<Vec<RuleRef>, NftError> {
    let mut rules = Socket::open()?.rules()?;
    rules.retain(|r| chains.contains(&r.chain.as_str()));
    Ok(rules)
}

/// Deletes the rules of `chains` whose comment satisfies `doomed`; returns
/// how many were deleted. Chains left empty, and then the table, go too.
pub fn delete_rules_where(
    chains: &[&str],
    doomed: impl Fn(&str) -> bool,
) -> Result<usize, NftError> {
    delete_where(
        |r| chains.contains(&r.chain.as_str()) && doomed(&r.comment),
        &[],
    )
}

/// Deletes whole chains with their rules (for tests and tools; the plugins
/// delete rules and let empty chains go). Missing chains are ignored.
pub fn delete_chains(chains: &[&str]) -> Result<(), NftError> {
    delete_where(|_| false, chains).map(drop)
}

/// Under the lock: deletes the rules matching `doomed_rule` and the chains
/// `doomed_chains`, then every chain without rules, then the table if no
/// chain is left, in one transaction. Returns how many rules matched.
///
/// Pruning every empty chain (not only the touched ones) is safe because an
/// ADD creates a chain and its rules in the same transaction, under the
/// lock: an empty chain is always a leftover.
fn delete_where(
    doomed_rule: impl Fn(&RuleRef) -> bool,
    doomed_chains: &[&str],
) -> Result<usize, NftError> {
    let _lock = lock()?;
    let mut nl = Socket::open()?;
    let Some(table) = list_table(&mut nl)? else {
        return Ok(0);
    };
    let (victims, kept): (Vec<&RuleRef>, Vec<&RuleRef>) = table
        .rules
        .iter()
        .partition(|r| doomed_rule(r) || doomed_chains.contains(&r.chain.as_str()));
    let busy: HashSet<&str> = kept.iter().map(|r| r.chain.as_str()).collect();
    let batch = if busy.is_empty() {
        // Deleting the table deletes its chains and rules with it.
        vec![netlink::del_table()]
    } else {
        let empty = table
            .chains
            .iter()
            .filter(|c| !busy.contains(c.as_str()))
            .map(|c| netlink::del_chain(c));
        victims
            .iter()
            .map(|r| netlink::del_rule(r))
            .chain(empty)
            .collect()
    };
    nl.batch(&batch)?;
    Ok(victims.len())
}

impl From<NftError> for crate::spec::CniError {
    fn from(e: NftError) -> Self {
        crate::spec::CniError::new(
            crate::spec::ErrorCode::System,
            "nftables operation failed",
            e.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_fit_in_a_comment() {
        assert_eq!(tag("abc", "eth0"), "abc/eth0");
        let long = "x".repeat(300);
        let t = tag(&long, "eth0");
        assert_eq!(t.len(), 127);
        assert!(t.ends_with("/eth0"));
        assert_eq!(t, tag(&long, "eth0"));
    }

    #[test]
    fn kernel_errors_name_the_request_and_errno() {
        let e = NftError::Kernel {
            op: "create chain masq-n".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e
            .to_string()
            .starts_with("nf_tables: create chain masq-n: "));
    }
}
