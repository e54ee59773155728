//! GC: clean up after attachments whose sandbox no longer exists. First a cached DEL for every
//! cached attachment not in the live set (DEL cleans more than GC can), then, from spec 1.1.0
//! on and unless `disableGC`, the GC verb of every plugin with `cni.dev/valid-attachments`.
//! Keeps going after errors and reports them all.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;

use super::exec::Invocation;
use super::request::{self, Purpose};
use super::version::at_least;
use super::{Cni, CniConfError, CniError, IFNAME};

impl Cni {
    /// Releases what attachments of sandboxes other than `live_sandbox_ids` still hold.
    /// Runs alone: waits for ADDs and DELs in progress and holds new ones back.
    pub async fn gc(&self, live_sandbox_ids: &[String]) -> Result<(), CniError> {
        let _exclusive = self.gc_lock.write().await;
        let live: HashSet<&str> = live_sandbox_ids.iter().map(String::as_str).collect();
        let mut errors = Vec::new();

        match self.cache.list().await {
            Ok(entries) => {
                for entry in entries
                    .iter()
                    .filter(|e| !live.contains(e.container_id.as_str()))
                {
                    if let Err(e) = self.del_cached(entry, Path::new("")).await {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }

        if let Err(e) = self.gc_plugins(live_sandbox_ids).await {
            errors.push(e);
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Several(errors)),
        }
    }

    /// The plugins' GC verb for the conf dir's network.
    async fn gc_plugins(&self, live_sandbox_ids: &[String]) -> Result<(), CniError> {
        let (_, list) = match self.current_list() {
            Ok(found) => found,
            // No network, nothing of it to collect.
            Err(CniError::Config(CniConfError::NoConfig(_))) => return Ok(()),
            Err(e) => return Err(e),
        };
        if list.disable_gc {
            return Ok(());
        }
        let plugins = self.resolve(&list.name, &list.plugins)?;
        let version = self.negotiate(&list, &plugins).await?;
        if !at_least(&version, "1.1.0") {
            return Ok(());
        }
        let valid = Value::Array(
            live_sandbox_ids
                .iter()
                .map(|id| json!({"containerID": id, "ifname": IFNAME}))
                .collect(),
        );
        let mut errors = Vec::new();
        for plugin in &plugins {
            let req = request::derive(
                &plugin.conf,
                &list.name,
                &version,
                Purpose::Gc { valid: &valid },
            );
            if let Err(e) = self.exec(plugin, Invocation::bare("GC"), &req).await {
                errors.push(e);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Several(errors)),
        }
    }
}
