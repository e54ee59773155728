//! Makes the kernel's routes match the desired ones. The agent's routes carry a protocol
//! number of their own ([`PROTOCOL`]), so it adds and removes only those: routes of CNI
//! plugins, of the administrator or of other agents are never touched.

use crate::desired::NodeRoute;
use skiff_cni::netlink::{Netlink, NetlinkError, RouteEntry, MAIN_TABLE};
use skiff_cni::spec::IpNet;
use std::collections::BTreeSet;

/// The `RTPROT_*` number of skiff-routes' routes (`ip route` shows `proto 83`): unassigned in
/// iproute2's table of protocols, and 'S' in ASCII.
pub const PROTOCOL: u8 = 83;

/// A route of ours as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Installed {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop.
    pub via: Option<std::net::IpAddr>,
}

/// What a pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes added.
    pub added: Vec<NodeRoute>,
    /// Routes removed (stale: their node is gone or moved).
    pub removed: Vec<Installed>,
}

/// Why routes could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("routes: {0}")]
pub struct ApplyError(#[from] NetlinkError);

/// The routes of ours in the main table, both families.
pub fn installed(netlink: &mut Netlink) -> Result<BTreeSet<Installed>, ApplyError> {
    let mut out = BTreeSet::new();
    for ipv4 in [true, false] {
        for route in netlink.routes(ipv4)? {
            if route.protocol == PROTOCOL && route.table == MAIN_TABLE {
                out.insert(Installed {
                    dst: route.dst,
                    via: route.gw,
                });
            }
        }
    }
    Ok(out)
}

/// One pass: removes our routes that are not wanted and adds the wanted ones that are missing.
/// Blocking (netlink). Each route is handled on its own, so one that fails (a next hop not yet
/// reachable) does not hold up the others; the first error is returned after the pass.
pub fn reconcile(
    netlink: &mut Netlink,
    wanted: &BTreeSet<NodeRoute>,
) -> Result<Changes, ApplyError> {
    let have = installed(netlink)?;
    let mut changes = Changes::default();
    let mut first_error = None;
    for route in &have {
        let still_wanted = wanted
            .iter()
            .any(|w| w.dst == route.dst && Some(w.via) == route.via);
        if still_wanted {
            continue;
        }
        match netlink.delete_route(&entry(route.dst, route.via)) {
            Ok(()) => changes.removed.push(route.clone()),
            Err(e) if e.errno() == Some(libc::ESRCH) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for route in wanted {
        let present = have
            .iter()
            .any(|h| h.dst == route.dst && h.via == Some(route.via));
        if present {
            continue;
        }
        match netlink.add_route(&entry(route.dst, Some(route.via))) {
            Ok(()) => changes.added.push(route.clone()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(changes),
    }
}

fn entry(dst: IpNet, via: Option<std::net::IpAddr>) -> RouteEntry {
    RouteEntry {
        dst,
        gw: via,
        oif: None,
        table: MAIN_TABLE,
        scope: 0,
        priority: None,
        mtu: None,
        advmss: None,
        protocol: PROTOCOL,
    }
}
