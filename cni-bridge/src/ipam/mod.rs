//! Bundled IP address management, compatible with the reference `host-local`
//! plugin: the same configuration (`ranges`, `routes`, `dataDir`, …) and the
//! same on-disk layout under `<dataDir>/<network>/`:
//!
//! - one file per leased address, named by the address, holding
//!   `"<container id>\r\n<ifname>"`,
//! - `last_reserved_ip.<range set index>` remembering where to continue,
//! - `lock`, held with `flock` while allocating so concurrent ADDs in
//!   different processes never hand out the same address.

mod config;
mod range;
mod store;

pub use config::{IpamConf, IpamConfig, RangeConf, RouteConf};
pub use range::{Range, RangeSet};
pub use store::{Lease, Store};

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::spec::{Attachment, CniError, ErrorCode, IpConfig, IpNet};

/// Errors of the IPAM module.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The `ipam` section has an invalid value.
    #[error("invalid ipam configuration: {0}")]
    Config(String),
    /// `ipam.type` names an IPAM we do not bundle.
    #[error(
        "ipam.type {0:?} is not supported (bundled IPAM understands \"host-local\" and \"skiff\")"
    )]
    UnsupportedType(String),
    /// A file operation in the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Every address of a range set is leased.
    #[error("no IP addresses available in range set {0}")]
    Exhausted(String),
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let code = match &e {
            IpamError::Config(_) => ErrorCode::InvalidConfig,
            IpamError::UnsupportedType(_) => ErrorCode::UnsupportedField,
            IpamError::Io { .. } => ErrorCode::Io,
            // Addresses come back as pods are deleted, so this is transient.
            IpamError::Exhausted(_) => ErrorCode::TryAgainLater,
        };
        CniError::new(code, "IPAM failed", e.to_string())
    }
}

impl IpamConfig {
    /// Leases one address from every range set for (`id`, `ifname`).
    ///
    /// If the attachment already holds an address in a set (an earlier ADD
    /// that failed half-way and was never DELeted), that address is reused.
    /// On error nothing stays leased for this attachment.
    pub fn allocate(
        &self,
        network: &str,
        id: &str,
        ifname: &str,
    ) -> Result<Vec<IpConfig>, IpamError> {
        let store = Store::open(&self.data_dir, network)?;
        let result = self.allocate_locked(&store, id, ifname);
        if result.is_err() {
            // Best effort: the original error is what matters.
            let _ = store.release(id, ifname);
        }
        result
    }

    fn allocate_locked(
        &self,
        store: &Store,
        id: &str,
        ifname: &str,
    ) -> Result<Vec<IpConfig>, IpamError> {
        let held = store.find(id, ifname)?;
        let mut ips = Vec::new();
        for (index, set) in self.range_sets.iter().enumerate() {
            if let Some((ip, range)) = held
                .iter()
                .find_map(|ip| set.range_for(*ip).map(|r| (*ip, r)))
            {
                ips.push(ip_config(ip, range));
                continue;
            }
            let last = store.last_reserved(index);
            let mut leased = None;
            for (ip, range) in set.candidates(last) {
                if store.reserve(ip, id, ifname, index)? {
                    leased = Some(ip_config(ip, range));
                    break;
                }
            }
            ips.push(leased.ok_or_else(|| IpamError::Exhausted(set.to_string()))?);
        }
        Ok(ips)
    }

    /// Releases every address leased to (`id`, `ifname`). Succeeds when
    /// there is none.
    pub fn release(&self, network: &str, id: &str, ifname: &str) -> Result<(), IpamError> {
        let store = Store::open(&self.data_dir, network)?;
        store.release(id, ifname).map(|_| ())
    }

    /// True if (`id`, `ifname`) holds `ip`.
    pub fn holds(
        &self,
        network: &str,
        id: &str,
        ifname: &str,
        ip: IpAddr,
    ) -> Result<bool, IpamError> {
        let store = Store::open(&self.data_dir, network)?;
        Ok(store.find(id, ifname)?.contains(&ip))
    }

    /// Releases every lease whose attachment is not in `valid`. Returns the
    /// addresses released.
    pub fn gc(&self, network: &str, valid: &HashSet<Attachment>) -> Result<Vec<IpAddr>, IpamError> {
        let store = Store::open(&self.data_dir, network)?;
        let mut released = Vec::new();
        for lease in store.leases()? {
            let still_valid = valid.iter().any(|a| {
                a.container_id == lease.container_id
                    // Leases from old host-local versions have no ifname.
                    && (lease.ifname.is_empty() || a.ifname == lease.ifname)
            });
            if !still_valid {
                store.remove(lease.ip)?;
                released.push(lease.ip);
            }
        }
        Ok(released)
    }

