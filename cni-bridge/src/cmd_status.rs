//! STATUS: could an ADD succeed right now?
//!
//! - 50 (not available): a range set is exhausted, the lease directory is
//!   unusable, or masquerading is configured but `nft` is missing;
//! - 51 (not available, existing containers affected): the bridge is gone
//!   while addresses are leased.

use crate::config::Config;
use crate::netlink::Netlink;
use crate::nft;
use crate::spec::{CniError, ErrorCode};

fn unavailable(msg: &str, details: String) -> CniError {
    CniError::new(ErrorCode::NotAvailable, msg, details)
}

/// Runs STATUS.
pub fn run(conf: &Config) -> Result<(), CniError> {
    if let Some(ipam) = &conf.ipam {
        match ipam.exhausted_set(&conf.name) {
            Ok(None) => {}
            Ok(Some(set)) => {
                return Err(unavailable(
                    "no IP addresses available",
                    format!("range set {set} of network {} is exhausted", conf.name),
                ))
            }
            Err(e) => return Err(unavailable("lease store unusable", e.to_string())),
        }
        let has_leases = ipam.has_leases(&conf.name).unwrap_or(false);
        if has_leases && Netlink::open()?.link_by_name(&conf.bridge)?.is_none() {
            return Err(CniError::new(
                ErrorCode::NotAvailableLimitedConnectivity,
                "bridge missing",
                format!(
                    "bridge {} is gone while containers hold addresses on it",
                    conf.bridge
                ),
            ));
        }
    }
    if conf.ip_masq && !nft::available() {
        return Err(unavailable(
            "nftables unavailable",
            "ipMasq is set but the kernel's nf_tables does not answer over netlink".into(),
        ));
    }
    Ok(())
}
