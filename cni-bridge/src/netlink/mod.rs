//! Synchronous rtnetlink: links, addresses and routes.
//!
//! A [`Netlink`] owns one `NETLINK_ROUTE` socket. A socket talks to the
//! network namespace it was *created* in, so [`Netlink::open_in`] creates it
//! on a thread inside the container's namespace and hands it back; after
//! that it can be used from any thread.

pub mod netns;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::spec::IpNet;

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel (or the socket) refused an operation.
    #[error("{op}: {source}")]
    Kernel {
        /// What we were doing, e.g. "create bridge cni0".
        op: String,
        /// The errno.
        source: io::Error,
    },
    /// A reply could not be decoded.
    #[error("decoding a netlink reply: {0}")]
    Decode(String),
    /// Opening or entering a network namespace failed.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// The errno.
        source: io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl NetlinkError {
    /// The OS error number, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } | NetlinkError::Netns { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    /// True if the namespace is gone: its file was removed (ENOENT), or it
    /// is a leftover mount point no longer holding a namespace (EINVAL from
    /// setns).
    pub fn is_netns_gone(&self) -> bool {
        matches!(self, NetlinkError::Netns { source, .. }
            if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::EINVAL))
    }
}

/// What we need to know about a network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address as "aa:bb:cc:dd:ee:ff" (empty if none).
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Index of the bridge (or other master) this is a port of.
    pub master: Option<u32>,
    /// The link kind ("bridge", "veth", …), if the kernel reports one.
    pub kind: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Carrier seen by the kernel's link watcher (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// Promiscuous mode on.
    pub promisc: bool,
    /// Hairpin mode, for bridge ports.
    pub hairpin: Option<bool>,
}

/// A route read from, or to be written to, the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination network (0.0.0.0/0 or ::/0 for a default route).
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Routing table (254 is main).
    pub table: u32,
    /// Scope (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// Metric.
    pub priority: Option<u32>,
    /// Path MTU metric.
    pub mtu: Option<u32>,
    /// Advertised MSS metric.
    pub advmss: Option<u32>,
    /// Who installed the route (`RTPROT_*`: 2 kernel, 3 boot, 4 static…); agents mark
    /// theirs with a number of their own so they touch no other route.
    pub protocol: u8,
}

