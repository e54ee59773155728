//! Decoding the plugin configuration from stdin, and the well-known pieces
//! shared by plugins (`dns`, `runtimeConfig.portMappings`, GC attachments).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CniError, CniVersion, ErrorCode};

/// DNS settings, in configuration and in results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains, in priority order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// One `runtimeConfig.portMappings` entry (the `portMappings` capability).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// "tcp" (default), "udp" or "sctp".
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Only traffic to this host address is mapped; empty means any local address.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn default_protocol() -> String {
    "tcp".to_string()
}

/// The `runtimeConfig` object; only the capabilities we implement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Host port mappings.
    pub port_mappings: Vec<PortMapping>,
}

/// One element of `cni.dev/valid-attachments` in a GC request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID` of the attachment.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of the attachment.
    pub ifname: String,
}

/// Decodes a plugin configuration from `stdin` into `T` and returns it with
/// its `cniVersion`.
///
/// Errors: not JSON, not an object, or a field of the wrong type → 6 (decode);
/// `cniVersion` missing or unsupported → 1 (incompatible version).
pub fn parse_config<T: DeserializeOwned>(stdin: &[u8]) -> Result<(CniVersion, T), CniError> {
    let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "failed to decode network configuration",
            e.to_string(),
        )
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            ErrorCode::Decode,
            "failed to decode network configuration",
            "the configuration must be a JSON object",
        ));
    }
    let version = match value.get("cniVersion") {
        // Absent means the pre-0.2 era, which we do not speak.
        None => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                "incompatible CNI version",
                "the configuration has no cniVersion",
            ))
        }
        Some(serde_json::Value::String(s)) => CniVersion::parse(s).ok_or_else(|| {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                "incompatible CNI version",
                format!(
                    "cniVersion {s:?} is not supported; supported: {}",
                    super::SUPPORTED_VERSIONS.join(", ")
                ),
            )
        })?,
        Some(other) => {
            return Err(CniError::new(
                ErrorCode::Decode,
                "failed to decode network configuration",
                format!("cniVersion must be a string, got {other}"),
            ))
        }
    };
    let conf = serde_json::from_value(value).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "failed to decode network configuration",
            e.to_string(),
        )
    })?;
    Ok((version, conf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Conf {
        #[allow(dead_code)]
        name: String,
        #[serde(default, rename = "runtimeConfig")]
        runtime_config: RuntimeConfig,
    }

    #[test]
    fn decode_errors_map_to_spec_codes() {
        let err = parse_config::<Conf>(b"{not json").err().unwrap();
        assert_eq!(err.code, ErrorCode::Decode);
        let err = parse_config::<Conf>(b"[1]").err().unwrap();
        assert_eq!(err.code, ErrorCode::Decode);
        let err = parse_config::<Conf>(br#"{"name":"n"}"#).err().unwrap();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion);
        let err = parse_config::<Conf>(br#"{"cniVersion":"9.9.9","name":"n"}"#)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion);
        let err = parse_config::<Conf>(br#"{"cniVersion":"1.0.0","name":5}"#)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::Decode);
    }

    #[test]
    fn port_mappings_default_to_tcp() {
        let (v, c) = parse_config::<Conf>(
            br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}}"#,
        )
        .unwrap();
        assert_eq!(v, CniVersion::V1_1_0);
        assert_eq!(c.runtime_config.port_mappings[0].protocol, "tcp");
        assert_eq!(c.runtime_config.port_mappings[0].host_ip, "");
    }
}
