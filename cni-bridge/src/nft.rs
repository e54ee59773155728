//! nftables through its JSON API: we write a batch to `nft -j -f -`.
//!
//! Everything lives in one private table, `inet skiff-cni`, so we never touch
//! rules of other tools (and a flush of theirs leaves ours alone). Each rule
//! carries a comment naming its attachment ("<container id>/<ifname>"), which
//! is how DEL and GC find exactly the rules to remove.
//!
//! Deleting the last rule of a chain also deletes the chain, and deleting the
//! last chain deletes the table, so nothing is left once the last attachment
//! is gone. Every mutation holds [`LOCK_PATH`] (an exclusive flock shared by
//! all plugin processes): otherwise a DEL could delete a chain between a
//! concurrent ADD's check that it exists and its rule insertion.

use nix::fcntl::{Flock, FlockArg};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Address family of our table (one table for IPv4 and IPv6).
pub const FAMILY: &str = "inet";
/// Name of our table.
pub const TABLE: &str = "skiff-cni";
/// The lock serialising every change to our table across processes.
pub const LOCK_PATH: &str = "/run/skiff-cni/nft.lock";

/// nftables could not be run or refused the batch.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("running nft: {0}")]
    Spawn(std::io::Error),
    /// `nft` exited with an error.
    #[error("nft {args} failed: {stderr}")]
    Failed {
        /// The arguments given.
        args: String,
        /// What nft printed.
        stderr: String,
    },
    /// `nft` printed something that is not the expected JSON.
    #[error("decoding nft output: {0}")]
    Decode(String),
    /// The table lock could not be taken.
    #[error("locking {LOCK_PATH}: {0}")]
    Lock(std::io::Error),
}

/// A NAT base chain of our table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Netfilter hook: "prerouting", "output" or "postrouting".
    pub hook: &'static str,
    /// Priority: -100 (dstnat) for DNAT hooks, 100 (srcnat) for postrouting.
    pub prio: i32,
}

/// A rule to add: its chain, its attachment tag and its expressions.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Chain name.
    pub chain: String,
    /// The attachment tag (see [`tag`]).
    pub comment: String,
    /// nftables JSON expressions.
    pub expr: Vec<Value>,
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

/// The `nft` executable: runtimes often exec plugins with a minimal PATH.
fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}

/// True if an `nft` executable can be found (for STATUS).
pub fn available() -> bool {
    let bin = nft_binary();
    bin != "nft"
        || Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Runs `nft` with `args`, feeding `stdin`, returning stdout.
fn run(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new(nft_binary())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies a batch of JSON commands atomically.
fn apply(commands: Vec<Value>) -> Result<(), NftError> {
    let batch = json!({ "nftables": commands }).to_string();
    run(&["-j", "-f", "-"], Some(&batch)).map(drop)
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

/// Adds `rules`, creating the table and `chains` first if needed, in one
/// transaction.
///
/// Re-declaring an existing base chain makes the kernel re-register its hook
/// (measured ≈ 20 ms), so the common case only adds rules; the table and
/// chains are declared only when that fails because they are missing.
pub fn add_rules(chains: &[Chain], rules: &[Rule]) -> Result<(), NftError> {
    if rules.is_empty() {
        return Ok(());
    }
    let rule_commands: Vec<Value> = rules
        .iter()
        .map(|r| {
            json!({"add": {"rule": {
                "family": FAMILY, "table": TABLE, "chain": r.chain,
                "comment": r.comment, "expr": r.expr,
            }}})
        })
        .collect();
    let _lock = lock()?;
    match apply(rule_commands.clone()) {
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {}
        other => return other,
    }
    let mut commands = vec![json!({"add": {"table": {"family": FAMILY, "name": TABLE}}})];
    for c in chains {
        commands.push(json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": c.name,
            "type": "nat", "hook": c.hook, "prio": c.prio, "policy": "accept",
        }}}));
    }
    commands.extend(rule_commands);
    apply(commands)
}

/// Our table as listed by `nft`.
struct Listing {
    chains: Vec<String>,
    rules: Vec<RuleRef>,
}

/// Lists our table; `None` if it does not exist.
fn list_table() -> Result<Option<Listing>, NftError> {
    let out = match run(&["-j", "list", "table", FAMILY, TABLE], None) {
        Ok(out) => out,
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let doc: Value = serde_json::from_str(&out).map_err(|e| NftError::Decode(e.to_string()))?;
    let items = doc["nftables"]
        .as_array()
        .ok_or_else(|| NftError::Decode("no nftables array".into()))?;
    let mut listing = Listing {
        chains: Vec::new(),
        rules: Vec::new(),
    };
    for item in items {
        if let Some(name) = item.get("chain").and_then(|c| c["name"].as_str()) {
            listing.chains.push(name.to_string());
            continue;
        }
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(handle) = rule["handle"].as_u64() else {
            continue;
        };
        listing.rules.push(RuleRef {
            chain: rule["chain"].as_str().unwrap_or_default().to_string(),
            handle,
            comment: rule["comment"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(Some(listing))
}

/// Every rule of our table in the named chains.
pub fn list_rules(chains: &[&str]) -> Result<Vec<RuleRef>, NftError> {
    Ok(list_table()?
        .map(|t| t.rules)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| chains.contains(&r.chain.as_str()))
        .collect())
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
    let Some(table) = list_table()? else {
        return Ok(0);
    };
    let (victims, kept): (Vec<&RuleRef>, Vec<&RuleRef>) = table
        .rules
        .iter()
        .partition(|r| doomed_rule(r) || doomed_chains.contains(&r.chain.as_str()));
    let busy: HashSet<&str> = kept.iter().map(|r| r.chain.as_str()).collect();
    let empty: Vec<&String> = table
        .chains
        .iter()
        .filter(|c| !busy.contains(c.as_str()))
        .collect();
    let commands: Vec<Value> = if busy.is_empty() {
        // Deleting the table deletes its chains and rules with it.
        vec![json!({"delete": {"table": {"family": FAMILY, "name": TABLE}}})]
    } else {
        let rules = victims.iter().map(|r| {
            json!({"delete": {"rule": {
                "family": FAMILY, "table": TABLE, "chain": r.chain, "handle": r.handle,
            }}})
        });
        let chains = empty.iter().map(
            |name| json!({"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}}),
        );
        rules.chain(chains).collect()
    };
    if !commands.is_empty() {
        apply(commands)?;
    }
    Ok(victims.len())
}

// ---- expression builders ----

/// `<proto> <field> <op> <right>`, e.g. `ip saddr == 10.0.0.5`.
pub fn payload_match(protocol: &str, field: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": protocol, "field": field}}, "right": right}})
}

/// A prefix value, e.g. 10.0.0.0/24.
pub fn prefix(addr: &str, len: u8) -> Value {
    json!({"prefix": {"addr": addr, "len": len}})
}

/// `masquerade`.
pub fn masquerade() -> Value {
    json!({"masquerade": null})
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
}
