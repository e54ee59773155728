//! `IpNet`: an address with a prefix length, as CNI writes it ("10.1.0.5/24").

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a CIDR string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpNetError {
    /// No `/prefix` part.
    #[error("{0:?} is not in CIDR notation (address/prefix)")]
    NotCidr(String),
    /// The address part does not parse.
    #[error("{0:?} is not a valid IP address")]
    BadAddress(String),
    /// The prefix is not a number or too long for the family.
    #[error("{0:?} has an invalid prefix length")]
    BadPrefix(String),
}

/// An IP address plus prefix length. The address may have host bits set (an
/// interface address) or not (a subnet); `network()` clears them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (0–32 for IPv4, 0–128 for IPv6).
    pub prefix: u8,
}

impl IpNet {
    /// Builds an `IpNet`; `None` if the prefix is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(addr)).then_some(IpNet { addr, prefix })
    }

    /// True for an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        from_u128(self.addr, to_u128(self.addr) & self.mask())
    }

    /// The last address of the network (all host bits set).
    pub fn last(&self) -> IpAddr {
        from_u128(
            self.addr,
            to_u128(self.addr) | !self.mask() & family_mask(self.addr),
        )
    }

    /// This network with host bits cleared, e.g. 10.1.0.5/24 → 10.1.0.0/24.
    pub fn truncated(&self) -> IpNet {
        IpNet {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// True if `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && to_u128(ip) & self.mask() == to_u128(self.network())
    }

    fn mask(&self) -> u128 {
        let bits = u32::from(max_prefix(self.addr));
        let host_bits = bits.saturating_sub(u32::from(self.prefix));
        // checked_shl: a /0 shifts by the whole width.
        let ones = family_mask(self.addr);
        ones.checked_shl(host_bits).unwrap_or(0) & ones
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn family_mask(addr: IpAddr) -> u128 {
    if addr.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

/// An address as a number (IPv4 in the low 32 bits), for range arithmetic.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_u128`], in the family of `like`. IPv4 values are
/// truncated to 32 bits.
pub fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| IpNetError::NotCidr(s.to_string()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpNetError::BadAddress(s.to_string()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| IpNetError::BadPrefix(s.to_string()))?;
        IpNet::new(addr, prefix).ok_or_else(|| IpNetError::BadPrefix(s.to_string()))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes_networks() {
        let n: IpNet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.1.2.0");
        assert_eq!(n.last().to_string(), "10.1.2.255");
        assert!(n.contains("10.1.2.200".parse().unwrap()));
        assert!(!n.contains("10.1.3.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));

        let v6: IpNet = "fd00:213::5/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:213::");
        assert_eq!(v6.last().to_string(), "fd00:213::ffff:ffff:ffff:ffff");

        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(all.last().to_string(), "255.255.255.255");
    }

    #[test]
    fn rejects_garbage() {
        assert!("10.0.0.0".parse::<IpNet>().is_err());
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("x/24".parse::<IpNet>().is_err());
        assert!("::/129".parse::<IpNet>().is_err());
    }
}
