//! Address ranges and the order in which addresses are tried.

use std::fmt;
use std::net::IpAddr;

use super::config::{parse_ip, RangeConf};
use super::IpamError;
use crate::spec::{from_u128, to_u128, IpNet};

/// A range of addresses inside one subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet (host bits clear).
    pub subnet: IpNet,
    /// First address handed out.
    pub start: IpAddr,
    /// Last address handed out.
    pub end: IpAddr,
    /// The gateway: never handed out.
    pub gateway: IpAddr,
}

impl Range {
    /// Validates one `ranges` entry and fills in host-local's defaults.
    pub fn from_conf(c: &RangeConf) -> Result<Range, IpamError> {
        let subnet: IpNet = c
            .subnet
            .parse()
            .map_err(|e| IpamError::Config(format!("subnet: {e}")))?;
        if subnet.network() != subnet.addr {
            return Err(IpamError::Config(format!(
                "subnet {subnet} has host bits set (the network address is {})",
                subnet.network()
            )));
        }
        let max = if subnet.is_ipv4() { 32 } else { 128 };
        // A /31 or /32 (/127, /128) leaves nothing after network and gateway.
        if subnet.prefix > max - 2 {
            return Err(IpamError::Config(format!(
                "subnet {subnet} is too small to allocate from"
            )));
        }
        let first = from_u128(subnet.addr, to_u128(subnet.addr) + 1);
        let last = if subnet.is_ipv4() {
            // IPv4 excludes the broadcast address.
            from_u128(subnet.addr, to_u128(subnet.last()) - 1)
        } else {
            subnet.last()
        };

        let inside = |field: &str, value: &Option<String>, default: IpAddr| match value {
            None => Ok(default),
            Some(s) => {
                let ip = parse_ip(field, s)?;
                if subnet.contains(ip) {
                    Ok(ip)
                } else {
                    Err(IpamError::Config(format!(
                        "{field} {ip} is not in subnet {subnet}"
                    )))
                }
            }
        };
        let start = inside("rangeStart", &c.range_start, first)?;
        let end = inside("rangeEnd", &c.range_end, last)?;
        let gateway = match &c.gateway {
            None => first,
            Some(s) => parse_ip("gateway", s)?,
        };
        if to_u128(start) > to_u128(end) {
            return Err(IpamError::Config(format!(
                "rangeStart {start} is after rangeEnd {end}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// True if `ip` is between `start` and `end` (inclusive).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip) && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.is_ipv4() == other.subnet.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// How many addresses can be handed out (the gateway excluded).
    fn capacity(&self) -> u128 {
        let size = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        if self.contains(self.gateway) {
            size - 1
        } else {
            size
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges of one family; one address is leased from each set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    /// The ranges, tried in order.
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// Builds a set, checking all ranges share a family and don't overlap.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, IpamError> {
        let Some(first) = ranges.first() else {
            return Err(IpamError::Config("a range set is empty".into()));
        };
        let ipv4 = first.subnet.is_ipv4();
        for (i, a) in ranges.iter().enumerate() {
            if a.subnet.is_ipv4() != ipv4 {
                return Err(IpamError::Config(
                    "a range set mixes IPv4 and IPv6 ranges".into(),
                ));
            }
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(IpamError::Config(format!("range {a} overlaps with {b}")));
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    /// The range holding `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// True if any range of `self` overlaps any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// How many addresses the set can hand out.
    pub fn capacity(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |sum, r| sum.saturating_add(r.capacity()))
    }

    /// Every allocatable address once, in host-local's order: starting just
    /// after `last` (the last address reserved, if it is still in the set),
    /// through the end of the set, then wrapping around. Gateways are skipped.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        // Find where to begin: (range index, address) right after `last`.
        let mut range = 0;
        // An empty set (only constructible by hand) yields nothing.
        let mut next = self.ranges.first().map_or(0, |r| to_u128(r.start));
        if let Some(last) = last {
            if let Some(i) = self.ranges.iter().position(|r| r.contains(last)) {
                if to_u128(last) < to_u128(self.ranges[i].end) {
                    range = i;
                    next = to_u128(last) + 1;
                } else {
                    range = (i + 1) % self.ranges.len();
                    next = to_u128(self.ranges[range].start);
                }
            }
        }
        Candidates {
            set: self,
            range,
            next,
            remaining: self.ranges.iter().fold(0u128, |sum, r| {
                sum.saturating_add((to_u128(r.end) - to_u128(r.start)).saturating_add(1))
            }),
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Iterator returned by [`RangeSet::candidates`].
pub struct Candidates<'a> {
    set: &'a RangeSet,
    range: usize,
    next: u128,
    /// Addresses left to visit (gateways included), so one lap ends the walk.
    remaining: u128,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        while self.remaining > 0 {
            self.remaining -= 1;
            let r = &self.set.ranges[self.range];
            let ip = from_u128(r.start, self.next);
            if self.next >= to_u128(r.end) {
                // Move on to the next range (wrapping to the first).
                self.range = (self.range + 1) % self.set.ranges.len();
                self.next = to_u128(self.set.ranges[self.range].start);
            } else {
                self.next += 1;
            }
            if ip != r.gateway {
                return Some((ip, r));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: Option<&str>, end: Option<&str>) -> Range {
        Range::from_conf(&RangeConf {
            subnet: subnet.into(),
            range_start: start.map(String::from),
            range_end: end.map(String::from),
            gateway: None,
        })
        .unwrap()
    }

    fn ips(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        set.candidates(last.map(|s| s.parse().unwrap()))
            .map(|(ip, _)| ip.to_string())
            .collect()
    }

    #[test]
    fn iterates_a_small_subnet_skipping_gateway() {
        let set = RangeSet::new(vec![range("10.0.0.0/29", None, None)]).unwrap();
        assert_eq!(
            ips(&set, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(set.capacity(), 5);
    }

    #[test]
    fn continues_after_last_reserved_and_wraps() {
        let set = RangeSet::new(vec![range("10.0.0.0/29", None, None)]).unwrap();
        assert_eq!(
            ips(&set, Some("10.0.0.4")),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // An address outside the set (config changed) restarts from the beginning.
        assert_eq!(ips(&set, Some("192.168.0.1"))[0], "10.0.0.2");
    }

    #[test]
    fn walks_several_ranges_in_order() {
        let set = RangeSet::new(vec![
            range("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.11")),
            range("10.0.1.0/24", Some("10.0.1.20"), Some("10.0.1.21")),
        ])
        .unwrap();
        assert_eq!(
            ips(&set, Some("10.0.0.11")),
            ["10.0.1.20", "10.0.1.21", "10.0.0.10", "10.0.0.11"]
        );
        assert_eq!(set.capacity(), 4);
        assert!(set.range_for("10.0.1.21".parse().unwrap()).is_some());
        assert!(set.range_for("10.0.1.22".parse().unwrap()).is_none());
    }

    #[test]
    fn ipv6_ranges_are_lazy() {
        let set = RangeSet::new(vec![range("fd00:213::/64", None, None)]).unwrap();
        let first: Vec<String> = set
            .candidates(None)
            .take(2)
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(first, ["fd00:213::2", "fd00:213::3"]);
        assert_eq!(set.capacity(), (1u128 << 64) - 2);
    }
}
