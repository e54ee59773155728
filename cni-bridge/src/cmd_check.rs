//! CHECK: verify an attachment still matches `prevResult`: the bridge, the
//! host veth on it, the container interface with its MAC, addresses and
//! routes, the address leases and the masquerade rules.

use std::net::IpAddr;

use crate::config::Config;
use crate::masq;
use crate::netlink::Netlink;
use crate::nft;
use crate::spec::{CniError, CniResult, Environment, ErrorCode};

fn failed(details: String) -> CniError {
    CniError::new(ErrorCode::CheckFailed, "CHECK failed", details)
}

/// Runs CHECK.
pub fn run(env: &Environment, conf: &Config) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "invalid network configuration",
            "CHECK needs prevResult",
        )
    })?;
    let (id, ifname) = (env.container_id(), env.ifname());
    let netns = env.netns.as_deref().unwrap_or(std::path::Path::new(""));

    // The container interface of prevResult.
    let cont_index = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| failed(format!("prevResult has no container interface {ifname}")))?;
    let expected = &prev.interfaces[cont_index];

    // Host side: the bridge, and our veth as one of its ports.
    let mut host = Netlink::open()?;
    let bridge = host
        .link_by_name(&conf.bridge)?
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .ok_or_else(|| failed(format!("bridge {} is missing", conf.bridge)))?;
    for intf in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && i.name != conf.bridge)
    {
        let link = host
            .link_by_name(&intf.name)?
            .ok_or_else(|| failed(format!("host interface {} is missing", intf.name)))?;
        if link.master != Some(bridge.index) {
            return Err(failed(format!(
                "{} is not a port of {}",
                intf.name, conf.bridge
            )));
        }
    }

    // Container side.
    let mut container = Netlink::open_in(netns).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is not usable",
            e.to_string(),
        )
    })?;
    let link = container
        .link_by_name(ifname)?
        .ok_or_else(|| failed(format!("{ifname} is missing in {}", netns.display())))?;
    if !expected.mac.is_empty() && !link.mac.eq_ignore_ascii_case(&expected.mac) {
        return Err(failed(format!(
            "{ifname} has MAC {}, prevResult says {}",
            link.mac, expected.mac
        )));
    }
    let addresses = container.addresses(link.index)?;
    let our_ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == cont_index))
        .collect();
    for ip in &our_ips {
        if !addresses.contains(&ip.address) {
            return Err(failed(format!("{ifname} lacks address {}", ip.address)));
        }
    }
    check_routes(&mut container, prev, link.index)?;

    // Leases and masquerade rules.
    if let Some(ipam) = &conf.ipam {
        for ip in &our_ips {
            if !ipam.holds(&conf.name, id, ifname, ip.address.addr)? {
                return Err(failed(format!(
                    "address {} is not leased to {id}/{ifname}",
                    ip.address.addr
                )));
            }
        }
    }
    if conf.ip_masq && !our_ips.is_empty() {
        let found = masq::count(conf, &nft::tag(id, ifname))?;
        if found < our_ips.len() {
            return Err(failed(format!(
                "{found} of {} masquerade rules present",
                our_ips.len()
            )));
        }
    }
    Ok(())
}

/// Every route of prevResult must exist through the container interface.
fn check_routes(container: &mut Netlink, prev: &CniResult, index: u32) -> Result<(), CniError> {
    if prev.routes.is_empty() {
        return Ok(());
    }
    let mut kernel = container.routes(true)?;
    kernel.extend(container.routes(false)?);
    for want in &prev.routes {
        let dst = want.dst.truncated();
        // A route without "gw" goes via the gateway of its family, if any.
        let gw: Option<IpAddr> = want.gw.or_else(|| {
            prev.ips
                .iter()
                .filter(|ip| ip.address.is_ipv4() == dst.is_ipv4())
                .find_map(|ip| ip.gateway)
        });
        let present = kernel.iter().any(|r| {
            r.dst == dst
                && r.oif == Some(index)
                && (gw.is_none() || r.gw == gw)
                && want.table.is_none_or(|t| r.table == t)
        });
        if !present {
            let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(failed(format!("route {dst}{via} is missing")));
        }
    }
    Ok(())
}
