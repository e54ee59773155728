//! The skiff-bridge configuration: the reference bridge plugin's fields plus
//! the CNI protocol fields, decoded and validated.

use serde::Deserialize;
use serde_json::Value;

use crate::ipam::{IpamConf, IpamConfig};
use crate::spec::{
    parse_config, Attachment, CniError, CniResult, CniVersion, Dns, ErrorCode, IpNet,
};

/// The bridge used when the configuration names none.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The configuration as it arrives on stdin.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_exclude: Vec<IpNet>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    ipam: Option<IpamConf>,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,

    // Reference bridge features we do not implement: rejected with code 2
    // when they ask for something, rather than silently ignored.
    #[serde(default)]
    vlan: Option<Value>,
    #[serde(default)]
    vlan_trunk: Option<Value>,
    #[serde(default)]
    macspoofchk: Option<Value>,
    #[serde(default)]
    enabledad: Option<Value>,
    #[serde(default)]
    disable_container_interface: Option<Value>,
    #[serde(default)]
    port_isolation: Option<Value>,
}

/// A validated skiff-bridge configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `cniVersion` requested.
    pub version: CniVersion,
    /// Network name (also the lease directory and nftables chain suffix).
    pub name: String,
    /// Bridge name (default `cni0`).
    pub bridge: String,
    /// Give the bridge the gateway address and enable forwarding.
    pub is_gateway: bool,
    /// Add a default route via the gateway in the container (implies `is_gateway`).
    pub is_default_gateway: bool,
    /// Replace a different address of the same subnet on the bridge.
    pub force_address: bool,
    /// Masquerade traffic leaving the subnet.
    pub ip_masq: bool,
    /// With `ip_masq`, destinations that keep the pod's address too (`ipMasqExclude`): a
    /// cluster's other nodes' pod networks, reached by routes, not NAT.
    pub ip_masq_exclude: Vec<IpNet>,
    /// MTU for the bridge (when created) and both veth ends.
    pub mtu: Option<u32>,
    /// Hairpin mode on the host veth's bridge port.
    pub hairpin_mode: bool,
    /// Promiscuous mode on the bridge.
    pub promisc_mode: bool,
    /// Bundled IPAM; `None` means layer 2 only (no addresses).
    pub ipam: Option<IpamConfig>,
    /// DNS from the configuration (overrides IPAM's when set).
    pub dns: Dns,
    /// The previous result (CHECK, DEL, chained ADD).
    pub prev_result: Option<CniResult>,
    /// GC: attachments that are still valid.
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn invalid(details: String) -> CniError {
    CniError::new(
        ErrorCode::InvalidConfig,
        "invalid network configuration",
        details,
    )
}

/// Is `v` a value that turns a feature on (true, non-zero, non-empty)?
fn asks_for_something(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The spec's network name rule; names also become file and chain names.
fn valid_network_name(name: &str) -> bool {
    crate::spec::valid_container_id(name) && name != "." && name != ".."
}

impl Config {
    /// Decodes and validates the configuration read from stdin.
    pub fn load(stdin: &[u8]) -> Result<Config, CniError> {
        let (version, raw): (CniVersion, RawConf) = parse_config(stdin)?;

        let unsupported = [
            ("vlan", &raw.vlan),
            ("vlanTrunk", &raw.vlan_trunk),
            ("macspoofchk", &raw.macspoofchk),
            ("enabledad", &raw.enabledad),
            (
                "disableContainerInterface",
                &raw.disable_container_interface,
            ),
            ("portIsolation", &raw.port_isolation),
        ];
        for (key, value) in unsupported {
            if let Some(v) = value.as_ref().filter(|v| asks_for_something(v)) {
                return Err(CniError::new(
                    ErrorCode::UnsupportedField,
                    "unsupported field in network configuration",
                    format!("{key}={v} is not supported by skiff-bridge"),
                ));
            }
        }

        if !valid_network_name(&raw.name) {
            return Err(invalid(format!(
                "name {:?} is invalid: it must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'",
                raw.name
            )));
        }
        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if !crate::spec::valid_ifname(&bridge) {
            return Err(invalid(format!(
                "bridge {bridge:?} is not a valid interface name"
            )));
        }
        // 0 means "unset", as in the reference plugin.
        let mtu = raw.mtu.filter(|m| *m != 0);
        if let Some(m) = mtu {
            if !(68..=65535).contains(&m) {
                return Err(invalid(format!("mtu {m} is out of range (68-65535)")));
            }
        }
        // No ipam section, or one without a type, means layer 2 only.
        let ipam = match raw.ipam {
            Some(ipam) if !ipam.ipam_type.is_empty() => Some(ipam.validate()?),
            _ => None,
        };
        let prev_result = match raw.prev_result {
            Some(v) => Some(CniResult::from_value(&v).map_err(|e| {
                CniError::new(
                    ErrorCode::Decode,
                    "failed to decode prevResult",
                    e.to_string(),
                )
            })?),
            None => None,
        };

        Ok(Config {
            version,
            name: raw.name,
            bridge,
            // isDefaultGateway needs the gateway on the bridge to route through.
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            ip_masq_exclude: raw.ip_masq_exclude,
            mtu,
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            ipam,
            dns: raw.dns,
            prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }

    /// The nftables chain holding this network's masquerade rules.
    pub fn masq_chain(&self) -> String {
        format!("masq-{}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Config, CniError> {
        Config::load(json.as_bytes())
    }

    #[test]
    fn defaults_match_the_reference_plugin() {
        let c = load(r#"{"cniVersion":"1.0.0","name":"net1","type":"skiff-bridge"}"#).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.hairpin_mode);
        assert!(c.ipam.is_none());
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn full_config_parses() {
        let c = load(
            r#"{"cniVersion":"1.1.0","name":"net1","type":"skiff-bridge","bridge":"br9",
                "isDefaultGateway":true,"ipMasq":true,"mtu":1400,"hairpinMode":true,"promiscMode":true,
                "ipam":{"type":"host-local","ranges":[[{"subnet":"10.213.0.0/24"}],[{"subnet":"fd00:213::/64"}]]},
                "dns":{"nameservers":["10.213.0.1"]}}"#,
        )
        .unwrap();
        assert!(c.is_gateway, "isDefaultGateway implies isGateway");
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.ipam.unwrap().range_sets.len(), 2);
        assert_eq!(c.dns.nameservers, ["10.213.0.1"]);
        assert_eq!(c.version, CniVersion::V1_1_0);
    }

    #[test]
    fn errors_have_the_right_codes() {
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#,
                ErrorCode::Decode,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","isGateway":"yes"}"#,
                ErrorCode::Decode,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":5}}"#,
                ErrorCode::Decode,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":""}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b"}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","bridge":"way-too-long-bridge-name"}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":10}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.0.0.0/99"}}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp"}}"#,
                ErrorCode::UnsupportedField,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","vlan":100}"#,
                ErrorCode::UnsupportedField,
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n"}"#,
                ErrorCode::IncompatibleVersion,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[]}}"#,
                ErrorCode::Decode,
            ),
        ];
        for (json, code) in cases {
            let err = load(json)
                .err()
                .unwrap_or_else(|| panic!("{json} should fail"));
            assert_eq!(err.code, code, "{json}: {err}");
        }
        // Features switched off explicitly are fine.
        assert!(load(r#"{"cniVersion":"1.0.0","name":"n","vlan":0,"macspoofchk":false}"#).is_ok());
    }
}
