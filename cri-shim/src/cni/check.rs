//! CHECK: ask every plugin, in order, whether the attachment is still as ADD left it.

use super::conf::NetworkList;
use super::exec::AttachCtx;
use super::version::at_least;
use super::{check_sandbox_id, Attachment, Cni, CniError, IFNAME};

impl Cni {
    /// Checks the sandbox's attachment against its cached ADD result. Succeeds without running
    /// anything when the config disables CHECK or predates it (before 0.4.0).
    pub async fn check(&self, a: &Attachment) -> Result<(), CniError> {
        let _shared = self.gc_lock.read().await;
        check_sandbox_id(&a.sandbox_id)?;
        let entry = self
            .cache
            .read(&a.sandbox_id, IFNAME)
            .await
            .ok_or_else(|| CniError::NotAttached(a.sandbox_id.clone()))?;
        let list =
            NetworkList::from_value(&entry.config).map_err(|reason| CniError::CachedConfig {
                sandbox: entry.container_id.clone(),
                reason,
            })?;
        if list.disable_check || !at_least(&entry.cni_version, "0.4.0") {
            return Ok(());
        }
        let plugins = self.resolve(&list.name, &list.plugins)?;
        let netns = if a.netns.as_os_str().is_empty() {
            &entry.netns
        } else {
            &a.netns
        };
        let ctx = AttachCtx {
            network: &list.name,
            version: &entry.cni_version,
            sandbox_id: &entry.container_id,
            netns,
            cni_args: &entry.cni_args,
            capability_args: &entry.capability_args,
        };
        for plugin in &plugins {
            self.exec_attach(plugin, "CHECK", &ctx, Some(&entry.result))
                .await?;
        }
        Ok(())
    }
}