    /// The first range set with no free address, if any (for STATUS).
    pub fn exhausted_set(&self, network: &str) -> Result<Option<String>, IpamError> {
        let store = Store::open(&self.data_dir, network)?;
        let leased: Vec<IpAddr> = store.leases()?.into_iter().map(|l| l.ip).collect();
        for set in &self.range_sets {
            let used = leased
                .iter()
                .filter(|ip| set.range_for(**ip).is_some())
                .count();
            if set.capacity() <= used as u128 {
                return Ok(Some(set.to_string()));
            }
        }
        Ok(None)
    }
}

fn ip_config(ip: IpAddr, range: &Range) -> IpConfig {
    IpConfig {
        address: IpNet {
            addr: ip,
            prefix: range.subnet.prefix,
        },
        gateway: Some(range.gateway),
        interface: None,
    }
}

impl IpamConfig {
    /// True if any address of the network is leased.
    pub fn has_leases(&self, network: &str) -> Result<bool, IpamError> {
        let store = Store::open(&self.data_dir, network)?;
        Ok(!store.leases()?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &std::path::Path, ranges: &str) -> IpamConfig {
        let json = format!(
            r#"{{"type":"host-local","dataDir":{:?},"ranges":{ranges}}}"#,
            dir.display().to_string()
        );
        serde_json::from_str::<IpamConf>(&json)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn allocates_releases_and_reuses_a_held_lease() {
        let dir = tempfile::tempdir().unwrap();
        let c = ipam(
            dir.path(),
            r#"[[{"subnet":"10.9.0.0/24"}],[{"subnet":"fd00:9::/64"}]]"#,
        );
        let a = c.allocate("net", "a", "eth0").unwrap();
        assert_eq!(a[0].address.to_string(), "10.9.0.2/24");
        assert_eq!(a[1].address.to_string(), "fd00:9::2/64");
        assert_eq!(a[0].gateway.unwrap().to_string(), "10.9.0.1");
        let b = c.allocate("net", "b", "eth0").unwrap();
        assert_eq!(b[0].address.to_string(), "10.9.0.3/24");
        // A repeated ADD for the same attachment gets the same addresses.
        assert_eq!(c.allocate("net", "a", "eth0").unwrap(), a);
        assert!(c.holds("net", "a", "eth0", a[0].address.addr).unwrap());
        c.release("net", "a", "eth0").unwrap();
        c.release("net", "a", "eth0").unwrap();
        assert!(!c.holds("net", "a", "eth0", a[0].address.addr).unwrap());
        // Round-robin: the next lease continues after the last one.
        let d = c.allocate("net", "d", "eth0").unwrap();
        assert_eq!(d[0].address.to_string(), "10.9.0.4/24");
    }

    #[test]
    fn exhaustion_is_reported_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let c = ipam(
            dir.path(),
            r#"[[{"subnet":"fd00:9::/64"}],[{"subnet":"10.9.0.0/30"}]]"#,
        );
        assert_eq!(c.exhausted_set("net").unwrap(), None);
        c.allocate("net", "a", "eth0").unwrap();
        assert!(c.exhausted_set("net").unwrap().is_some());
        let err = c.allocate("net", "b", "eth0").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted(_)));
        assert_eq!(CniError::from(err).code, ErrorCode::TryAgainLater);
        // b's IPv6 lease from the first set was rolled back.
        let store = Store::open(&c.data_dir, "net").unwrap();
        assert_eq!(store.leases().unwrap().len(), 2);
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let c = ipam(dir.path(), r#"[[{"subnet":"10.9.0.0/24"}]]"#);
        c.allocate("net", "keep", "eth0").unwrap();
        c.allocate("net", "keep", "eth1").unwrap();
        c.allocate("net", "drop", "eth0").unwrap();
        let valid: HashSet<Attachment> = [Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        }]
        .into();
        let released = c.gc("net", &valid).unwrap();
        assert_eq!(released.len(), 2);
        assert!(c.has_leases("net").unwrap());
        assert_eq!(
            c.allocate("net", "keep", "eth0").unwrap()[0]
                .address
                .to_string(),
            "10.9.0.2/24"
        );
    }

    #[test]
    fn concurrent_allocations_in_threads_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let c = ipam(dir.path(), r#"[[{"subnet":"10.9.0.0/24"}]]"#);
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || c.allocate("net", &format!("c{i}"), "eth0").unwrap())
            })
            .collect();
        let ips: HashSet<IpAddr> = handles
            .into_iter()
            .map(|h| h.join().unwrap()[0].address.addr)
            .collect();
        assert_eq!(ips.len(), 16);
    }
}
