//! The expressions our rules are made of, typed, and their encoding into
//! the kernel's nf_tables expressions (a small register machine: load a
//! value into a register, transform it, compare it).
//!
//! A rule is the conjunction of its expressions. Every match loads into
//! register 1 and compares it there. Like `nft`, the encoder puts the
//! protocol check that a header field depends on in front of it (`meta
//! nfproto ipv4` before `ip saddr`, `meta l4proto tcp` before `tcp dport`),
//! unless the rule has already established it: in an `inet` table, a load
//! at an IPv4 header offset would otherwise read IPv6 packets too. `nft`
//! leaves these implied matches out when it prints the rule.
//!
//! Numbers come from the kernel's uapi headers (`linux/netfilter/nf_tables.h`
//! unless noted).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::netlink::Attrs;
use crate::spec::IpNet;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
/// The 16-byte registers 1 and 2 (`enum nft_registers`).
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;

const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;

const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;

const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;

const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATUS: u32 = 2;
/// `linux/netfilter/nf_conntrack_common.h`: the connection was DNATed.
const IPS_DST_NAT: u32 = 1 << 5;

const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// `linux/rtnetlink.h`: a local address.
const RTN_LOCAL: u32 = 2;

const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
/// `linux/netfilter/nf_nat.h`: the range sets an address and a port.
const NF_NAT_RANGE_MAP_IPS: u32 = 1 << 0;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==` (printed without an operator).
    Eq,
    /// `!=`.
    Ne,
}

/// An IP version: `ip` or `ip6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`ip`, `meta nfproto ipv4`).
    Ipv4,
    /// IPv6 (`ip6`, `meta nfproto ipv6`).
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// `linux/netfilter.h`: NFPROTO_IPV4 or NFPROTO_IPV6.
    fn nfproto(self) -> u8 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }
}

/// A transport protocol with ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl L4Proto {
    /// The IP protocol number.
    fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Sctp => 132,
        }
    }
}

impl FromStr for L4Proto {
    type Err = String;

    /// "tcp", "udp" or "sctp", in any case.
    fn from_str(s: &str) -> Result<L4Proto, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(L4Proto::Tcp),
            "udp" => Ok(L4Proto::Udp),
            "sctp" => Ok(L4Proto::Sctp),
            _ => Err(format!("{s:?} is not tcp, udp or sctp")),
        }
    }
}

/// Which address of the IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrField {
    /// The source address.
    Saddr,
    /// The destination address.
    Daddr,
}

/// One element of a rule, in `nft` syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `ip saddr 10.0.0.5`, `ip6 daddr != fd00::/64`: `ip` or `ip6`
    /// follows the address; a prefix shorter than the address matches the
    /// network (see [`host`] for one address).
    Addr {
        /// Source or destination.
        field: AddrField,
        /// `==` or `!=`.
        op: Op,
        /// The address or network.
        net: IpNet,
    },
    /// `tcp dport 8080`.
    Dport {
        /// The protocol whose header holds the port.
        proto: L4Proto,
        /// `==` or `!=`.
        op: Op,
        /// The port.
        port: u16,
    },
    /// `meta nfproto ipv4`.
    Nfproto(Family),
    /// `meta l4proto tcp`.
    L4proto(L4Proto),
    /// `fib daddr type local`: the destination is one of this host's
    /// addresses.
    DaddrIsLocal,
    /// `ct status dnat`: the connection was destination-NATed.
    CtStatusDnat,
    /// `masquerade`.
    Masquerade,
    /// `dnat ip to 10.0.0.5:80`, `dnat ip6 to [fd00::5]:80`.
    Dnat {
        /// The new destination address.
        addr: IpAddr,
        /// The new destination port.
        port: u16,
    },
}

impl Expr {
    /// `ip saddr <op> <net>` (`ip6` for IPv6).
    pub fn saddr(op: Op, net: IpNet) -> Expr {
        Expr::Addr {
            field: AddrField::Saddr,
            op,
            net,
        }
    }

    /// `ip daddr <op> <net>` (`ip6` for IPv6).
    pub fn daddr(op: Op, net: IpNet) -> Expr {
        Expr::Addr {
            field: AddrField::Daddr,
            op,
            net,
        }
    }
}

