//! DEL: run the chain in reverse with the configuration and result cached by ADD, best-effort
//! (every plugin runs; the first error is reported and the cache kept for a retry). Without a
//! cache entry the conf dir's configuration is used without `prevResult`, as the spec allows.

use serde_json::Value;
use std::path::Path;

use super::cache::Entry;
use super::conf::NetworkList;
use super::exec::{self, AttachCtx, Plugin};
use super::{check_sandbox_id, request, Attachment, Cni, CniConfError, CniError, IFNAME};

impl Cni {
    /// Detaches the sandbox. Idempotent; works when the netns is already gone.
    pub async fn del(&self, a: &Attachment) -> Result<(), CniError> {
        let _shared = self.gc_lock.read().await;
        check_sandbox_id(&a.sandbox_id)?;
        match self.cache.read(&a.sandbox_id, IFNAME).await {
            Some(entry) => self.del_cached(&entry, &a.netns).await,
            None => self.del_uncached(a).await,
        }
    }

    /// DEL of a cached attachment (`netns` overrides the cached path unless empty); removes
    /// the entry once every plugin succeeded.
    pub(super) async fn del_cached(&self, entry: &Entry, netns: &Path) -> Result<(), CniError> {
        let list =
            NetworkList::from_value(&entry.config).map_err(|reason| CniError::CachedConfig {
                sandbox: entry.container_id.clone(),
                reason,
            })?;
        let netns = if netns.as_os_str().is_empty() {
            &entry.netns
        } else {
            netns
        };
        let ctx = AttachCtx {
            network: &list.name,
            version: &entry.cni_version,
            sandbox_id: &entry.container_id,
            netns,
            cni_args: &entry.cni_args,
            capability_args: &entry.capability_args,
        };
        // A missing binary is that plugin's error; the others still run.
        let plugins = list
            .plugins
            .iter()
            .map(|conf| self.resolve_one(&list.name, conf))
            .collect();
        self.del_chain(plugins, &ctx, Some(&entry.result)).await?;
        self.cache.remove(&entry.container_id, &entry.ifname).await
    }

    /// DEL without a cache entry: never added, already deleted, or the cache was lost.
    async fn del_uncached(&self, a: &Attachment) -> Result<(), CniError> {
        let (_, list) = match self.current_list() {
            Ok(found) => found,
            Err(CniError::Config(CniConfError::NoConfig(dir))) => {
                tracing::warn!(
                    sandbox = %a.sandbox_id,
                    "no cached CNI result and no network config in {}: nothing to delete",
                    dir.display()
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let plugins = self.resolve(&list.name, &list.plugins)?;
        let version = self.negotiate(&list, &plugins).await?;
        let capability_args = request::capability_args(&a.port_mappings)?;
        let cni_args = exec::cni_args(a)?;
        let ctx = AttachCtx {
            network: &list.name,
            version: &version,
            sandbox_id: &a.sandbox_id,
            netns: &a.netns,
            cni_args: &cni_args,
            capability_args: &capability_args,
        };
        self.del_chain(plugins.into_iter().map(Ok).collect(), &ctx, None)
            .await
    }

    /// Runs DEL for `plugins` in reverse order, all of them; returns the first error.
    pub(super) async fn del_chain(
        &self,
        plugins: Vec<Result<Plugin, CniError>>,
        ctx: &AttachCtx<'_>,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first = None;
        for plugin in plugins.into_iter().rev() {
            let outcome = match plugin {
                Ok(plugin) => self.exec_attach(&plugin, "DEL", ctx, prev).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::warn!(sandbox = ctx.sandbox_id, "CNI DEL: {e}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
