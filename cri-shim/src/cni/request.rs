//! Deriving a plugin's request (its stdin) from its configuration object, per the spec's
//! "Deriving request configuration from plugin configuration" and "Deriving runtimeConfig".

use serde_json::{json, Map, Value};
use skiff_proto::runtime::v1::{PortMapping, Protocol};

use super::CniError;

/// What the request is for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Purpose<'a> {
    /// ADD, DEL or CHECK: the previous result (none for the first ADD) and the capability
    /// arguments skiffd provides.
    Attach {
        /// `prevResult`.
        prev: Option<&'a Value>,
        /// Capability name → value, e.g. `portMappings`.
        capability_args: &'a Map<String, Value>,
    },
    /// GC: the still valid attachments.
    Gc {
        /// `cni.dev/valid-attachments`.
        valid: &'a Value,
    },
    /// STATUS: only the configuration.
    Status,
}

/// The request for one plugin: its configuration with `name` and `cniVersion` inserted, the
/// runtime-generated keys set for `purpose`, and `capabilities` removed.
pub(super) fn derive(
    plugin: &Map<String, Value>,
    network: &str,
    version: &str,
    purpose: Purpose<'_>,
) -> Value {
    let mut conf = plugin.clone();
    let capabilities = conf.remove("capabilities");
    // Reserved for the runtime: whatever a config file put there is not ours to pass on.
    conf.retain(|key, _| !key.starts_with("cni.dev/"));
    conf.remove("runtimeConfig");
    conf.remove("prevResult");
    conf.insert("name".into(), json!(network));
    conf.insert("cniVersion".into(), json!(version));
    match purpose {
        Purpose::Attach {
            prev,
            capability_args,
        } => {
            let declared = |name: &str| {
                capabilities
                    .as_ref()
                    .and_then(|c| c.get(name))
                    .and_then(Value::as_bool)
                    == Some(true)
            };
            let runtime: Map<String, Value> = capability_args
                .iter()
                .filter(|(name, _)| declared(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            if !runtime.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime));
            }
            if let Some(prev) = prev {
                conf.insert("prevResult".into(), prev.clone());
            }
        }
        Purpose::Gc { valid } => {
            conf.insert("cni.dev/valid-attachments".into(), valid.clone());
        }
        Purpose::Status => {}
    }
    Value::Object(conf)
}

/// The capability arguments of a pod: `portMappings` from the CRI's port mappings that have a
/// host port (the others only document a container port).
pub(super) fn capability_args(mappings: &[PortMapping]) -> Result<Map<String, Value>, CniError> {
    let port = |what: &str, p: i32| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| CniError::InvalidAttachment(format!("{what} {p} is not 1-65535")))
    };
    let mut list = Vec::new();
    for m in mappings.iter().filter(|m| m.host_port != 0) {
        let protocol = match Protocol::try_from(m.protocol) {
            Ok(Protocol::Tcp) => "tcp",
            Ok(Protocol::Udp) => "udp",
            Ok(Protocol::Sctp) => "sctp",
            Err(_) => {
                return Err(CniError::InvalidAttachment(format!(
                    "unknown port mapping protocol {}",
                    m.protocol
                )))
            }
        };
        let mut entry = json!({
            "hostPort": port("hostPort", m.host_port)?,
            "containerPort": port("containerPort", m.container_port)?,
            "protocol": protocol,
        });
        if !m.host_ip.is_empty() {
            entry["hostIP"] = json!(m.host_ip);
        }
        list.push(entry);
    }
    let mut args = Map::new();
    if !list.is_empty() {
        args.insert("portMappings".into(), Value::Array(list));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let args = capability_args(&[PortMapping {
            protocol: Protocol::Udp as i32,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        }])
        .unwrap();
        let prev = json!({"cniVersion": "1.1.0", "ips": []});
        let attach = Purpose::Attach {
            prev: Some(&prev),
            capability_args: &args,
        };

        let pm = plugin(
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true},
            "runtimeConfig": {"stale": 1}, "cni.dev/x": 1, "snat": false}),
        );
        let req = derive(&pm, "net", "1.1.0", attach);
        assert_eq!(
            req,
            json!({"type": "portmap", "name": "net", "cniVersion": "1.1.0", "snat": false,
                "prevResult": prev,
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]}})
        );

        let bridge = plugin(json!({"type": "bridge", "name": "other", "cniVersion": "0.1.0"}));
        let first = Purpose::Attach {
            prev: None,
            capability_args: &args,
        };
        assert_eq!(
            derive(&bridge, "net", "1.0.0", first),
            json!({"type": "bridge", "name": "net", "cniVersion": "1.0.0"})
        );

        let valid = json!([{"containerID": "a", "ifname": "eth0"}]);
        let gc = derive(&pm, "net", "1.1.0", Purpose::Gc { valid: &valid });
        assert_eq!(gc["cni.dev/valid-attachments"], valid);
        assert!(gc.get("runtimeConfig").is_none() && gc.get("capabilities").is_none());
    }

    #[test]
    fn port_mappings_without_host_port_are_skipped_and_bad_ones_refused() {
        let m = |protocol: i32, container_port: i32, host_port: i32| PortMapping {
            protocol,
            container_port,
            host_port,
            host_ip: String::new(),
        };
        assert!(capability_args(&[m(0, 80, 0)]).unwrap().is_empty());
        let args = capability_args(&[m(Protocol::Sctp as i32, 80, 8080)]).unwrap();
        assert_eq!(
            args["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}])
        );
        assert!(capability_args(&[m(9, 80, 8080)]).is_err());
        assert!(capability_args(&[m(0, 80, 70000)]).is_err());
        assert!(capability_args(&[m(0, 0, 8080)]).is_err());
    }
}
