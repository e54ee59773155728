//! Registry configuration: mirrors, plain HTTP and TLS verification per registry host.
//!
//! The shape follows what containerd's `hosts.toml` offers, in one TOML table of skiffd's config:
//!
//! ```toml
//! [registry.hosts."registry.k8s.io"]
//! mirrors = ["http://127.0.0.1:5000"]   # tried in order, before registry.k8s.io itself
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Registry settings for the image service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Settings per registry host as it appears in image names (`docker.io`, `registry.k8s.io`,
    /// `127.0.0.1:5000`).
    pub hosts: BTreeMap<String, HostConfig>,
}

/// Settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Mirror endpoints tried in order before the host itself. `http://` means plain HTTP,
    /// `https://` TLS; without a scheme TLS is used (and plain HTTP after it for loopback hosts).
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to the host itself.
    pub plain_http: bool,
    /// Do not verify TLS certificates of this host and its mirrors.
    pub skip_verify: bool,
}

/// How to talk to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// TLS.
    Https,
    /// Plain HTTP.
    Http,
}

/// One place to try a pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to.
    pub host: String,
    /// Schemes to try, in order.
    pub schemes: Vec<Scheme>,
    /// Skip TLS verification.
    pub skip_verify: bool,
}

/// A registry configuration entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("registry config for {host:?}: {reason}")]
pub struct RegistryConfigError {
    /// The host table the problem is in.
    pub host: String,
    /// What is wrong.
    pub reason: String,
}

impl RegistryConfig {
    /// Checks every mirror endpoint once, at startup, so a typo fails loudly instead of at pull.
    pub fn validate(&self) -> Result<(), RegistryConfigError> {
        for (host, cfg) in &self.hosts {
            for mirror in &cfg.mirrors {
                parse_endpoint(mirror, cfg.skip_verify).map_err(|reason| RegistryConfigError {
                    host: host.clone(),
                    reason,
                })?;
            }
        }
        Ok(())
    }

    /// The endpoints to try for images named under `registry`, mirrors first. `upstream` is the
    /// host that serves `registry` itself (differs for Docker Hub).
    pub fn endpoints(&self, registry: &str, upstream: &str) -> Vec<Endpoint> {
        let host_cfg = self.hosts.get(registry).cloned().unwrap_or_default();
        let mut endpoints: Vec<Endpoint> = host_cfg
            .mirrors
            .iter()
            .filter_map(|m| parse_endpoint(m, host_cfg.skip_verify).ok())
            .collect();
        let schemes = if host_cfg.plain_http {
            vec![Scheme::Http]
        } else {
            default_schemes(upstream)
        };
        endpoints.push(Endpoint {
            host: upstream.to_string(),
            schemes,
            skip_verify: host_cfg.skip_verify,
        });
        endpoints
    }
}

/// Parses `http://host:port`, `https://host` or `host:port` into an endpoint.
fn parse_endpoint(raw: &str, skip_verify: bool) -> Result<Endpoint, String> {
    let (schemes, rest) = if let Some(rest) = raw.strip_prefix("http://") {
        (Some(vec![Scheme::Http]), rest)
    } else if let Some(rest) = raw.strip_prefix("https://") {
        (Some(vec![Scheme::Https]), rest)
    } else if raw.contains("://") {
        return Err(format!(
            "mirror {raw:?}: only http:// and https:// are supported"
        ));
    } else {
        (None, raw)
    };
    // The distribution API lives at /v2 of the host; accept that path spelled out, nothing else.
    let host = rest
        .trim_end_matches('/')
        .trim_end_matches("/v2")
        .to_string();
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("mirror {raw:?}: expected scheme://host[:port]"));
    }
    let schemes = schemes.unwrap_or_else(|| default_schemes(&host));
    Ok(Endpoint {
        host,
        schemes,
        skip_verify,
    })
}

/// TLS first; loopback registries also get plain HTTP, as Docker does for localhost.
fn default_schemes(host: &str) -> Vec<Scheme> {
    if is_loopback(host) {
        vec![Scheme::Https, Scheme::Http]
    } else {
        vec![Scheme::Https]
    }
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port == "localhost"
        || without_port
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_before_the_upstream_host() {
        let mut cfg = RegistryConfig::default();
        cfg.hosts.insert(
            "registry.k8s.io".into(),
            HostConfig {
                mirrors: vec![
                    "http://127.0.0.1:5000".into(),
                    "mirror.example:8443/v2/".into(),
                ],
                ..Default::default()
            },
        );
        cfg.validate().unwrap();
        let eps = cfg.endpoints("registry.k8s.io", "registry.k8s.io");
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert_eq!(eps[0].schemes, vec![Scheme::Http]);
        assert_eq!(eps[1].host, "mirror.example:8443");
        assert_eq!(eps[1].schemes, vec![Scheme::Https]);
        assert_eq!(eps[2].host, "registry.k8s.io");
    }

    #[test]
    fn loopback_hosts_fall_back_to_plain_http() {
        let cfg = RegistryConfig::default();
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "localhost",
        ] {
            let eps = cfg.endpoints(host, host);
            assert_eq!(eps[0].schemes, vec![Scheme::Https, Scheme::Http], "{host}");
        }
        let eps = cfg.endpoints("quay.io", "quay.io");
        assert_eq!(eps[0].schemes, vec![Scheme::Https]);
    }

    #[test]
    fn bad_mirrors_are_refused_at_load() {
        for bad in ["ftp://x", "http://", "http://a/b", "a b"] {
            let mut cfg = RegistryConfig::default();
            cfg.hosts.insert(
                "docker.io".into(),
                HostConfig {
                    mirrors: vec![bad.into()],
                    ..Default::default()
                },
            );
            assert!(cfg.validate().is_err(), "{bad:?} accepted");
        }
    }
}
