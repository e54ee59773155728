//! The network config written from a template once the node's pod CIDR is known. A kubelet
//! learns its node's range from the API server (`spec.podCIDR`, given by the controller
//! manager) and passes it down in UpdateRuntimeConfig; containerd's `conf_template` answers by
//! writing a CNI config from a template, and skiffd does the same, so a node's pods get
//! addresses from the node's own range without an agent writing files.

use super::conf::NetworkList;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The name of the file skiffd writes in the conf dir.
pub const GENERATED_CONF: &str = "10-skiff-pod-cidr.conflist";
/// Where the pod CIDR goes in the template (the first range if the kubelet sends several).
pub const POD_CIDR_PLACEHOLDER: &str = "{{.PodCIDR}}";

/// Why the config could not be written from the template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The kubelet sent something that is not a CIDR.
    #[error("pod CIDR {0:?} is not an IP network (address/prefix)")]
    BadCidr(String),
    /// The template could not be read, or the config not written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The template has no placeholder, or renders to an invalid network config.
    #[error("template {path}: {reason}")]
    Invalid {
        /// The template.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The first range of `pod_cidr` (a comma-separated list on dual-stack nodes), checked.
fn first_cidr(pod_cidr: &str) -> Result<&str, TemplateError> {
    let first = pod_cidr.split(',').next().unwrap_or_default().trim();
    let bad = || TemplateError::BadCidr(pod_cidr.to_string());
    let (addr, prefix) = first.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(first)
}

/// Renders `template` for `pod_cidr` into `conf_dir`/[`GENERATED_CONF`]. Returns whether the
/// file changed: the same CIDR again (the kubelet repeats itself) rewrites nothing.
pub fn write_from_template(
    template: &Path,
    conf_dir: &Path,
    pod_cidr: &str,
) -> Result<bool, TemplateError> {
    let cidr = first_cidr(pod_cidr)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TemplateError::Io { path, source }
    };
    let invalid = |reason: String| TemplateError::Invalid {
        path: template.into(),
        reason,
    };
    let text = std::fs::read_to_string(template).map_err(io(template))?;
    if !text.contains(POD_CIDR_PLACEHOLDER) {
        return Err(invalid(format!("no {POD_CIDR_PLACEHOLDER} in it")));
    }
    // The CIDR was checked above, so it cannot break out of the JSON string it lands in.
    let rendered = text.replace(POD_CIDR_PLACEHOLDER, cidr);
    let doc: Value =
        serde_json::from_str(&rendered).map_err(|e| invalid(format!("not JSON: {e}")))?;
    NetworkList::from_value(&doc).map_err(invalid)?;

    let target = conf_dir.join(GENERATED_CONF);
    if std::fs::read_to_string(&target).is_ok_and(|old| old == rendered) {
        return Ok(false);
    }
    std::fs::create_dir_all(conf_dir).map_err(io(conf_dir))?;
    // Write then rename: a pod created meanwhile reads the old config or the new one.
    let partial = conf_dir.join(format!(".{GENERATED_CONF}.tmp"));
    std::fs::write(&partial, &rendered).map_err(io(&partial))?;
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::find_network;

    const TEMPLATE: &str = r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[
        {"type":"skiff-bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"{{.PodCIDR}}"}]]}}]}"#;

    #[test]
    fn the_pod_cidr_lands_in_the_network_config_once() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template.conflist");
        std::fs::write(&template, TEMPLATE).unwrap();
        let conf_dir = dir.path().join("net.d");

        assert!(write_from_template(&template, &conf_dir, "10.244.3.0/24,fd00:3::/64").unwrap());
        let net = find_network(&conf_dir).unwrap();
        assert_eq!(net.path, conf_dir.join(GENERATED_CONF));
        let subnet = &net.list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"];
        assert_eq!(subnet, "10.244.3.0/24");

        assert!(!write_from_template(&template, &conf_dir, "10.244.3.0/24").unwrap());
        assert!(write_from_template(&template, &conf_dir, "10.244.4.0/24").unwrap());
        let net = find_network(&conf_dir).unwrap();
        assert_eq!(
            net.list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.4.0/24"
        );
        let names: Vec<_> = std::fs::read_dir(&conf_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![GENERATED_CONF], "no partial file is left");
    }

    #[test]
    fn bad_cidrs_and_templates_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("t.conflist");
        std::fs::write(&template, TEMPLATE).unwrap();
        let conf_dir = dir.path().join("net.d");
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/33",
            "x/24",
            "10.0.0.0/24\"}]",
            "::/129",
        ] {
            assert!(
                matches!(
                    write_from_template(&template, &conf_dir, bad),
                    Err(TemplateError::BadCidr(_))
                ),
                "{bad:?}"
            );
        }
        std::fs::write(&template, r#"{"name":"x","plugins":[]}"#).unwrap();
        let err = write_from_template(&template, &conf_dir, "10.0.0.0/24").unwrap_err();
        assert!(err.to_string().contains("{{.PodCIDR}}"), "{err}");
        std::fs::write(&template, r#"{"name":"{{.PodCIDR}}","plugins":[]}"#).unwrap();
        let err = write_from_template(&template, &conf_dir, "10.0.0.0/24").unwrap_err();
        assert!(err.to_string().contains("non-empty"), "{err}");
        let missing = dir.path().join("missing");
        assert!(matches!(
            write_from_template(&missing, &conf_dir, "10.0.0.0/24"),
            Err(TemplateError::Io { .. })
        ));
        assert!(!conf_dir.exists());
    }
}
