//! ADD: attach a container to the bridge.
//!
//! 1. Open the container's netns; `CNI_IFNAME` must be free there.
//! 2. Ensure the bridge exists and is up.
//! 3. Lease addresses (bundled IPAM).
//! 4. Create the veth pair, the container end directly inside the netns.
//! 5. Attach the host end to the bridge (hairpin), bring it up.
//! 6. Configure the container end: no DAD, addresses, up, routes.
//! 7. Gateway address on the bridge and IP forwarding (`isGateway`).
//! 8. Masquerade rules (`ipMasq`).
//! 9. Gratuitous ARP for the IPv4 addresses, then print the result.
//!
//! If a step after 3 fails, the earlier steps are undone (veth deleted,
//! addresses released, rules removed) before the error is returned.

use serde_json::Value;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use crate::config::Config;
use crate::masq;
use crate::netlink::{netns, parse_mac, Link, Netlink, RouteEntry, MAIN_TABLE, PROTOCOL_BOOT};
use crate::nft;
use crate::spec::{CniError, CniResult, Environment, ErrorCode, Interface, IpConfig, IpNet, Route};
use crate::sysctl;

/// Index of the container interface in the result's `interfaces`.
const CONTAINER_IF: usize = 2;

/// Runs ADD and returns the result JSON.
pub fn run(env: &Environment, conf: &Config) -> Result<Value, CniError> {
    let netns_path = env.netns.as_deref().unwrap_or(Path::new(""));
    let (id, ifname) = (env.container_id(), env.ifname());

    // 1. The container side first: a bad CNI_NETNS fails before we change anything.
    let mut container = Netlink::open_in(netns_path).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is not a usable network namespace",
            e.to_string(),
        )
    })?;
    if container.link_by_name(ifname)?.is_some() {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_IFNAME already exists in the container",
            format!(
                "interface {ifname} already exists in {}",
                netns_path.display()
            ),
        ));
    }

    // 2. The bridge.
    let mut host = Netlink::open()?;
    let bridge = ensure_bridge(&mut host, conf)?;

    // 3. Addresses.
    let ips = match &conf.ipam {
        Some(ipam) => ipam.allocate(&conf.name, id, ifname)?,
        None => Vec::new(),
    };

    let attached = attach(
        env,
        conf,
        &mut host,
        &mut container,
        &bridge,
        ips,
        netns_path,
    );
    if attached.is_err() {
        undo(env, conf, &mut container);
    }
    Ok(attached?.to_json(conf.version))
}

