//! The ADD result, held in the newest (1.1.0) shape and converted on output to
//! whichever version the configuration asked for.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

use super::{CniVersion, Dns, IpNet};

/// Why a `prevResult` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// It is not a result object of a supported version.
    #[error("prevResult is not a valid CNI result: {0}")]
    Invalid(String),
}

/// One interface the attachment created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, "aa:bb:cc:dd:ee:ff".
    pub mac: String,
    /// MTU (1.1.0 output only).
    pub mtu: Option<u32>,
    /// The netns path for a container interface; empty for host interfaces.
    pub sandbox: String,
    /// Socket path (1.1.0 output only; we never set it, but pass it through).
    #[serde(rename = "socketPath")]
    pub socket_path: String,
    /// PCI id (1.1.0 output only; passed through).
    #[serde(rename = "pciID")]
    pub pci_id: String,
}

/// One assigned address.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    /// Address with prefix, e.g. "10.1.0.5/24".
    pub address: IpNet,
    /// The subnet's gateway, if any.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// One route the attachment created.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; when absent the address's gateway may be used.
    #[serde(default)]
    pub gw: Option<IpAddr>,
    /// Path MTU (1.1.0).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default)]
    pub advmss: Option<u32>,
    /// Route priority/metric (1.1.0).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default)]
    pub table: Option<u32>,
    /// Route scope: 0 global, 253 link, 254 host (1.1.0).
    #[serde(default)]
    pub scope: Option<u8>,
}

/// A CNI ADD result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CniResult {
    /// Interfaces created (bridge, host veth, container veth for skiff-bridge).
    pub interfaces: Vec<Interface>,
    /// Assigned addresses.
    pub ips: Vec<IpConfig>,
    /// Routes added in the container.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result (e.g. `prevResult`) of any supported version. Fields
    /// newer than the result's version are simply absent; `ips[].version`
    /// from pre-1.0 results is ignored since the address says its family.
    pub fn from_value(value: &Value) -> Result<CniResult, ResultError> {
        let version = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| ResultError::Invalid("missing cniVersion".into()))?;
        if CniVersion::parse(version).is_none() {
            return Err(ResultError::Invalid(format!(
                "unsupported result version {version:?}"
            )));
        }
        serde_json::from_value(value.clone()).map_err(|e| ResultError::Invalid(e.to_string()))
    }

    /// The result as JSON in the shape of `version`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let v1_1 = version >= CniVersion::V1_1_0;
        let pre_1_0 = version < CniVersion::V1_0_0;

        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));

        if !self.interfaces.is_empty() {
            let list = self.interfaces.iter().map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                insert_nonempty(&mut o, "mac", &i.mac);
                if v1_1 {
                    if let Some(mtu) = i.mtu {
                        o.insert("mtu".into(), json!(mtu));
                    }
                }
                insert_nonempty(&mut o, "sandbox", &i.sandbox);
                if v1_1 {
                    insert_nonempty(&mut o, "socketPath", &i.socket_path);
                    insert_nonempty(&mut o, "pciID", &i.pci_id);
                }
                Value::Object(o)
            });
            out.insert("interfaces".into(), Value::Array(list.collect()));
        }

        if !self.ips.is_empty() {
            let list = self.ips.iter().map(|ip| {
                let mut o = Map::new();
                if pre_1_0 {
                    // 0.3.x/0.4.0 carry the family explicitly.
                    let family = if ip.address.is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), json!(family));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(idx) = ip.interface {
                    o.insert("interface".into(), json!(idx));
                }
                Value::Object(o)
            });
            out.insert("ips".into(), Value::Array(list.collect()));
        }

        if !self.routes.is_empty() {
            let list = self.routes.iter().map(|r| {
                let mut o = Map::new();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), json!(gw.to_string()));
                }
                if v1_1 {
                    let extras = [
                        ("mtu", r.mtu),
                        ("advmss", r.advmss),
                        ("priority", r.priority),
                        ("table", r.table),
                        ("scope", r.scope.map(u32::from)),
                    ];
                    for (key, value) in extras {
                        if let Some(n) = value {
                            o.insert(key.into(), json!(n));
                        }
                    }
                }
                Value::Object(o)
            });
            out.insert("routes".into(), Value::Array(list.collect()));
        }

        // Always present (possibly empty), as the reference plugins print it.
        out.insert("dns".into(), json!(self.dns));
        Value::Object(out)
    }
}

fn insert_nonempty(o: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        o.insert(key.into(), json!(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:02".into(),
                    mtu: Some(1400),
                    sandbox: "/run/netns/x".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
                mtu: None,
                advmss: None,
                priority: Some(10),
                table: None,
                scope: None,
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn pre_1_0_results_carry_ip_version() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let j = sample().to_json(v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["ips"][1]["version"], "6");
            assert!(j["ips"][1].get("gateway").is_none());
            assert!(j["interfaces"][1].get("mtu").is_none());
            assert!(j["routes"][0].get("priority").is_none());
        }
    }

    #[test]
    fn v1_results_drop_ip_version_and_1_1_adds_extras() {
        let j = sample().to_json(CniVersion::V1_0_0);
        assert!(j["ips"][0].get("version").is_none());
        assert!(j["interfaces"][1].get("mtu").is_none());
        assert!(j["routes"][0].get("priority").is_none());

        let j = sample().to_json(CniVersion::V1_1_0);
        assert_eq!(j["interfaces"][1]["mtu"], 1400);
        assert_eq!(j["routes"][0]["priority"], 10);
        assert_eq!(j["interfaces"][1]["sandbox"], "/run/netns/x");
        assert!(j["interfaces"][0].get("sandbox").is_none());
        assert_eq!(j["dns"]["nameservers"][0], "10.1.0.1");
    }

    #[test]
    fn round_trips_through_every_version() {
        for v in [
            CniVersion::V0_3_0,
            CniVersion::V0_3_1,
            CniVersion::V0_4_0,
            CniVersion::V1_0_0,
            CniVersion::V1_1_0,
        ] {
            let back = CniResult::from_value(&sample().to_json(v)).unwrap();
            assert_eq!(back.ips, sample().ips);
            assert_eq!(back.interfaces.len(), 2);
            if v == CniVersion::V1_1_0 {
                assert_eq!(back, sample());
            }
        }
    }

    #[test]
    fn rejects_results_without_version() {
        assert!(CniResult::from_value(&json!({"ips": []})).is_err());
        assert!(CniResult::from_value(&json!({"cniVersion": "0.2.0"})).is_err());
    }
}
