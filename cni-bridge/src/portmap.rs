//! skiff-portmap: the `portMappings` capability, chained after skiff-bridge
//! (or any interface plugin) in a conflist, like the reference `portmap`.
//!
//! For each mapping and each container address of the mapping's family:
//! - DNAT `hostPort` → `containerIP:containerPort` for traffic to a local
//!   address (or to `hostIP` only), in prerouting (from outside or other
//!   pods) and in output (from the host itself, including 127.0.0.1);
//! - masquerade such DNATed connections coming from 127.0.0.0/8 (the reply
//!   must come back to the host, and 127/8 can't leave it) and from the pod
//!   subnet (hairpin: a pod reaching itself or a neighbour via the host);
//! - `route_localnet` on the host interfaces, so the kernel routes packets
//!   with a 127/8 source out of the bridge before they are masqueraded.
//!
//! Rules live in three chains per network in the `inet skiff-cni` table,
//! tagged with the attachment, so DEL and GC remove exactly theirs.

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;

use crate::nft::expr::{host, loopback4};
use crate::nft::{self, Chain, Expr, Family, Hook, L4Proto, Op, Rule};
use crate::plugin::{require_version, Outcome};
use crate::spec::{
    parse_config, Attachment, CniError, CniResult, CniVersion, Command, Environment, ErrorCode,
    IpConfig, PortMapping, RuntimeConfig,
};
use crate::{cmd_version, sysctl};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    name: String,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default = "yes")]
    snat: bool,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

fn yes() -> bool {
    true
}

/// A validated skiff-portmap configuration.
#[derive(Debug)]
pub struct PortmapConfig {
    /// The `cniVersion` requested.
    pub version: CniVersion,
    /// Network name (chain name suffix).
    pub name: String,
    /// Validated port mappings.
    pub mappings: Vec<Mapping>,
    /// Masquerade localhost and hairpin connections (default true).
    pub snat: bool,
    /// The previous plugin's result.
    pub prev_result: Option<CniResult>,
    /// GC: attachments still valid.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One validated port mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// Restrict to this host address.
    pub host_ip: Option<IpAddr>,
}

fn invalid(details: String) -> CniError {
    CniError::new(
        ErrorCode::InvalidConfig,
        "invalid network configuration",
        details,
    )
}

impl Mapping {
    fn from_raw(m: &PortMapping) -> Result<Mapping, CniError> {
        let protocol = m.protocol.to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            return Err(invalid(format!(
                "portMappings protocol {:?} is not tcp, udp or sctp",
                m.protocol
            )));
        }
        if m.host_port == 0 || m.container_port == 0 {
            return Err(invalid("portMappings ports must be 1-65535".into()));
        }
        let host_ip =
            match m.host_ip.as_str() {
                "" => None,
                s => Some(s.parse().map_err(|_| {
                    invalid(format!("portMappings hostIP {s:?} is not an IP address"))
                })?),
            };
        Ok(Mapping {
            host_port: m.host_port,
            container_port: m.container_port,
            protocol,
            host_ip,
        })
    }
}

