//! The result cache: one JSON file per attachment, `<cache_dir>/<sandbox id>-<ifname>.json`,
//! holding the configuration, version, parameters and final result of its ADD. DEL and CHECK
//! need exactly these even when the conf dir has changed since, and GC finds stale attachments
//! through it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::ErrorKind;
use std::path::PathBuf;

use super::CniError;

/// What one ADD left for its DEL and CHECK.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    /// `CNI_CONTAINERID` (the sandbox id).
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD time.
    pub netns: PathBuf,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// The capability arguments given (`portMappings`).
    pub capability_args: Map<String, Value>,
    /// The negotiated spec version.
    pub cni_version: String,
    /// The network configuration list used.
    pub config: Value,
    /// The final result of the chain.
    pub result: Value,
}

/// The cache directory.
#[derive(Debug)]
pub(super) struct Cache {
    dir: PathBuf,
}

fn cache_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> CniError {
    move |source| CniError::Cache { path, source }
}

impl Cache {
    /// A cache in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    /// The file of an attachment. Container ids are checked to be file-name safe first.
    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    /// Stores `entry`, replacing any previous one atomically.
    pub async fn write(&self, entry: &Entry) -> Result<(), CniError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(cache_err(self.dir.clone()))?;
        let path = self.path(&entry.container_id, &entry.ifname);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(entry).map_err(|e| CniError::Cache {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        tokio::fs::write(&tmp, text)
            .await
            .map_err(cache_err(tmp.clone()))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(cache_err(path.clone()))
    }

    /// The entry of an attachment: `None` if there is none or it is unreadable (logged; DEL
    /// then falls back to the conf dir, as it does without a cache).
    pub async fn read(&self, container_id: &str, ifname: &str) -> Option<Entry> {
        let path = self.path(container_id, ifname);
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "unreadable CNI cache entry: {e}");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(path = %path.display(), "corrupt CNI cache entry: {e}");
                None
            }
        }
    }

    /// Removes an attachment's entry (none is fine).
    pub async fn remove(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.path(container_id, ifname);
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(CniError::Cache { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Every readable entry.
    pub async fn list(&self) -> Result<Vec<Entry>, CniError> {
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CniError::Cache {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut entries = Vec::new();
        while let Some(file) = dir
            .next_entry()
            .await
            .map_err(cache_err(self.dir.clone()))?
        {
            let path = file.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match tokio::fs::read(&path)
                .await
                .map(|t| serde_json::from_slice(&t))
            {
                Ok(Ok(entry)) => entries.push(entry),
                _ => tracing::warn!(path = %path.display(), "skipping unreadable CNI cache entry"),
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_round_trip_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("results"));
        assert!(cache.list().await.unwrap().is_empty());
        let entry = Entry {
            container_id: "sb1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            cni_args: "IgnoreUnknown=1".into(),
            capability_args: Map::new(),
            cni_version: "1.1.0".into(),
            config: serde_json::json!({"name": "n"}),
            result: serde_json::json!({"ips": []}),
        };
        cache.write(&entry).await.unwrap();
        assert_eq!(cache.read("sb1", "eth0").await, Some(entry.clone()));
        assert_eq!(cache.list().await.unwrap(), vec![entry]);
        std::fs::write(cache.path("bad", "eth0"), "{").unwrap();
        assert_eq!(cache.read("bad", "eth0").await, None);
        assert_eq!(cache.list().await.unwrap().len(), 1);
        cache.remove("sb1", "eth0").await.unwrap();
        cache.remove("sb1", "eth0").await.unwrap();
        assert_eq!(cache.read("sb1", "eth0").await, None);
    }
}
