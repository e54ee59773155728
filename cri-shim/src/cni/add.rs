//! ADD: run the chain in order, each plugin getting the previous one's result, cache the final
//! result, and undo the plugins already run when one fails.

use serde_json::{Map, Value};
use std::net::IpAddr;

use super::cache::Entry;
use super::exec::{self, AttachCtx, Plugin};
use super::{check_sandbox_id, request, Attachment, Cni, CniError, PodNetwork, IFNAME};

impl Cni {
    /// Attaches the sandbox to the network of the conf dir and caches the result.
    ///
    /// On failure the plugins already run are deleted again; when that worked (or nothing had
    /// run yet) the error is [`CniError::RolledBack`] and nothing is owed.
    pub async fn add(&self, a: &Attachment) -> Result<PodNetwork, CniError> {
        let _shared = self.gc_lock.read().await;
        // Nothing has run before the first plugin: an error there leaves nothing to undo.
        let nothing_to_undo = |e: CniError| CniError::RolledBack(Box::new(e));
        check_sandbox_id(&a.sandbox_id).map_err(nothing_to_undo)?;
        if a.netns.as_os_str().is_empty() {
            return Err(nothing_to_undo(CniError::InvalidAttachment(
                "ADD needs a network namespace".into(),
            )));
        }
        let (net, list) = self.current_list().map_err(nothing_to_undo)?;
        let plugins = self
            .resolve(&list.name, &list.plugins)
            .map_err(nothing_to_undo)?;
        let version = self
            .negotiate(&list, &plugins)
            .await
            .map_err(nothing_to_undo)?;
        let capability_args =
            request::capability_args(&a.port_mappings).map_err(nothing_to_undo)?;
        let cni_args = exec::cni_args(a).map_err(nothing_to_undo)?;
        let ctx = AttachCtx {
            network: &list.name,
            version: &version,
            sandbox_id: &a.sandbox_id,
            netns: &a.netns,
            cni_args: &cni_args,
            capability_args: &capability_args,
        };

        let mut prev: Option<Value> = None;
        for (i, plugin) in plugins.iter().enumerate() {
            match self.add_one(plugin, &ctx, prev.as_ref()).await {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    // The failed plugin may have done part of its work: DEL it too.
                    return Err(self.roll_back(&plugins[..=i], &ctx, prev.as_ref(), e).await);
                }
            }
        }
        let result = prev.unwrap_or_else(|| Value::Object(Map::new()));

        let entry = Entry {
            container_id: a.sandbox_id.clone(),
            ifname: IFNAME.into(),
            netns: a.netns.clone(),
            cni_args: cni_args.clone(),
            capability_args: capability_args.clone(),
            cni_version: version.clone(),
            config: net.list,
            result: result.clone(),
        };
        // Without the cache, DEL would run without prevResult: undo rather than half-succeed.
        if let Err(e) = self.cache.write(&entry).await {
            return Err(self.roll_back(&plugins, &ctx, Some(&result), e).await);
        }
        Ok(PodNetwork {
            ips: pod_ips(&result),
            result,
        })
    }

    /// ADD of one plugin, which must print a result object.
    async fn add_one(
        &self,
        plugin: &Plugin,
        ctx: &AttachCtx<'_>,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        match self.exec_attach(plugin, "ADD", ctx, prev).await? {
            Some(result) if result.is_object() => Ok(result),
            other => Err(CniError::BadOutput {
                plugin: plugin.kind.clone(),
                command: "ADD",
                reason: format!(
                    "expected a result object, got {}",
                    other.unwrap_or(Value::Null)
                ),
            }),
        }
    }

    /// DEL of `plugins` after a failed ADD; errors are only logged, the ADD error is the news.
    /// DELs `plugins` after ADD failed with `error`; returns the error to report, marked
    /// [`CniError::RolledBack`] when the DEL worked.
    async fn roll_back(
        &self,
        plugins: &[Plugin],
        ctx: &AttachCtx<'_>,
        prev: Option<&Value>,
        error: CniError,
    ) -> CniError {
        let plugins = plugins.iter().cloned().map(Ok).collect();
        match self.del_chain(plugins, ctx, prev).await {
            Ok(()) => CniError::RolledBack(Box::new(error)),
            Err(e) => {
                tracing::warn!(sandbox = ctx.sandbox_id, "undoing a failed CNI ADD: {e}");
                error
            }
        }
    }
}

/// The pod's addresses in a result: those on interfaces inside the sandbox (or not tied to an
/// interface), without prefix length, IPv4 first, otherwise in result order.
pub(super) fn pod_ips(result: &Value) -> Vec<String> {
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let in_sandbox = |ip: &&Value| match ip.get("interface").and_then(Value::as_u64) {
        Some(i) => usize::try_from(i)
            .ok()
            .and_then(|i| interfaces?.get(i))
            .and_then(|intf| intf.get("sandbox")?.as_str())
            .is_some_and(|s| !s.is_empty()),
        None => true,
    };
    let mut ips: Vec<IpAddr> = result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(in_sandbox)
        .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .collect();
    ips.sort_by_key(IpAddr::is_ipv6);
    ips.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_ips_are_the_sandbox_addresses_ipv4_first() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [
                {"address": "fd00::5/64", "interface": 1},
                {"address": "10.0.0.1/24", "interface": 0},
                {"address": "10.0.0.5/24", "interface": 1},
                {"address": "10.1.0.5/16"},
                {"address": "garbage"},
            ],
        });
        assert_eq!(pod_ips(&result), ["10.0.0.5", "10.1.0.5", "fd00::5"]);
        assert!(pod_ips(&json!({})).is_empty());
    }
}
