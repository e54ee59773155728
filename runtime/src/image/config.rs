//! The parts of an OCI/Docker image config that skiff uses.
//!
//! The whole config is kept as raw JSON in the metadata database; this typed view is what the
//! image service (uid/username) and container creation (entrypoint, env, user…) read from it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An image config file (`application/vnd.oci.image.config.v1+json` or Docker's equivalent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfigFile {
    /// CPU architecture, e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// Defaults for containers run from the image.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The uncompressed layer digests, bottom first.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// DiffIDs of the layers, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` of an image config: the container defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Entrypoint argv.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Image labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Signal to stop the container with.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Declared volumes.
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}

/// Who the image runs as, as the CRI reports it: a numeric uid or a user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    /// `USER 1000` or `USER 1000:1000`.
    Uid(i64),
    /// `USER skiff` or `USER skiff:staff`.
    Name(String),
}

impl ImageConfigFile {
    /// Parses a config blob.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The image's USER, split as the CRI wants it; `None` when unset (root by default).
    pub fn user(&self) -> Option<ImageUser> {
        let raw = self.config.as_ref()?.user.as_deref()?.trim();
        let user = raw.split(':').next().unwrap_or("");
        if user.is_empty() {
            return None;
        }
        Some(match user.parse::<i64>() {
            Ok(uid) => ImageUser::Uid(uid),
            Err(_) => ImageUser::Name(user.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_user(user: &str) -> ImageConfigFile {
        ImageConfigFile {
            config: Some(RunConfig {
                user: Some(user.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn user_is_split_like_the_cri_expects() {
        assert_eq!(with_user("1000").user(), Some(ImageUser::Uid(1000)));
        assert_eq!(with_user("1000:50").user(), Some(ImageUser::Uid(1000)));
        assert_eq!(
            with_user("skiff").user(),
            Some(ImageUser::Name("skiff".into()))
        );
        assert_eq!(
            with_user("skiff:staff").user(),
            Some(ImageUser::Name("skiff".into()))
        );
        assert_eq!(with_user("").user(), None);
        assert_eq!(ImageConfigFile::default().user(), None);
    }

    #[test]
    fn a_docker_config_parses() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"User":"1000","Env":["PATH=/bin"],
            "Cmd":["sh"],"WorkingDir":"/","Labels":null},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let cfg = ImageConfigFile::parse(json).unwrap();
        assert_eq!(cfg.rootfs.diff_ids, vec!["sha256:aa"]);
        assert_eq!(cfg.config.unwrap().cmd, Some(vec!["sh".to_string()]));
    }
}