/// Steps 4–9; on error the caller undoes what was done.
fn attach(
    env: &Environment,
    conf: &Config,
    host: &mut Netlink,
    container: &mut Netlink,
    bridge: &Link,
    mut ips: Vec<IpConfig>,
    netns_path: &Path,
) -> Result<CniResult, CniError> {
    let ifname = env.ifname();

    // 4. The veth pair.
    let ns_file = netns::open(netns_path)?;
    let host_veth = create_veth(host, ifname, conf.mtu, &ns_file)?;

    // 5. Host end: port of the bridge, hairpin, up.
    host.set_master(host_veth.index, bridge.index)?;
    if conf.hairpin_mode {
        host.set_hairpin(host_veth.index, true)?;
    }
    host.set_up(host_veth.index)?;

    // 6. Container end.
    for ip in &mut ips {
        ip.interface = Some(CONTAINER_IF);
    }
    let mut routes = conf
        .ipam
        .as_ref()
        .map(|i| i.routes.clone())
        .unwrap_or_default();
    if conf.is_default_gateway {
        add_default_routes(&ips, &mut routes);
    }
    container_sysctls(
        netns_path,
        ifname,
        ips.iter().any(|ip| !ip.address.is_ipv4()),
    )?;
    let cont_link = container
        .link_by_name(ifname)?
        .ok_or_else(|| missing_link(ifname))?;
    // Up before addresses: an IPv6 prefix route appears right away then.
    container.set_up(cont_link.index)?;
    for ip in &ips {
        // NODAD: the address is usable now instead of after DAD (~1-2 s).
        container.add_address(cont_link.index, ip.address, true)?;
    }
    for route in &routes {
        let gw = route.gw.or_else(|| gateway_for(&ips, route.dst.addr));
        let entry = RouteEntry {
            dst: route.dst.truncated(),
            gw,
            oif: Some(cont_link.index),
            table: route.table.unwrap_or(MAIN_TABLE),
            // Without a next hop the destination is on the link.
            scope: route.scope.unwrap_or(if gw.is_some() { 0 } else { 253 }),
            priority: route.priority,
            mtu: route.mtu,
            advmss: route.advmss,
            protocol: PROTOCOL_BOOT,
        };
        match container.add_route(&entry) {
            // A route listed twice is already there: fine.
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            other => other?,
        }
    }

    // 7. Gateway on the bridge.
    if conf.is_gateway {
        for ip in &ips {
            let Some(gw) = ip.gateway else { continue };
            let gw_net = IpNet {
                addr: gw,
                prefix: ip.address.prefix,
            };
            ensure_bridge_address(host, bridge, gw_net, conf.force_address)?;
            if gw.is_ipv4() {
                sysctl::ensure(&["net", "ipv4", "ip_forward"], "1")?;
            } else {
                sysctl::ensure(&["net", "ipv6", "conf", "all", "forwarding"], "1")?;
            }
        }
    }

    // 8. Masquerade.
    if conf.ip_masq && !ips.is_empty() {
        masq::add(conf, &nft::tag(env.container_id(), ifname), &ips)?;
    }

    // 9. Announce the IPv4 addresses with gratuitous ARPs, so that neighbors that knew
    // an address by another pod's MAC take this one. The kernel sends them (arp_notify)
    // when a link's MAC is set, even to the same value. Only once the bridge forwards
    // through the veth's port; best effort, as any ARP.
    let host_veth = wait_for_carrier(host, &host_veth)?;
    if let Some(mac) = parse_mac(&cont_link.mac) {
        if ips.iter().any(|ip| ip.address.is_ipv4()) {
            let _ = container.set_mac(cont_link.index, mac);
        }
    }

    // Result. Re-read the bridge: one made elsewhere may take a new port's MAC.
    let bridge = host
        .link_by_index(bridge.index)?
        .ok_or_else(|| missing_link(&conf.bridge))?;
    let dns = if conf.dns.is_empty() {
        conf.ipam
            .as_ref()
            .map(|i| i.dns.clone())
            .unwrap_or_default()
    } else {
        conf.dns.clone()
    };
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: bridge.name,
                mac: bridge.mac,
                ..Default::default()
            },
            Interface {
                name: host_veth.name,
                mac: host_veth.mac,
                ..Default::default()
            },
            Interface {
                name: ifname.to_string(),
                mac: cont_link.mac,
                mtu: Some(cont_link.mtu),
                sandbox: netns_path.display().to_string(),
                ..Default::default()
            },
        ],
        ips,
        routes,
        dns,
    })
}

/// Best-effort rollback of a failed ADD.
fn undo(env: &Environment, conf: &Config, container: &mut Netlink) {
    // Deleting the container end deletes the host end too.
    if let Ok(Some(link)) = container.link_by_name(env.ifname()) {
        let _ = container.delete_link(link.index);
    }
    if let Some(ipam) = &conf.ipam {
        let _ = ipam.release(&conf.name, env.container_id(), env.ifname());
    }
    if conf.ip_masq {
        let _ = masq::remove(conf, &nft::tag(env.container_id(), env.ifname()));
    }
}

fn missing_link(name: &str) -> CniError {
    CniError::new(
        ErrorCode::System,
        "interface vanished",
        format!("{name} disappeared while being configured"),
    )
}

/// Finds or creates the bridge and brings it up.
fn ensure_bridge(host: &mut Netlink, conf: &Config) -> Result<Link, CniError> {
    let link = match host.link_by_name(&conf.bridge)? {
        Some(link) => link,
        None => {
            match host.create_bridge(&conf.bridge, random_mac()?, conf.mtu) {
                // Another ADD created it at the same moment: use theirs.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                other => other?,
            }
            host.link_by_name(&conf.bridge)?
                .ok_or_else(|| missing_link(&conf.bridge))?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "invalid network configuration",
            format!("{} exists but is not a bridge", conf.bridge),
        ));
    }
    if conf.promisc_mode && !link.promisc {
        host.set_promisc(link.index, true)?;
    }
    if !link.up {
        host.set_up(link.index)?;
    }
    Ok(link)
}

