//! The `ipam` section of the configuration, as host-local reads it.

use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

use super::{IpamError, Range, RangeSet};
use crate::spec::{Dns, IpNet, Route};

/// Where leases live when `dataDir` is not set (host-local's default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The raw `ipam` section. Addresses are kept as strings so that a bad value
/// is reported as an invalid configuration (code 7) naming the field, while
/// a wrong JSON type is a decode error (code 6).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// "host-local" or "skiff"; both select the bundled IPAM.
    #[serde(default, rename = "type")]
    pub ipam_type: String,
    /// Legacy single-range form: `subnet` (with optional start/end/gateway).
    pub subnet: Option<String>,
    /// Legacy single-range form: first address to hand out.
    pub range_start: Option<String>,
    /// Legacy single-range form: last address to hand out.
    pub range_end: Option<String>,
    /// Legacy single-range form: gateway.
    pub gateway: Option<String>,
    /// Range sets: one address is leased from each set.
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    /// Routes to add in the container.
    #[serde(default)]
    pub routes: Vec<RouteConf>,
    /// Lease directory (default `/var/lib/cni/networks`).
    pub data_dir: Option<String>,
    /// A resolv.conf-style file whose contents become the result's `dns`.
    pub resolv_conf: Option<String>,
}

/// One range of a range set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    /// The subnet, e.g. "10.22.0.0/16" (no host bits).
    pub subnet: String,
    /// First address to hand out (default: subnet + 1).
    pub range_start: Option<String>,
    /// Last address to hand out (default: broadcast - 1, or the last IPv6 address).
    pub range_end: Option<String>,
    /// Gateway (default: subnet + 1). Never handed out.
    pub gateway: Option<String>,
}

/// One entry of `ipam.routes`.
#[derive(Clone, Debug, Deserialize)]
pub struct RouteConf {
    /// Destination, e.g. "0.0.0.0/0".
    pub dst: String,
    /// Next hop; default: the gateway of the address's range.
    pub gw: Option<String>,
}

/// A validated `ipam` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// One address is leased from each set.
    pub range_sets: Vec<RangeSet>,
    /// Routes for the container.
    pub routes: Vec<Route>,
    /// Lease directory; leases go in `<data_dir>/<network name>/`.
    pub data_dir: PathBuf,
    /// DNS read from `resolvConf`.
    pub dns: Dns,
}

impl IpamConf {
    /// Checks every value and builds the ranges, as host-local does.
    pub fn validate(&self) -> Result<IpamConfig, IpamError> {
        if !matches!(self.ipam_type.as_str(), "host-local" | "skiff") {
            return Err(IpamError::UnsupportedType(self.ipam_type.clone()));
        }

        let mut raw_sets = self.ranges.clone();
        if let Some(subnet) = &self.subnet {
            // The legacy form is one more range set, listed first.
            raw_sets.insert(
                0,
                vec![RangeConf {
                    subnet: subnet.clone(),
                    range_start: self.range_start.clone(),
                    range_end: self.range_end.clone(),
                    gateway: self.gateway.clone(),
                }],
            );
        }
        if raw_sets.is_empty() {
            return Err(IpamError::Config("no IP ranges specified".into()));
        }

        let mut range_sets = Vec::new();
        for (i, raw_set) in raw_sets.iter().enumerate() {
            if raw_set.is_empty() {
                return Err(IpamError::Config(format!("ranges[{i}] is empty")));
            }
            let ranges = raw_set
                .iter()
                .map(Range::from_conf)
                .collect::<Result<Vec<_>, _>>()?;
            range_sets.push(RangeSet::new(ranges)?);
        }
        for (i, a) in range_sets.iter().enumerate() {
            for b in &range_sets[i + 1..] {
                if a.overlaps(b) {
                    return Err(IpamError::Config(format!(
                        "range set {a} overlaps with {b}"
                    )));
                }
            }
        }

        let routes = self
            .routes
            .iter()
            .map(|r| {
                let dst: IpNet = r
                    .dst
                    .parse()
                    .map_err(|e| IpamError::Config(format!("routes: {e}")))?;
                let gw = match &r.gw {
                    Some(gw) => Some(parse_ip("routes[].gw", gw)?),
                    None => None,
                };
                Ok(Route {
                    dst: dst.truncated(),
                    gw,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                })
            })
            .collect::<Result<Vec<_>, IpamError>>()?;

        let dns = match &self.resolv_conf {
            Some(path) if !path.is_empty() => read_resolv_conf(path)?,
            _ => Dns::default(),
        };

        Ok(IpamConfig {
            range_sets,
            routes,
            data_dir: PathBuf::from(self.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)),
            dns,
        })
    }
}

/// Parses an address field, naming it in the error.
pub(super) fn parse_ip(field: &str, s: &str) -> Result<IpAddr, IpamError> {
    s.parse()
        .map_err(|_| IpamError::Config(format!("{field}: {s:?} is not an IP address")))
}

/// Reads nameserver/domain/search/options lines from a resolv.conf file.
fn read_resolv_conf(path: &str) -> Result<Dns, IpamError> {
    let text = std::fs::read_to_string(path).map_err(|source| IpamError::Io {
        path: path.into(),
        source,
    })?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.map(String::from)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search.extend(words.map(String::from)),
            Some("options") => dns.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> IpamConf {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn legacy_subnet_and_ranges_combine() {
        let c = conf(
            r#"{"type":"host-local","subnet":"10.1.0.0/24",
                "ranges":[[{"subnet":"fd00:213::/64"}]],
                "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00:213::1"}],
                "dataDir":"/tmp/x"}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(c.range_sets.len(), 2);
        assert_eq!(c.range_sets[0].ranges[0].gateway.to_string(), "10.1.0.1");
        assert_eq!(c.range_sets[0].ranges[0].start.to_string(), "10.1.0.1");
        assert_eq!(c.range_sets[0].ranges[0].end.to_string(), "10.1.0.254");
        assert_eq!(
            c.range_sets[1].ranges[0].end.to_string(),
            "fd00:213::ffff:ffff:ffff:ffff"
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn rejects_invalid_values() {
        let bad = [
            r#"{"type":"dhcp","subnet":"10.1.0.0/24"}"#,
            r#"{"type":"host-local"}"#,
            r#"{"type":"host-local","subnet":"10.1.0.5/24"}"#,
            r#"{"type":"host-local","subnet":"10.1.0.0/31"}"#,
            r#"{"type":"host-local","subnet":"banana"}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"fd00::/64"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/25"}]]}"#,
            r#"{"type":"host-local","subnet":"10.1.0.0/24","routes":[{"dst":"nope"}]}"#,
        ];
        for json in bad {
            assert!(conf(json).validate().is_err(), "{json} should be rejected");
        }
        assert!(matches!(
            conf(bad[0]).validate(),
            Err(IpamError::UnsupportedType(_))
        ));
    }

    #[test]
    fn reads_resolv_conf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# c\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch a.b c.d\noptions ndots:5\ndomain x.y\n",
        )
        .unwrap();
        let c = IpamConf {
            ipam_type: "skiff".into(),
            subnet: Some("10.1.0.0/24".into()),
            resolv_conf: Some(path.display().to_string()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.dns.nameservers, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(c.dns.search, ["a.b", "c.d"]);
        assert_eq!(c.dns.options, ["ndots:5"]);
        assert_eq!(c.dns.domain, "x.y");
    }
}