/// `RTPROT_BOOT`, the protocol of routes set up once, as CNI plugins' are.
pub const PROTOCOL_BOOT: u8 = 3;

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A netlink route socket bound to one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let op = |source| NetlinkError::Kernel {
            op: "open netlink socket".into(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(op)?;
        socket.bind_auto().map_err(op)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Opens a socket in the network namespace at `netns`.
    pub fn open_in(netns: &Path) -> Result<Netlink, NetlinkError> {
        netns::run_in(netns, Netlink::open)
    }

    /// Sends one request and collects the replies: until the ACK for a
    /// plain request, until `NLMSG_DONE` for a dump.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let kernel_err = |source| NetlinkError::Kernel { op: op(), source };
        self.seq = self.seq.wrapping_add(1);
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut packet = NetlinkMessage::from(message);
        // Dumps end with NLMSG_DONE; everything else asks for an explicit ACK.
        packet.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send_to(&buf, &SocketAddr::new(0, 0), 0)
            .map_err(kernel_err)?;

        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(kernel_err)?;
            let mut offset = 0;
            while offset + 4 <= data.len() {
                // The first 4 bytes of every message are its length.
                let mut len_bytes = [0u8; 4];
                len_bytes.copy_from_slice(&data[offset..offset + 4]);
                let len = u32::from_ne_bytes(len_bytes) as usize;
                if len < 16 || offset + len > data.len() {
                    return Err(NetlinkError::Decode(format!("bad message length {len}")));
                }
                let chunk = &data[offset..offset + len];
                offset += (len + 3) & !3;
                let reply = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk) {
                    Ok(reply) => reply,
                    // One odd message in a dump (some exotic link) must not
                    // fail the whole operation: skip it.
                    Err(_) if dump => continue,
                    Err(e) => return Err(NetlinkError::Decode(e.to_string())),
                };
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => {
                                Err(kernel_err(io::Error::from_raw_os_error(-code.get())))
                            }
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    // ---- links ----

    /// Looks a link up by name; `None` if there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(msg, || format!("look up link {name}"))
    }

    /// Looks a link up by index; `None` if there is no such link.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(msg, || format!("look up link #{index}"))
    }

    fn get_link(
        &mut self,
        msg: LinkMessage,
        op: impl Fn() -> String,
    ) -> Result<Option<Link>, NetlinkError> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, op) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(parse_link(&m)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge. Fails with EEXIST if the name is taken.
    pub fn create_bridge(
        &mut self,
        name: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        // A MAC given at creation is the bridge's for good. Without one the kernel
        // gives it the lowest MAC among its ports, which changes as pods come and
        // go, and every change flushes the host's neighbor entries on the bridge
        // and leaves the pods' entries for their gateway pointing nowhere.
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create bridge {name}"),
        )
        .map(drop)
    }

    /// Creates a veth pair: `name` here, `peer_name` directly inside the
    /// namespace `peer_netns` (an open namespace file). Fails with EEXIST if
    /// either name is taken.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        mtu: Option<u32>,
        peer_netns: &impl AsRawFd,
    ) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create veth pair {name}/{peer_name}"),
        )
        .map(drop)
    }

    /// Changes flags (those in `change`) and attributes of an existing link.
    fn modify_link(
        &mut self,
        index: u32,
        flags: LinkFlags,
        change: LinkFlags,
        attributes: Vec<LinkAttribute>,
        op: impl Fn() -> String,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = flags;
        msg.header.change_mask = change;
        msg.attributes = attributes;
        // RTM_NEWLINK without NLM_F_CREATE modifies; unlike RTM_SETLINK it
        // also applies IFLA_LINKINFO (needed for bridge port options).
        self.request(RouteNetlinkMessage::NewLink(msg), 0, op)
            .map(drop)
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.modify_link(index, LinkFlags::Up, LinkFlags::Up, vec![], || {
            format!("set link #{index} up")
        })
    }

    /// Sets a link's MAC address. The kernel then notifies the link's peers; with
    /// `arp_notify` on, by a gratuitous ARP per IPv4 address, even if the MAC is unchanged.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let attributes = vec![LinkAttribute::Address(mac.to_vec())];
        self.modify_link(
            index,
            LinkFlags::empty(),
            LinkFlags::empty(),
            attributes,
            || format!("set the MAC of link #{index}"),
        )
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let flags = if on {
            LinkFlags::Promisc
        } else {
            LinkFlags::empty()
        };
        self.modify_link(index, flags, LinkFlags::Promisc, vec![], || {
            format!("set promisc on link #{index}")
        })
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let attrs = vec![LinkAttribute::Mtu(mtu)];
        self.modify_link(index, LinkFlags::empty(), LinkFlags::empty(), attrs, || {
            format!("set mtu {mtu} on link #{index}")
        })
    }

    /// Makes link `index` a port of the bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NetlinkError> {
        let attrs = vec![LinkAttribute::Controller(master)];
        self.modify_link(index, LinkFlags::empty(), LinkFlags::empty(), attrs, || {
            format!("attach link #{index} to bridge #{master}")
        })
    }

    /// Sets hairpin mode on a bridge port (lets frames go back out the port
    /// they came in on, so a pod can reach itself through a NATed address).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let attrs = vec![LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ])];
        self.modify_link(index, LinkFlags::empty(), LinkFlags::empty(), attrs, || {
            format!("set hairpin mode on link #{index}")
        })
    }

    /// Deletes a link (for a veth, both ends go).
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0, || {
            format!("delete link #{index}")
        })
        .map(drop)
    }

    // ---- addresses ----

    /// The addresses on link `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            || format!("list addresses of link #{index}"),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(m) = reply else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            // For IPv4, IFA_LOCAL is the interface's own address; IFA_ADDRESS
            // may be a point-to-point peer. IPv6 only has IFA_ADDRESS.
            let mut address = None;
            for attr in &m.attributes {
                match attr {
                    AddressAttribute::Local(ip) => address = Some(*ip),
                    AddressAttribute::Address(ip) if address.is_none() => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(net) = address.and_then(|a| IpNet::new(a, m.header.prefix_len)) {
                out.push(net);
            }
        }
        Ok(out)
    }

    fn address_message(index: u32, net: IpNet) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(net.addr);
        msg.header.prefix_len = net.prefix;
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg
    }

    /// Adds `net` (address/prefix) to link `index`. With `nodad`, an IPv6
    /// address is usable at once instead of after duplicate address detection.
    pub fn add_address(&mut self, index: u32, net: IpNet, nodad: bool) -> Result<(), NetlinkError> {
        let mut msg = Self::address_message(index, net);
        if net.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(net.addr));
            if net.prefix < 31 {
                if let IpAddr::V4(brd) = net.last() {
                    msg.attributes.push(AddressAttribute::Broadcast(brd));
                }
            }
        }
        msg.attributes.push(AddressAttribute::Address(net.addr));
        if nodad && !net.is_ipv4() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add address {net} to link #{index}"),
        )
        .map(drop)
    }

    /// Removes `net` from link `index`.
    pub fn delete_address(&mut self, index: u32, net: IpNet) -> Result<(), NetlinkError> {
        let mut msg = Self::address_message(index, net);
        if net.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(net.addr));
        }
        msg.attributes.push(AddressAttribute::Address(net.addr));
        self.request(RouteNetlinkMessage::DelAddress(msg), 0, || {
            format!("delete address {net} from link #{index}")
        })
        .map(drop)
    }

    // ---- routes ----

    /// Every route of family `v4`/v6 in every table.
    pub fn routes(&mut self, ipv4: bool) -> Result<Vec<RouteEntry>, NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if ipv4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, || {
            "list routes".to_string()
        })?;
        let zero: IpAddr = if ipv4 {
            IpAddr::V4(0u32.into())
        } else {
            IpAddr::V6(0u128.into())
        };
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(m) = reply else {
                continue;
            };
            let mut entry = RouteEntry {
                dst: IpNet {
                    addr: zero,
                    prefix: m.header.destination_prefix_length,
                },
                gw: None,
                oif: None,
                table: u32::from(m.header.table),
                scope: u8::from(m.header.scope),
                priority: None,
                mtu: None,
                advmss: None,
                protocol: u8::from(m.header.protocol),
            };
            for attr in &m.attributes {
                match attr {
                    RouteAttribute::Destination(a) => {
                        if let Some(ip) = route_ip(a) {
                            entry.dst.addr = ip;
                        }
                    }
                    RouteAttribute::Gateway(a) => entry.gw = route_ip(a),
                    RouteAttribute::Oif(i) => entry.oif = Some(*i),
                    RouteAttribute::Table(t) => entry.table = *t,
                    RouteAttribute::Priority(p) => entry.priority = Some(*p),
                    RouteAttribute::Metrics(metrics) => {
                        for metric in metrics {
                            match metric {
                                RouteMetric::Mtu(v) => entry.mtu = Some(*v),
                                RouteMetric::Advmss(v) => entry.advmss = Some(*v),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Adds a unicast route. `route.oif` must be set.
    pub fn add_route(&mut self, route: &RouteEntry) -> Result<(), NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(route.dst.addr);
        msg.header.destination_prefix_length = route.dst.prefix;
        msg.header.protocol = RouteProtocol::from(route.protocol);
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = RouteScope::from(route.scope);
        // Tables above 255 only fit in the RTA_TABLE attribute.
        msg.header.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.attributes.push(RouteAttribute::Table(route.table));
        msg.attributes
            .push(RouteAttribute::Destination(route.dst.network().into()));
        if let Some(gw) = route.gw {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        if let Some(oif) = route.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(priority) = route.priority {
            msg.attributes.push(RouteAttribute::Priority(priority));
        }
        let mut metrics = Vec::new();
        if let Some(mtu) = route.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = route.advmss {
            metrics.push(RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        let describe = || match route.gw {
            Some(gw) => format!("add route {} via {gw}", route.dst),
            None => format!("add route {}", route.dst),
        };
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            describe,
        )
        .map(drop)
    }

    /// Deletes the route to `route.dst` in `route.table` (with its next hop, when set).
    pub fn delete_route(&mut self, route: &RouteEntry) -> Result<(), NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(route.dst.addr);
        msg.header.destination_prefix_length = route.dst.prefix;
        msg.header.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.header.scope = RouteScope::NoWhere;
        msg.attributes.push(RouteAttribute::Table(route.table));
        msg.attributes
            .push(RouteAttribute::Destination(route.dst.network().into()));
        if let Some(gw) = route.gw {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        self.request(RouteNetlinkMessage::DelRoute(msg), 0, || {
            format!("delete route {}", route.dst)
        })
        .map(drop)
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: String::new(),
        mtu: 0,
        master: None,
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        lower_up: m.header.flags.contains(LinkFlags::LowerUp),
        promisc: m.header.flags.contains(LinkFlags::Promisc),
        hairpin: None,
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(bytes) => link.mac = format_mac(bytes),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(idx) => link.master = Some(*idx),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::HairpinMode(on) = p {
                                    link.hairpin = Some(*on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Formats a hardware address as lowercase colon-separated hex.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses "aa:bb:cc:dd:ee:ff", as [`format_mac`] writes it.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl From<NetlinkError> for crate::spec::CniError {
    fn from(e: NetlinkError) -> Self {
        crate::spec::CniError::new(
            crate::spec::ErrorCode::System,
            "netlink operation failed",
            e.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_back_only_when_well_formed() {
        let mac = [0x0a, 0x58, 0xff, 0, 0x1b, 0x2c];
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        for bad in [
            "",
            "0a:58:ff:00:1b",
            "0a:58:ff:00:1b:2c:3d",
            "0a:58:ff:00:1b:zz",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
