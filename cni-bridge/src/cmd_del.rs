//! DEL: detach a container. Best effort and idempotent: a missing netns,
//! missing interface or already released address is not an error, and the
//! addresses are released whatever happened to the interface.

use crate::config::Config;
use crate::masq;
use crate::netlink::{Netlink, NetlinkError};
use crate::nft;
use crate::spec::{CniError, Environment, ErrorCode};

/// Runs DEL.
pub fn run(env: &Environment, conf: &Config) -> Result<(), CniError> {
    let (id, ifname) = (env.container_id(), env.ifname());
    let mut errors: Vec<CniError> = Vec::new();

    // 1. The container end (its host peer goes with it).
    if let Some(path) = &env.netns {
        match delete_container_link(path, ifname) {
            Ok(()) => {}
            // The namespace is gone, and the veth pair with it.
            Err(e) if e.is_netns_gone() => {}
            Err(e) => errors.push(e.into()),
        }
    }

    // 2. Always release the addresses.
    if let Some(ipam) = &conf.ipam {
        if let Err(e) = ipam.release(&conf.name, id, ifname) {
            errors.push(e.into());
        }
    }

    // 3. Masquerade rules.
    if conf.ip_masq {
        if let Err(e) = masq::remove(conf, &nft::tag(id, ifname)) {
            errors.push(e.into());
        }
    }

    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(CniError::new(
            ErrorCode::System,
            "DEL partially failed",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

fn delete_container_link(netns: &std::path::Path, ifname: &str) -> Result<(), NetlinkError> {
    let mut container = Netlink::open_in(netns)?;
    match container.link_by_name(ifname)? {
        Some(link) => match container.delete_link(link.index) {
            // Deleted by someone else in between.
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            other => other,
        },
        None => Ok(()),
    }
}
