//! Loading the CNI network configuration from the conf dir, as libcni does: the first
//! `.conflist`, `.conf` or `.json` file by name.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A network configuration found on disk.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The network name.
    pub name: String,
    /// Plugin types in chain order.
    pub plugin_types: Vec<String>,
    /// The whole configuration as a list (a `.conf` wrapped into one), as
    /// plugins are run from it and the result cache keeps it.
    pub list: Value,
}

/// A validated network configuration list (section 1 of the CNI spec).
#[derive(Debug, Clone)]
pub(super) struct NetworkList {
    /// `name`.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// `cniVersions` (empty when absent).
    pub cni_versions: Vec<String>,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC`.
    pub disable_gc: bool,
    /// The plugin configuration objects, each with a string `type`.
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// Validates a configuration list; the error says what is wrong.
    pub fn from_value(doc: &Value) -> Result<NetworkList, String> {
        let name = doc
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("missing \"name\"")?
            .to_string();
        let plugins = doc
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or("\"plugins\" must be a non-empty list")?
            .iter()
            .map(|p| {
                let plugin = p.as_object().ok_or("a plugin is not an object")?;
                match plugin.get("type").and_then(Value::as_str) {
                    Some(t) if !t.is_empty() && !t.contains('/') => Ok(plugin.clone()),
                    Some(t) => Err(format!("plugin type {t:?} is not a file name")),
                    None => Err("a plugin has no \"type\"".to_string()),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cni_version = doc
            .get("cniVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or("missing \"cniVersion\"")?
            .to_string();
        let cni_versions = match doc.get("cniVersions") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|l| l.iter().map(|v| v.as_str().map(str::to_string)).collect())
                .ok_or("\"cniVersions\" must be a list of strings")?,
        };
        let flag = |key: &str| match doc.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => v.as_bool().ok_or(format!("\"{key}\" must be a boolean")),
        };
        Ok(NetworkList {
            name,
            cni_version,
            cni_versions,
            disable_check: flag("disableCheck")?,
            disable_gc: flag("disableGC")?,
            plugins,
        })
    }

    /// The `type` of each plugin, in chain order.
    pub fn plugin_types(&self) -> Vec<String> {
        self.plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl NetworkConfig {
    /// The first plugin of the chain that is in none of `bin_dirs`, if any.
    pub fn missing_plugin(&self, bin_dirs: &[PathBuf]) -> Option<&str> {
        self.plugin_types
            .iter()
            .find(|plugin| !bin_dirs.iter().any(|dir| dir.join(plugin).is_file()))
            .map(String::as_str)
    }
}

/// Why no usable network configuration was found.
#[derive(Debug, thiserror::Error)]
pub enum CniConfError {
    /// The directory has no config file.
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not a valid CNI config.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Finds and parses the network config in `conf_dir`.
pub fn find_network(conf_dir: &Path) -> Result<NetworkConfig, CniConfError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(CniConfError::Read {
                path: conf_dir.into(),
                source,
            })
        }
    };
    files.sort();
    let path = files
        .into_iter()
        .next()
        .ok_or_else(|| CniConfError::NoConfig(conf_dir.into()))?;
    parse(&path)
}

fn parse(path: &Path) -> Result<NetworkConfig, CniConfError> {
    let invalid = |reason: String| CniConfError::Invalid {
        path: path.into(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| CniConfError::Read {
        path: path.into(),
        source,
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    // A single-plugin .conf becomes a one-element list so callers see one shape.
    let list = if doc.get("plugins").is_some() {
        doc
    } else {
        serde_json::json!({
            "cniVersion": doc.get("cniVersion").cloned().unwrap_or(Value::Null),
            "name": doc.get("name").cloned().unwrap_or(Value::Null),
            "plugins": [doc],
        })
    };
    let parsed = NetworkList::from_value(&list).map_err(invalid)?;
    Ok(NetworkConfig {
        path: path.into(),
        name: parsed.name.clone(),
        plugin_types: parsed.plugin_types(),
        list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_by_name_wins_and_conf_is_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_network(dir.path()),
            Err(CniConfError::NoConfig(_))
        ));
        std::fs::write(
            dir.path().join("20-b.conf"),
            r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("10-a.txt"), "ignored").unwrap();
        let net = find_network(dir.path()).unwrap();
        assert_eq!(net.name, "b");
        assert_eq!(net.plugin_types, vec!["bridge"]);
        std::fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"skiff-bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        let net = find_network(dir.path()).unwrap();
        assert_eq!(net.plugin_types, vec!["skiff-bridge", "portmap"]);
    }

    #[test]
    fn broken_configs_say_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.conflist"),
            r#"{"name":"a","plugins":[]}"#,
        )
        .unwrap();
        let err = find_network(dir.path()).unwrap_err().to_string();
        assert!(err.contains("non-empty"), "{err}");
        std::fs::write(dir.path().join("a.conflist"), "{").unwrap();
        assert!(find_network(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }
}