/// One address as an [`IpNet`] with a full-length prefix.
pub fn host(addr: IpAddr) -> IpNet {
    let prefix = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    IpNet { addr, prefix }
}

/// A network; a prefix longer than the address is cut to its length.
pub fn net(addr: IpAddr, prefix: u8) -> IpNet {
    IpNet {
        addr,
        prefix: prefix.min(host(addr).prefix),
    }
}

/// IPv4 multicast, 224.0.0.0/4.
pub fn multicast4() -> IpNet {
    net(Ipv4Addr::new(224, 0, 0, 0).into(), 4)
}

/// IPv6 multicast, ff00::/8.
pub fn multicast6() -> IpNet {
    net(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8)
}

/// IPv4 loopback, 127.0.0.0/8.
pub fn loopback4() -> IpNet {
    net(Ipv4Addr::new(127, 0, 0, 0).into(), 8)
}

/// Encodes a rule's expressions as the value of `NFTA_RULE_EXPRESSIONS`.
pub fn encode(exprs: &[Expr]) -> Attrs {
    let mut encoder = Encoder::default();
    for expr in exprs {
        encoder.expr(expr);
    }
    encoder
        .elems
        .into_iter()
        .fold(Attrs::new(), |list, elem| list.nested(NFTA_LIST_ELEM, elem))
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The netmask of `prefix` bits over `len` bytes.
fn mask(prefix: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let bits = usize::from(prefix).saturating_sub(8 * i).min(8);
            (0xff00u16 >> bits) as u8
        })
        .collect()
}

fn data(value: &[u8]) -> Attrs {
    Attrs::new().bytes(NFTA_DATA_VALUE, value)
}

/// Kernel expressions built so far, and what they have established.
#[derive(Default)]
struct Encoder {
    elems: Vec<Attrs>,
    nfproto: Option<Family>,
    l4proto: Option<L4Proto>,
}

impl Encoder {
    fn push(&mut self, name: &str, data: Option<Attrs>) {
        let mut elem = Attrs::new().str(NFTA_EXPR_NAME, name);
        if let Some(data) = data {
            elem = elem.nested(NFTA_EXPR_DATA, data);
        }
        self.elems.push(elem);
    }

    /// reg 1 = meta `key`.
    fn meta(&mut self, key: u32) {
        let a = Attrs::new()
            .u32(NFTA_META_DREG, NFT_REG_1)
            .u32(NFTA_META_KEY, key);
        self.push("meta", Some(a));
    }

    /// reg 1 = `len` bytes at `offset` of header `base`.
    fn payload(&mut self, base: u32, offset: u32, len: usize) {
        let a = Attrs::new()
            .u32(NFTA_PAYLOAD_DREG, NFT_REG_1)
            .u32(NFTA_PAYLOAD_BASE, base)
            .u32(NFTA_PAYLOAD_OFFSET, offset)
            .u32(NFTA_PAYLOAD_LEN, len as u32);
        self.push("payload", Some(a));
    }

    /// reg 1 = reg 1 & `mask`.
    fn and(&mut self, mask: &[u8]) {
        let a = Attrs::new()
            .u32(NFTA_BITWISE_SREG, NFT_REG_1)
            .u32(NFTA_BITWISE_DREG, NFT_REG_1)
            .u32(NFTA_BITWISE_LEN, mask.len() as u32)
            .nested(NFTA_BITWISE_MASK, data(mask))
            .nested(NFTA_BITWISE_XOR, data(&vec![0; mask.len()]));
        self.push("bitwise", Some(a));
    }

    /// The rule goes on only if reg 1 `op` `value`.
    fn cmp(&mut self, op: Op, value: &[u8]) {
        let op = match op {
            Op::Eq => NFT_CMP_EQ,
            Op::Ne => NFT_CMP_NEQ,
        };
        let a = Attrs::new()
            .u32(NFTA_CMP_SREG, NFT_REG_1)
            .u32(NFTA_CMP_OP, op)
            .nested(NFTA_CMP_DATA, data(value));
        self.push("cmp", Some(a));
    }

    /// reg `reg` = `value`.
    fn immediate(&mut self, reg: u32, value: &[u8]) {
        let a = Attrs::new()
            .u32(NFTA_IMMEDIATE_DREG, reg)
            .nested(NFTA_IMMEDIATE_DATA, data(value));
        self.push("immediate", Some(a));
    }

