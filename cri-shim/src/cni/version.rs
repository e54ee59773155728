//! Spec version negotiation: the highest version offered by the network configuration
//! (`cniVersion` and `cniVersions`) that skiffd and every plugin of the chain support. Plugins
//! answer `VERSION` once per binary (again when the file changes).

use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use super::conf::NetworkList;
use super::exec::{Invocation, Plugin};
use super::{Cni, CniError};

/// The versions skiffd can drive: results before 0.3.0 had another shape (`ip4`/`ip6`).
pub(super) const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A parsed `major.minor.patch`.
pub(super) type Semver = (u64, u64, u64);

/// Parses `major.minor.patch`; `None` for anything else.
pub(super) fn parse(v: &str) -> Option<Semver> {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// True if `v` is at least `min` (both as spelled in JSON; unparsable is never enough).
pub(super) fn at_least(v: &str, min: &str) -> bool {
    matches!((parse(v), parse(min)), (Some(v), Some(min)) if v >= min)
}

/// Which plugin binary answered `VERSION`, identified so that a replaced file is asked again.
type Stamp = (u64, u64, i64, i64);

/// The `supportedVersions` of each plugin binary seen.
#[derive(Default)]
pub(super) struct VersionCache(Mutex<HashMap<PathBuf, (Stamp, Vec<Semver>)>>);

impl VersionCache {
    fn get(&self, path: &PathBuf, stamp: Stamp) -> Option<Vec<Semver>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, path: PathBuf, stamp: Stamp, versions: Vec<Semver>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(path, (stamp, versions));
    }
}

/// Picks the version: the highest offered by `list` that skiffd and every plugin (with its
/// supported versions) know.
pub(super) fn choose(
    list: &NetworkList,
    plugins: &[(&str, Vec<Semver>)],
) -> Result<String, CniError> {
    let mut offered: Vec<Semver> = std::iter::once(&list.cni_version)
        .chain(&list.cni_versions)
        .filter_map(|v| parse(v))
        .collect();
    offered.sort_unstable_by(|a, b| b.cmp(a));
    offered.dedup();
    let ours: Vec<Semver> = SUPPORTED.iter().filter_map(|v| parse(v)).collect();
    let chosen = offered
        .iter()
        .find(|v| ours.contains(v) && plugins.iter().all(|(_, theirs)| theirs.contains(v)));
    if let Some((a, b, c)) = chosen {
        return Ok(format!("{a}.{b}.{c}"));
    }
    let show = |vs: &[Semver]| {
        vs.iter()
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut reason = format!(
        "no common CNI version: the config offers [{}], skiffd supports [{}]",
        std::iter::once(&list.cni_version)
            .chain(&list.cni_versions)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        SUPPORTED.join(", ")
    );
    for (kind, theirs) in plugins {
        if !offered.iter().any(|v| theirs.contains(v)) {
            reason.push_str(&format!(", plugin {kind} supports [{}]", show(theirs)));
        }
    }
    Err(CniError::IncompatibleVersion {
        network: list.name.clone(),
        reason,
    })
}

impl Cni {
    /// Negotiates the version to run `plugins` of `list` with.
    pub(super) async fn negotiate(
        &self,
        list: &NetworkList,
        plugins: &[Plugin],
    ) -> Result<String, CniError> {
        let mut supported = Vec::with_capacity(plugins.len());
        for plugin in plugins {
            supported.push((
                plugin.kind.as_str(),
                self.plugin_versions(list, plugin).await?,
            ));
        }
        choose(list, &supported)
    }

    /// The versions `plugin` reports through `VERSION` (cached per binary).
    async fn plugin_versions(
        &self,
        list: &NetworkList,
        plugin: &Plugin,
    ) -> Result<Vec<Semver>, CniError> {
        let stamp = std::fs::metadata(&plugin.path)
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
            .map_err(|source| CniError::Spawn {
                plugin: plugin.kind.clone(),
                path: plugin.path.clone(),
                source,
            })?;
        if let Some(versions) = self.versions.get(&plugin.path, stamp) {
            return Ok(versions);
        }
        let request = json!({"cniVersion": list.cni_version});
        let out = self
            .exec(plugin, Invocation::bare("VERSION"), &request)
            .await?
            .unwrap_or(Value::Null);
        let versions: Vec<Semver> = out
            .get("supportedVersions")
            .and_then(Value::as_array)
            .ok_or_else(|| CniError::BadOutput {
                plugin: plugin.kind.clone(),
                command: "VERSION",
                reason: format!("no supportedVersions in {out}"),
            })?
            .iter()
            .filter_map(|v| v.as_str().and_then(parse))
            .collect();
        self.versions
            .put(plugin.path.clone(), stamp, versions.clone());
        Ok(versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(version: &str, versions: &[&str]) -> NetworkList {
        NetworkList::from_value(&json!({
            "cniVersion": version, "cniVersions": versions, "name": "n",
            "plugins": [{"type": "a"}],
        }))
        .unwrap()
    }

    fn vs(list: &[&str]) -> Vec<Semver> {
        list.iter().filter_map(|v| parse(v)).collect()
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse("1.10.0"), Some((1, 10, 0)));
        assert_eq!(parse("1.0"), None);
        assert_eq!(parse("1.0.0.0"), None);
        assert!(at_least("1.10.0", "1.1.0"));
        assert!(!at_least("0.4.0", "1.1.0"));
        assert!(!at_least("junk", "0.1.0"));
    }

    #[test]
    fn the_highest_common_version_wins() {
        let reference = vs(&["0.3.0", "0.3.1", "0.4.0", "1.0.0"]);
        let ours = vs(&SUPPORTED);
        let l = list("1.1.0", &["0.4.0", "1.0.0", "1.1.0"]);
        assert_eq!(choose(&l, &[("skiff", ours.clone())]).unwrap(), "1.1.0");
        assert_eq!(
            choose(&l, &[("skiff", ours), ("bridge", reference.clone())]).unwrap(),
            "1.0.0"
        );
        let err = choose(&list("1.1.0", &[]), &[("bridge", reference)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugin bridge supports [0.3.0, 0.3.1, 0.4.0, 1.0.0]"),
            "{err}"
        );
        // Older than skiffd can drive, whatever the plugin says.
        let err = choose(&list("0.2.0", &[]), &[("old", vs(&["0.2.0"]))]).unwrap_err();
        assert!(err.to_string().contains("skiffd supports"), "{err}");
    }
}