/// Creates the veth pair with a random host-side name; returns the host end.
fn create_veth(
    host: &mut Netlink,
    ifname: &str,
    mtu: Option<u32>,
    ns_file: &std::fs::File,
) -> Result<Link, CniError> {
    let mut last_error = None;
    // A random name can collide with an existing one: try a few.
    for _ in 0..4 {
        let name = random_veth_name()?;
        match host.create_veth(&name, ifname, mtu, ns_file) {
            Ok(()) => {
                return host.link_by_name(&name)?.ok_or_else(|| missing_link(&name));
            }
            Err(e) if e.errno() == Some(libc::EEXIST) => last_error = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_error
        .map(CniError::from)
        .unwrap_or_else(|| missing_link("veth")))
}

/// "veth" and 8 random hex digits, like the reference plugin.
fn random_veth_name() -> Result<String, CniError> {
    Ok(format!("veth{:08x}", u32::from_ne_bytes(random_bytes()?)))
}

/// A random locally administered unicast MAC.
fn random_mac() -> Result<[u8; 6], CniError> {
    let mut mac: [u8; 6] = random_bytes()?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CniError> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CniError::new(ErrorCode::Io, "reading /dev/urandom", e.to_string()))?;
    Ok(bytes)
}

/// Sysctls on the container interface, set from inside the netns.
fn container_sysctls(netns_path: &Path, ifname: &str, has_ipv6: bool) -> Result<(), CniError> {
    let ifname = ifname.to_string();
    netns::run_in(netns_path, move || {
        if has_ipv6 {
            // The container's IPv6 may be disabled; we need it on.
            for dev in ["lo", ifname.as_str()] {
                sysctl::ensure(&["net", "ipv6", "conf", dev, "disable_ipv6"], "0")?;
            }
        }
        // Best effort: absent when the kernel has no IPv6 at all. With DAD off
        // even addresses the kernel adds itself (link-local) never stall.
        let _ = sysctl::ensure(&["net", "ipv6", "conf", &ifname, "accept_dad"], "0");
        // Gratuitous ARPs when the link's MAC is set (step 9).
        let _ = sysctl::ensure(&["net", "ipv4", "conf", &ifname, "arp_notify"], "1");
        Ok::<(), CniError>(())
    })
}

/// Re-reads the host end of the veth until the kernel has seen its carrier.
///
/// The carrier comes on when the container end goes up, but the kernel's link
/// watcher handles it asynchronously, and only then does the bridge start
/// forwarding through the port. Frames sent before that are dropped. It is
/// usually done by now; the wait is bounded all the same.
fn wait_for_carrier(host: &mut Netlink, veth: &Link) -> Result<Link, CniError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        let link = host
            .link_by_index(veth.index)?
            .ok_or_else(|| missing_link(&veth.name))?;
        if link.lower_up || std::time::Instant::now() >= deadline {
            return Ok(link);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The gateway of the first address of `dst`'s family.
fn gateway_for(ips: &[IpConfig], dst: IpAddr) -> Option<IpAddr> {
    ips.iter()
        .filter(|ip| ip.address.addr.is_ipv4() == dst.is_ipv4())
        .find_map(|ip| ip.gateway)
}

/// `isDefaultGateway`: a default route via the gateway for each family that
/// has one, unless IPAM already gave a default route with a next hop.
fn add_default_routes(ips: &[IpConfig], routes: &mut Vec<Route>) {
    for ipv4 in [true, false] {
        let Some(gw) = ips
            .iter()
            .filter(|ip| ip.address.is_ipv4() == ipv4)
            .find_map(|ip| ip.gateway)
        else {
            continue;
        };
        let has_default = routes
            .iter()
            .any(|r| r.dst.prefix == 0 && r.dst.is_ipv4() == ipv4 && r.gw.is_some());
        if !has_default {
            let any: IpAddr = if ipv4 {
                IpAddr::V4(0u32.into())
            } else {
                IpAddr::V6(0u128.into())
            };
            routes.push(Route {
                dst: IpNet {
                    addr: any,
                    prefix: 0,
                },
                gw: Some(gw),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            });
        }
    }
}

/// Puts `gw` on the bridge. Another address in the same subnet is an error,
/// or is replaced with `forceAddress`, as in the reference plugin.
fn ensure_bridge_address(
    host: &mut Netlink,
    bridge: &Link,
    gw: IpNet,
    force: bool,
) -> Result<(), CniError> {
    let existing = host.addresses(bridge.index)?;
    if existing.contains(&gw) {
        return Ok(());
    }
    for addr in existing.iter().filter(|a| a.is_ipv4() == gw.is_ipv4()) {
        let link_local = matches!(addr.addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        let same_subnet = gw.truncated().contains(addr.addr) || addr.truncated().contains(gw.addr);
        if link_local || !same_subnet {
            continue;
        }
        if !force {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "bridge has a different address in the gateway's subnet",
                format!(
                    "{} has {addr}, expected {gw}; set forceAddress to replace it",
                    bridge.name
                ),
            ));
        }
        host.delete_address(bridge.index, *addr)?;
    }
    match host.add_address(bridge.index, gw, true) {
        // A concurrent ADD added it first.
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        other => Ok(other?),
    }
}
