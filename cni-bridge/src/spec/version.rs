//! CNI specification versions this crate understands.

use std::fmt;

/// Every version `VERSION` reports, oldest first. Versions before 0.3.0 had a
/// different result shape (`ip4`/`ip6`) that nobody sends any more.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A supported CNI specification version.
///
/// The derived ordering follows release order, so `v >= CniVersion::V0_4_0`
/// reads as "this version knows CHECK".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    /// 0.3.0: the first "rich" result with `interfaces`, `ips`, `routes`.
    V0_3_0,
    /// 0.3.1: same shape as 0.3.0 (a typo fix).
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC, interface `mtu` and route attributes.
    V1_1_0,
}

impl CniVersion {
    /// The newest version, used when nothing else is known (e.g. error output
    /// before the configuration could be read).
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parses a version string; `None` for anything unsupported.
    pub fn parse(s: &str) -> Option<CniVersion> {
        match s {
            "0.3.0" => Some(CniVersion::V0_3_0),
            "0.3.1" => Some(CniVersion::V0_3_1),
            "0.4.0" => Some(CniVersion::V0_4_0),
            "1.0.0" => Some(CniVersion::V1_0_0),
            "1.1.0" => Some(CniVersion::V1_1_0),
            _ => None,
        }
    }

    /// The version as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_round_trips() {
        for s in SUPPORTED_VERSIONS {
            let v = CniVersion::parse(s).expect("supported");
            assert_eq!(v.as_str(), s);
        }
        assert_eq!(CniVersion::parse("0.2.0"), None);
        assert_eq!(CniVersion::parse("2.0.0"), None);
        assert!(CniVersion::V0_4_0 > CniVersion::V0_3_1);
    }
}