impl PortmapConfig {
    /// Decodes and validates the configuration read from stdin.
    pub fn load(stdin: &[u8]) -> Result<PortmapConfig, CniError> {
        let (version, raw): (CniVersion, RawConf) = parse_config(stdin)?;
        if !crate::spec::valid_container_id(&raw.name) {
            return Err(invalid(format!("name {:?} is invalid", raw.name)));
        }
        let mappings = raw
            .runtime_config
            .port_mappings
            .iter()
            .map(Mapping::from_raw)
            .collect::<Result<Vec<_>, _>>()?;
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
        Ok(PortmapConfig {
            version,
            name: raw.name,
            mappings,
            snat: raw.snat,
            prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }

    /// Our three chains: DNAT from outside, DNAT from the host, SNAT.
    pub fn chains(&self) -> [Chain; 3] {
        [
            Chain {
                name: format!("hostport-dnat-{}", self.name),
                hook: Hook::Prerouting,
                prio: -100,
            },
            Chain {
                name: format!("hostport-out-{}", self.name),
                hook: Hook::Output,
                prio: -100,
            },
            Chain {
                name: format!("hostport-snat-{}", self.name),
                hook: Hook::Postrouting,
                prio: 100,
            },
        ]
    }

    /// The UDP host ports of the mappings.
    fn udp_ports(&self) -> Vec<nft::UdpPort> {
        self.mappings
            .iter()
            .filter(|m| m.protocol == "udp")
            .map(|m| nft::UdpPort {
                port: m.host_port,
                host_ip: m.host_ip,
            })
            .collect()
    }

    fn chain_names(&self) -> Vec<String> {
        self.chains().iter().map(|c| c.name.clone()).collect()
    }
}

/// skiff-portmap's dispatcher.
pub fn dispatch(command: Command, env: &Environment, stdin: &[u8]) -> Outcome {
    if command == Command::Version {
        return cmd_version::run(stdin).map(Some);
    }
    let conf = PortmapConfig::load(stdin)?;
    require_version(command, conf.version)?;
    let tag = || nft::tag(env.container_id(), env.ifname());
    match command {
        Command::Add => add(&conf, &tag()).map(Some),
        Command::Del => del(&conf, &tag()).map(|()| None),
        Command::Check => check(&conf, &tag()).map(|()| None),
        Command::Gc => gc(&conf).map(|()| None),
        Command::Status | Command::Version => status().map(|()| None),
    }
}

/// The container's addresses: those on interfaces inside a sandbox.
fn container_ips(prev: &CniResult) -> Vec<IpConfig> {
    prev.ips
        .iter()
        .filter(|ip| match ip.interface {
            Some(i) => prev
                .interfaces
                .get(i)
                .is_some_and(|intf| !intf.sandbox.is_empty()),
            None => true,
        })
        .cloned()
        .collect()
}

/// Builds every rule for the attachment `tag`.
pub fn rules(conf: &PortmapConfig, tag: &str, ips: &[IpConfig]) -> Vec<Rule> {
    let [dnat, out, snat] = conf.chains();
    let mut rules = Vec::new();
    for m in &conf.mappings {
        // Validated by `load`.
        let Ok(proto) = m.protocol.parse::<L4Proto>() else {
            continue;
        };
        for ip in ips {
            let pod = ip.address.addr;
            let family = Family::of(pod);
            if m.host_ip.is_some_and(|h| Family::of(h) != family) {
                continue;
            }
            let destination = match m.host_ip {
                Some(h) => Expr::daddr(Op::Eq, host(h)),
                None => Expr::DaddrIsLocal,
            };
            let dnat_expr = vec![
                Expr::Nfproto(family),
                destination,
                Expr::L4proto(proto),
                Expr::Dport {
                    proto,
                    op: Op::Eq,
                    port: m.host_port,
                },
                Expr::Dnat {
                    addr: pod,
                    port: m.container_port,
                },
            ];
            for chain in [&dnat, &out] {
                rules.push(Rule {
                    chain: chain.name.clone(),
                    comment: tag.to_string(),
                    expr: dnat_expr.clone(),
                });
            }
            if conf.snat {
                // One rule per source network: a rule is a conjunction, and
                // matching "subnet or 127/8" in one rule would need an
                // anonymous set (two more message kinds and interval
                // elements) for a two-element list.
                let mut sources = vec![ip.address.truncated()];
                if family == Family::Ipv4 {
                    sources.push(loopback4());
                }
                for source in sources {
                    rules.push(Rule {
                        chain: snat.name.clone(),
                        comment: tag.to_string(),
                        expr: vec![
                            Expr::daddr(Op::Eq, host(pod)),
                            Expr::L4proto(proto),
                            Expr::Dport {
                                proto,
                                op: Op::Eq,
                                port: m.container_port,
                            },
                            Expr::CtStatusDnat,
                            Expr::saddr(Op::Eq, source),
                            Expr::Masquerade,
                        ],
                    });
                }
            }
        }
    }
    rules
}

/// ADD: install the mappings and pass `prevResult` through.
pub fn add(conf: &PortmapConfig, tag: &str) -> Result<Value, CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        invalid("skiff-portmap must be chained after an interface plugin (no prevResult)".into())
    })?;
    let ips = container_ips(prev);
    let rules = rules(conf, tag, &ips);
    if !rules.is_empty() {
        let needs_localnet = conf.snat
            && ips.iter().any(|ip| ip.address.is_ipv4())
            && conf
                .mappings
                .iter()
                .all(|m| m.host_ip.is_none_or(|h| h.is_ipv4()));
        if needs_localnet {
            for intf in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
                sysctl::ensure(&["net", "ipv4", "conf", &intf.name, "route_localnet"], "1")?;
            }
        }
        nft::add_rules(&conf.chains(), &rules)?;
        // After the rules, so that the flows forgotten restart through them. Best effort, as
        // in the reference plugin: a flow left stale holds up one client, not the pod.
        let _ = nft::forget_udp_flows(&conf.udp_ports());
    }
    Ok(prev.to_json(conf.version))
}

