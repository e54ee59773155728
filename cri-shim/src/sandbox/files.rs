//! The files every container of a pod shares: `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf`, generated from the CRI config into the sandbox directory.

use skiff_proto::runtime::v1 as cri;
use std::path::{Path, PathBuf};

/// Paths of the generated files.
#[derive(Debug, Clone)]
pub struct PodFiles {
    /// `/etc/hostname` source.
    pub hostname: PathBuf,
    /// `/etc/hosts` source.
    pub hosts: PathBuf,
    /// `/etc/resolv.conf` source.
    pub resolv_conf: PathBuf,
}

impl PodFiles {
    /// Where the files of the sandbox in `dir` live.
    pub fn in_dir(dir: &Path) -> Self {
        PodFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
        }
    }
}

/// resolv.conf from the CRI DNS config, as kubelet expects the runtime to write it.
pub fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// /etc/hosts for a pod: loopback names, then the pod's own IPs with its hostname.
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// Writes the three files. With host networking the host's own hosts and resolv.conf are copied
/// (as containerd does), unless the CRI gives DNS settings.
pub fn write(
    files: &PodFiles,
    hostname: &str,
    ips: &[String],
    dns: Option<&cri::DnsConfig>,
    host_network: bool,
) -> std::io::Result<()> {
    std::fs::write(&files.hostname, format!("{hostname}\n"))?;
    let hosts_text = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts(hostname, ips))
    } else {
        hosts(hostname, ips)
    };
    std::fs::write(&files.hosts, hosts_text)?;
    let resolv = match dns {
        Some(dns) => resolv_conf(dns),
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(&files.resolv_conf, resolv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_servers_searches_and_options() {
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&cri::DnsConfig::default()), "");
    }

    #[test]
    fn hosts_names_the_pod_ip() {
        let text = hosts("web", &["10.77.0.5".into()]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.77.0.5\tweb\n"));
    }
}