    /// `meta nfproto <family>`, unless already matched.
    fn need_family(&mut self, family: Family) {
        if self.nfproto != Some(family) {
            self.meta(NFT_META_NFPROTO);
            self.cmp(Op::Eq, &[family.nfproto()]);
            self.nfproto = Some(family);
        }
    }

    /// `meta l4proto <proto>`, unless already matched.
    fn need_l4proto(&mut self, proto: L4Proto) {
        if self.l4proto != Some(proto) {
            self.meta(NFT_META_L4PROTO);
            self.cmp(Op::Eq, &[proto.number()]);
            self.l4proto = Some(proto);
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match *expr {
            Expr::Addr { field, op, net } => {
                let family = Family::of(net.addr);
                self.need_family(family);
                let offset = match (family, field) {
                    (Family::Ipv4, AddrField::Saddr) => 12,
                    (Family::Ipv4, AddrField::Daddr) => 16,
                    (Family::Ipv6, AddrField::Saddr) => 8,
                    (Family::Ipv6, AddrField::Daddr) => 24,
                };
                let addr = octets(net.addr);
                let bytes = usize::from(net.prefix / 8).min(addr.len());
                if net.prefix % 8 == 0 && bytes > 0 {
                    // Whole bytes (an address, a /24, a /64): compare just
                    // those, as `nft` does.
                    self.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, bytes);
                    self.cmp(op, &addr[..bytes]);
                } else {
                    // Mask the host bits off, then compare with the network.
                    let mask = mask(net.prefix, addr.len());
                    self.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, addr.len());
                    self.and(&mask);
                    let value: Vec<u8> = addr.iter().zip(&mask).map(|(a, m)| a & m).collect();
                    self.cmp(op, &value);
                }
            }
            Expr::Dport { proto, op, port } => {
                self.need_l4proto(proto);
                // The destination port is at offset 2 in TCP, UDP and SCTP.
                self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                self.cmp(op, &port.to_be_bytes());
            }
            Expr::Nfproto(family) => {
                self.nfproto = None;
                self.need_family(family);
            }
            Expr::L4proto(proto) => {
                self.l4proto = None;
                self.need_l4proto(proto);
            }
            Expr::DaddrIsLocal => {
                let a = Attrs::new()
                    .u32(NFTA_FIB_DREG, NFT_REG_1)
                    .u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
                    .u32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR);
                self.push("fib", Some(a));
                // The address type is a host-endian u32.
                self.cmp(Op::Eq, &RTN_LOCAL.to_ne_bytes());
            }
            Expr::CtStatusDnat => {
                let a = Attrs::new()
                    .u32(NFTA_CT_DREG, NFT_REG_1)
                    .u32(NFTA_CT_KEY, NFT_CT_STATUS);
                self.push("ct", Some(a));
                // The status is a host-endian u32 of flags: test one.
                self.and(&IPS_DST_NAT.to_ne_bytes());
                self.cmp(Op::Ne, &0u32.to_ne_bytes());
            }
            Expr::Masquerade => self.push("masq", None),
            Expr::Dnat { addr, port } => {
                let family = Family::of(addr);
                self.need_family(family);
                self.immediate(NFT_REG_1, &octets(addr));
                self.immediate(NFT_REG_2, &port.to_be_bytes());
                let a = Attrs::new()
                    .u32(NFTA_NAT_TYPE, NFT_NAT_DNAT)
                    .u32(NFTA_NAT_FAMILY, u32::from(family.nfproto()))
                    .u32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1)
                    .u32(NFTA_NAT_REG_ADDR_MAX, NFT_REG_1)
                    .u32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2)
                    .u32(NFTA_NAT_REG_PROTO_MAX, NFT_REG_2)
                    .u32(
                        NFTA_NAT_FLAGS,
                        NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED,
                    );
                self.push("nat", Some(a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::netlink::parse_attrs;
    use super::*;

    /// The kernel expression names of an encoded rule, in order.
    fn names(exprs: &[Expr]) -> Vec<String> {
        let list = encode(exprs);
        parse_attrs(list.as_bytes())
            .map(|(_, elem)| {
                let (_, name) = parse_attrs(elem).next().expect("name");
                String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn one_rule_byte_for_byte() {
        // `meta l4proto tcp masquerade`
        let got = encode(&[Expr::L4proto(L4Proto::Tcp), Expr::Masquerade]);
        let le = |n: u16| n.to_ne_bytes();
        let mut want: Vec<u8> = Vec::new();
        // meta: NFTA_LIST_ELEM (nested, 36 bytes) { NAME "meta", DATA { DREG 1, KEY 16 } }
        want.extend(le(36).iter().chain(&le(0x8001)));
        want.extend(le(9).iter().chain(&le(1)).chain(b"meta\0\0\0\0"));
        want.extend(le(20).iter().chain(&le(0x8002)));
        want.extend(le(8).iter().chain(&le(1)).chain(&[0, 0, 0, 1]));
        want.extend(le(8).iter().chain(&le(2)).chain(&[0, 0, 0, 16]));
        // cmp: { NAME "cmp", DATA { SREG 1, OP eq, DATA { VALUE 6 } } }
        want.extend(le(44).iter().chain(&le(0x8001)));
        want.extend(le(8).iter().chain(&le(1)).chain(b"cmp\0"));
        want.extend(le(32).iter().chain(&le(0x8002)));
        want.extend(le(8).iter().chain(&le(1)).chain(&[0, 0, 0, 1]));
        want.extend(le(8).iter().chain(&le(2)).chain(&[0, 0, 0, 0]));
        want.extend(le(12).iter().chain(&le(0x8003)));
        want.extend(le(5).iter().chain(&le(1)).chain(&[6, 0, 0, 0]));
        // masq: { NAME "masq" }, no data
        want.extend(le(16).iter().chain(&le(0x8001)));
        want.extend(le(9).iter().chain(&le(1)).chain(b"masq\0\0\0\0"));
        assert_eq!(got.as_bytes(), &want[..]);
    }

    #[test]
    fn header_fields_bring_their_protocol_match() {
        let pod: IpAddr = "10.0.0.5".parse().unwrap();
        let subnet = net("10.0.0.0".parse().unwrap(), 24);
        assert_eq!(
            names(&[
                Expr::saddr(Op::Eq, host(pod)),
                Expr::daddr(Op::Ne, subnet),
                Expr::daddr(Op::Ne, multicast4()),
                Expr::Masquerade
            ]),
            [
                "meta", "cmp", "payload", "cmp", "payload", "cmp", "payload", "bitwise", "cmp",
                "masq"
            ]
        );
        // Already matched: no second `meta l4proto`; a new family: a new
        // `meta nfproto`.
        let six: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(
            names(&[
                Expr::L4proto(L4Proto::Udp),
                Expr::Dport {
                    proto: L4Proto::Udp,
                    op: Op::Eq,
                    port: 53
                },
                Expr::Dnat {
                    addr: six,
                    port: 53
                }
            ]),
            [
                "meta",
                "cmp",
                "payload",
                "cmp",
                "meta",
                "cmp",
                "immediate",
                "immediate",
                "nat"
            ]
        );
    }

    #[test]
    fn prefixes_become_masks() {
        assert_eq!(mask(24, 4), [0xff, 0xff, 0xff, 0]);
        assert_eq!(mask(4, 4), [0xf0, 0, 0, 0]);
        assert_eq!(mask(0, 2), [0, 0]);
        assert_eq!(mask(200, 2), [0xff, 0xff]);
        assert_eq!(net("10.1.2.3".parse().unwrap(), 99).prefix, 32);
        // Host bits of the address are ignored, byte-aligned or not.
        for prefix in [0, 20, 24] {
            let a = encode(&[Expr::daddr(
                Op::Eq,
                net("10.1.2.3".parse().unwrap(), prefix),
            )]);
            let b = encode(&[Expr::daddr(
                Op::Eq,
                net("10.1.0.0".parse().unwrap(), prefix),
            )]);
            assert_eq!(a == b, prefix < 24, "/{prefix}");
        }
    }

    #[test]
    fn protocol_names() {
        assert_eq!("TCP".parse::<L4Proto>(), Ok(L4Proto::Tcp));
        assert_eq!("sctp".parse::<L4Proto>(), Ok(L4Proto::Sctp));
        assert!("icmp".parse::<L4Proto>().is_err());
    }
}