/// DEL: remove the attachment's rules (none is fine).
pub fn del(conf: &PortmapConfig, tag: &str) -> Result<(), CniError> {
    let names = conf.chain_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    nft::delete_rules_where(&refs, |c| c == tag)?;
    Ok(())
}

/// CHECK: every expected rule is present.
pub fn check(conf: &PortmapConfig, tag: &str) -> Result<(), CniError> {
    let Some(prev) = &conf.prev_result else {
        return Err(invalid("CHECK needs prevResult".into()));
    };
    let want = rules(conf, tag, &container_ips(prev)).len();
    let names = conf.chain_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let have = nft::list_rules(&refs)?
        .iter()
        .filter(|r| r.comment == tag)
        .count();
    if have < want {
        return Err(CniError::new(
            ErrorCode::CheckFailed,
            "CHECK failed",
            format!("{have} of {want} port mapping rules present"),
        ));
    }
    Ok(())
}

/// GC: remove rules of attachments not in `cni.dev/valid-attachments`.
pub fn gc(conf: &PortmapConfig) -> Result<(), CniError> {
    let valid: HashSet<String> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| invalid("GC needs cni.dev/valid-attachments".into()))?
        .iter()
        .map(|a| nft::tag(&a.container_id, &a.ifname))
        .collect();
    let names = conf.chain_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    nft::delete_rules_where(&refs, |c| !valid.contains(c))?;
    Ok(())
}

/// STATUS: we only need nftables.
pub fn status() -> Result<(), CniError> {
    if nft::available() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::NotAvailable,
            "nftables unavailable",
            "the kernel's nf_tables does not answer over netlink",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREV: &str = r#"{"cniVersion":"1.1.0",
        "interfaces":[{"name":"br0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/x"}],
        "ips":[{"address":"10.213.0.5/24","gateway":"10.213.0.1","interface":2},
               {"address":"fd00:213::5/64","interface":2}]}"#;

    fn conf(mappings: &str) -> PortmapConfig {
        let json = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"skiff-portmap",
                "runtimeConfig":{{"portMappings":{mappings}}},"prevResult":{PREV}}}"#
        );
        PortmapConfig::load(json.as_bytes()).unwrap()
    }

    #[test]
    fn one_mapping_gives_dnat_in_both_hooks_and_snat_per_family() {
        let c = conf(r#"[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]"#);
        let ips = container_ips(c.prev_result.as_ref().unwrap());
        let r = rules(&c, "id/eth0", &ips);
        // 2 families × (prerouting + output), snat from the subnet (and
        // from 127/8 for IPv4)
        assert_eq!(r.len(), 7);
        assert!(r.iter().all(|r| r.comment == "id/eth0"));
        let pod: IpAddr = "10.213.0.5".parse().unwrap();
        assert_eq!(r[0].chain, "hostport-dnat-n");
        assert!(r[0].expr.contains(&Expr::Dnat {
            addr: pod,
            port: 80
        }));
        assert!(r[0].expr.contains(&Expr::Dport {
            proto: L4Proto::Tcp,
            op: Op::Eq,
            port: 8080
        }));
        let snat: Vec<&Rule> = r.iter().filter(|r| r.chain == "hostport-snat-n").collect();
        assert_eq!(snat.len(), 3);
        assert!(snat[1].expr.contains(&Expr::saddr(Op::Eq, loopback4())));
    }

    #[test]
    fn host_ip_limits_the_family() {
        let c = conf(r#"[{"hostPort":8080,"containerPort":80,"hostIP":"127.0.0.1"}]"#);
        let ips = container_ips(c.prev_result.as_ref().unwrap());
        // dnat, out, snat from the subnet and from 127/8
        assert_eq!(rules(&c, "t", &ips).len(), 4);
    }

    #[test]
    fn bad_mappings_are_invalid_config() {
        for m in [
            r#"[{"hostPort":8080,"containerPort":80,"protocol":"icmp"}]"#,
            r#"[{"hostPort":0,"containerPort":80}]"#,
            r#"[{"hostPort":1,"containerPort":80,"hostIP":"nope"}]"#,
        ] {
            let json = format!(
                r#"{{"cniVersion":"1.1.0","name":"n","runtimeConfig":{{"portMappings":{m}}}}}"#
            );
            let err = PortmapConfig::load(json.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{m}");
        }
        let json = r#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":"x","containerPort":80}]}}"#;
        assert_eq!(
            PortmapConfig::load(json.as_bytes()).unwrap_err().code,
            ErrorCode::Decode
        );
    }
}
