//! skiffd's configuration: a TOML file where every setting has a built-in default, so skiffd
//! runs with no file at all. `skiffd config default` prints the defaults.

use serde::{Deserialize, Serialize};
use skiff_runtime::image::unpack::{
    UnpackLimits, DEFAULT_MAX_LAYER_BYTES, DEFAULT_MAX_LAYER_ENTRIES,
};
use skiff_runtime::image::RegistryConfig;
use std::path::{Path, PathBuf};

/// Where skiffd looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/skiff/config.toml";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The CRI unix socket.
    pub socket: PathBuf,
    /// Persistent state: images, metadata.
    pub root_dir: PathBuf,
    /// Runtime state that does not survive a reboot.
    pub state_dir: PathBuf,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace` or a tracing directive); the
    /// `RUST_LOG` environment variable wins when set.
    pub log_level: String,
    /// Pod networking.
    pub cni: CniConfig,
    /// Registry mirrors and TLS settings.
    pub registry: RegistryConfig,
    /// Bounds on pulled images.
    pub images: ImagesConfig,
    /// The exec/attach/port-forward streaming server.
    pub streaming: crate::streaming::StreamingConfig,
}

/// Where CNI configuration and plugins live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Directory of `.conflist`/`.conf` files; the first by name is used.
    pub conf_dir: PathBuf,
    /// Directories searched for plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
    /// How long one plugin invocation may run before it is killed.
    pub plugin_timeout_secs: u64,
    /// A network config with `{{.PodCIDR}}` in it: when a kubelet passes the node's pod CIDR
    /// (UpdateRuntimeConfig), skiffd writes it, filled in, to `conf_dir` (as containerd's
    /// `conf_template`). Unset: the network config is the administrator's alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conf_template: Option<PathBuf>,
}

/// How much a pulled image may expand to on this node. A layer beyond a bound fails the pull
/// (RESOURCE_EXHAUSTED) and leaves nothing on disk: the defence against decompression bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Uncompressed bytes one layer may unpack to (its whole tar stream).
    pub max_layer_bytes: u64,
    /// Tar entries one layer may hold.
    pub max_layer_entries: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: DEFAULT_MAX_LAYER_ENTRIES,
        }
    }
}

impl ImagesConfig {
    /// The unpacker's limits.
    pub fn unpack_limits(&self) -> UnpackLimits {
        UnpackLimits {
            max_bytes: self.max_layer_bytes,
            max_entries: self.max_layer_entries,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/skiff/skiff.sock".into(),
            root_dir: "/var/lib/skiff".into(),
            state_dir: "/run/skiff".into(),
            log_level: "info".into(),
            cni: CniConfig::default(),
            registry: RegistryConfig::default(),
            images: ImagesConfig::default(),
            streaming: Default::default(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into()],
            plugin_timeout_secs: 30,
            conf_template: None,
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What the parser said (line, column, unknown key…).
        source: toml::de::Error,
    },
    /// A value is well-formed but unusable.
    #[error("{path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads `path`. A missing file is fine only at the default location (defaults apply);
    /// a file named explicitly must exist.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        if config.images.max_layer_bytes == 0 || config.images.max_layer_entries == 0 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: "images.max_layer_bytes and images.max_layer_entries must be above 0"
                    .into(),
            });
        }
        config
            .registry
            .validate()
            .map_err(|e| ConfigError::Invalid {
                path: path.into(),
                message: e.to_string(),
            })?;
        Ok(config)
    }

    /// The defaults as TOML, with the registry example a user most often needs.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Config::default())
            .unwrap_or_default()
            .replace(
                "[images]\n",
                "# A layer unpacking to more bytes or entries fails the pull (decompression bombs).\n\
                 [images]\n",
            );
        format!(
            "# skiffd configuration; every key is optional.\n{body}\n\
             # Registry mirrors, tried in order before the registry itself:\n\
             # [registry.hosts.\"registry.k8s.io\"]\n\
             # mirrors = [\"http://127.0.0.1:5000\"]\n\
             # skip_verify = false\n\
             # plain_http = false\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_defaults_load_back_as_the_defaults() {
        let parsed: Config = toml::from_str(&Config::default_toml()).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_a_named_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(&missing, true),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn unknown_keys_and_bad_mirrors_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "sockett = \"/x\"\n").unwrap();
        assert!(matches!(
            Config::load(&path, true),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(
            &path,
            "[registry.hosts.\"docker.io\"]\nmirrors = [\"ftp://x\"]\n",
        )
        .unwrap();
        assert!(matches!(
            Config::load(&path, true),
            Err(ConfigError::Invalid { .. })
        ));
        std::fs::write(
            &path,
            "socket = \"/tmp/s.sock\"\n[registry.hosts.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n",
        )
        .unwrap();
        let cfg = Config::load(&path, true).unwrap();
        assert_eq!(cfg.images, ImagesConfig::default());
        assert_eq!(cfg.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(cfg.root_dir, PathBuf::from("/var/lib/skiff"));
        assert_eq!(cfg.registry.hosts["registry.k8s.io"].mirrors.len(), 1);
    }

    #[test]
    fn layer_limits_default_to_16_gib_and_can_be_lowered_but_not_zeroed() {
        let defaults = Config::default_toml();
        assert!(
            defaults.contains("max_layer_bytes = 17179869184"),
            "{defaults}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[images]\nmax_layer_bytes = 1048576\n").unwrap();
        let limits = Config::load(&path, true).unwrap().images.unpack_limits();
        assert_eq!(limits.max_bytes, 1 << 20);
        assert_eq!(limits.max_entries, DEFAULT_MAX_LAYER_ENTRIES);
        std::fs::write(&path, "[images]\nmax_layer_entries = 0\n").unwrap();
        assert!(matches!(
            Config::load(&path, true),
            Err(ConfigError::Invalid { .. })
        ));
    }
}
