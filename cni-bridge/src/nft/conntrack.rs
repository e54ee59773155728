//! Forgetting the host's UDP flows to a host port once its DNAT rules are in.
//!
//! Conntrack decides a flow's NAT when the flow starts. A UDP client that sent
//! to a host port before the port was mapped (or while it was mapped to a pod
//! since removed) has an entry with no DNAT (or the old one), and each datagram
//! it sends keeps that entry alive: the new pod never hears from it. Deleting
//! the entries makes the next datagram start a new flow through the new rules.
//! Only UDP needs it: a TCP client that retries opens a new connection, with a
//! new source port, and so a new flow.
//!
//! Numbers come from `linux/netfilter/nfnetlink_conntrack.h`.

use std::net::IpAddr;

use super::netlink::{parse_attrs, Attrs, Socket};
use super::NftError;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// A UDP host port, on one host address or (`None`) on all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPort {
    /// The port number.
    pub port: u16,
    /// The host address the mapping is limited to.
    pub host_ip: Option<IpAddr>,
}

/// Deletes every UDP conntrack entry of this network namespace whose original
/// destination is one of `ports`; returns how many it deleted.
pub fn forget_udp_flows(ports: &[UdpPort]) -> Result<usize, NftError> {
    if ports.is_empty() {
        return Ok(0);
    }
    let mut socket = Socket::open()?;
    let mut deleted = 0;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for entry in socket.conntrack_entries(family)? {
            let Some(flow) = Flow::decode(&entry) else {
                continue;
            };
            if flow.is_to(ports) {
                socket.delete_conntrack(family, &flow.key)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// What we read of an entry: its original direction's protocol and
/// destination, and the attributes that name the entry in a delete request.
#[derive(Debug)]
struct Flow {
    proto: u8,
    dst: IpAddr,
    dst_port: u16,
    key: Attrs,
}

impl Flow {
    /// `None` for an entry without the parts we need (not UDP/TCP-like).
    fn decode(entry: &[u8]) -> Option<Flow> {
        let (mut orig, mut zone) = (None, None);
        for (kind, value) in parse_attrs(entry) {
            match kind {
                CTA_TUPLE_ORIG => orig = Some(value),
                CTA_ZONE => zone = Some(value),
                _ => {}
            }
        }
        let orig = orig?;
        let (mut dst, mut l4) = (None, (None, None));
        for (kind, value) in parse_attrs(orig) {
            match kind {
                CTA_TUPLE_IP => dst = decode_dst(value),
                CTA_TUPLE_PROTO => l4 = decode_l4(value),
                _ => {}
            }
        }
        let (proto, dst_port) = l4;
        // The kernel finds the entry by its original tuple in its zone: send both back as read.
        let mut key = Attrs::new().nested_bytes(CTA_TUPLE_ORIG, orig);
        if let Some(zone) = zone {
            key = key.bytes(CTA_ZONE, zone);
        }
        Some(Flow {
            proto: proto?,
            dst: dst?,
            dst_port: dst_port?,
            key,
        })
    }

    fn is_to(&self, ports: &[UdpPort]) -> bool {
        self.proto == IPPROTO_UDP
            && ports
                .iter()
                .any(|p| p.port == self.dst_port && p.host_ip.is_none_or(|ip| ip == self.dst))
    }
}

/// The destination address of a tuple's `CTA_TUPLE_IP`.
fn decode_dst(ip: &[u8]) -> Option<IpAddr> {
    parse_attrs(ip).find_map(|(kind, value)| match kind {
        CTA_IP_V4_DST => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        CTA_IP_V6_DST => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    })
}

/// The protocol number and destination port of a tuple's `CTA_TUPLE_PROTO`.
fn decode_l4(l4: &[u8]) -> (Option<u8>, Option<u16>) {
    let (mut proto, mut port) = (None, None);
    for (kind, value) in parse_attrs(l4) {
        match kind {
            CTA_PROTO_NUM => proto = value.first().copied(),
            CTA_PROTO_DST_PORT => port = value.try_into().ok().map(u16::from_be_bytes),
            _ => {}
        }
    }
    (proto, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as the kernel dumps it: original tuple (addresses, then protocol
    /// and ports), then other attributes we skip.
    fn entry(proto: u8, dst: [u8; 4], dst_port: u16, zone: Option<u16>) -> Vec<u8> {
        let ip = Attrs::new()
            .bytes(1, &[10, 0, 0, 9])
            .bytes(CTA_IP_V4_DST, &dst);
        let l4 = Attrs::new()
            .bytes(CTA_PROTO_NUM, &[proto])
            .bytes(2, &40000u16.to_be_bytes())
            .bytes(CTA_PROTO_DST_PORT, &dst_port.to_be_bytes());
        let orig = Attrs::new()
            .nested(CTA_TUPLE_IP, ip)
            .nested(CTA_TUPLE_PROTO, l4);
        let mut attrs = Attrs::new().nested(CTA_TUPLE_ORIG, orig).u32(3, 0x188);
        if let Some(zone) = zone {
            attrs = attrs.bytes(CTA_ZONE, &zone.to_be_bytes());
        }
        attrs.as_bytes().to_vec()
    }

    #[test]
    fn udp_entries_to_a_mapped_port_are_picked() {
        let any = [UdpPort {
            port: 5353,
            host_ip: None,
        }];
        let on_one = [UdpPort {
            port: 5353,
            host_ip: Some("192.0.2.1".parse().unwrap()),
        }];
        let flow = Flow::decode(&entry(17, [192, 0, 2, 1], 5353, None)).unwrap();
        assert!(flow.is_to(&any) && flow.is_to(&on_one));
        let elsewhere = Flow::decode(&entry(17, [192, 0, 2, 7], 5353, None)).unwrap();
        assert!(elsewhere.is_to(&any) && !elsewhere.is_to(&on_one));
        let other_port = Flow::decode(&entry(17, [192, 0, 2, 1], 53, None)).unwrap();
        assert!(!other_port.is_to(&any));
        let tcp = Flow::decode(&entry(6, [192, 0, 2, 1], 5353, None)).unwrap();
        assert!(!tcp.is_to(&any));
    }

    #[test]
    fn the_delete_key_is_the_original_tuple_and_zone_as_read() {
        let raw = entry(17, [192, 0, 2, 1], 5353, Some(7));
        let flow = Flow::decode(&raw).unwrap();
        let read: Vec<(u16, Vec<u8>)> = parse_attrs(&raw)
            .filter(|(kind, _)| matches!(*kind, CTA_TUPLE_ORIG | CTA_ZONE))
            .map(|(kind, value)| (kind, value.to_vec()))
            .collect();
        let key: Vec<(u16, Vec<u8>)> = parse_attrs(flow.key.as_bytes())
            .map(|(kind, value)| (kind, value.to_vec()))
            .collect();
        assert_eq!(key, read);
    }

    #[test]
    fn ipv6_destinations_decode() {
        let dst: std::net::Ipv6Addr = "fd00::7".parse().unwrap();
        let ip = Attrs::new().bytes(CTA_IP_V6_DST, &dst.octets());
        assert_eq!(decode_dst(ip.as_bytes()), Some(IpAddr::V6(dst)));
        // A truncated address is no address.
        let short = Attrs::new().bytes(CTA_IP_V6_DST, &[0xfd, 0]);
        assert_eq!(decode_dst(short.as_bytes()), None);
    }

    #[test]
    fn entries_without_a_tuple_are_skipped() {
        assert!(Flow::decode(Attrs::new().u32(3, 1).as_bytes()).is_none());
        assert!(Flow::decode(&[1, 2, 3]).is_none());
    }
}
