//! Running one plugin binary: the `CNI_*` environment, the request on stdin, the result or error
//! JSON on stdout, and a timeout that kills the plugin with everything it started.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::request::{self, Purpose};
use super::{Attachment, Cni, CniError, IFNAME};

/// A plugin of the chain, found in a bin dir.
#[derive(Clone, Debug)]
pub(super) struct Plugin {
    /// Its `type`.
    pub kind: String,
    /// Its binary.
    pub path: PathBuf,
    /// Its configuration object from the network configuration.
    pub conf: Map<String, Value>,
}

/// The per-invocation parameters passed in the environment.
#[derive(Clone, Copy, Debug)]
pub(super) struct Invocation<'a> {
    /// `CNI_COMMAND`.
    pub command: &'static str,
    /// `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_ARGS` (and `CNI_IFNAME`) for attachment commands.
    pub attachment: Option<(&'a str, &'a Path, &'a str)>,
}

impl<'a> Invocation<'a> {
    /// VERSION, STATUS or GC: no attachment parameters.
    pub fn bare(command: &'static str) -> Self {
        Invocation {
            command,
            attachment: None,
        }
    }

    /// ADD, DEL or CHECK of `sandbox_id` in `netns` (empty: not passed).
    pub fn attach(
        command: &'static str,
        sandbox_id: &'a str,
        netns: &'a Path,
        cni_args: &'a str,
    ) -> Self {
        Invocation {
            command,
            attachment: Some((sandbox_id, netns, cni_args)),
        }
    }
}

/// Everything an ADD, DEL or CHECK of one attachment passes to each plugin, except
/// `prevResult`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AttachCtx<'a> {
    /// The network name.
    pub network: &'a str,
    /// The negotiated spec version.
    pub version: &'a str,
    /// `CNI_CONTAINERID`.
    pub sandbox_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `CNI_ARGS`.
    pub cni_args: &'a str,
    /// The capability arguments (`runtimeConfig` for plugins declaring them).
    pub capability_args: &'a Map<String, Value>,
}

/// `CNI_ARGS` for a pod, in the form kubelet's runtimes use.
pub(super) fn cni_args(a: &Attachment) -> Result<String, CniError> {
    let pairs = [
        ("K8S_POD_NAMESPACE", &a.pod_namespace),
        ("K8S_POD_NAME", &a.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", &a.sandbox_id),
        ("K8S_POD_UID", &a.pod_uid),
    ];
    let mut out = String::from("IgnoreUnknown=1");
    for (key, value) in pairs {
        // The format has no quoting: these characters would split or corrupt the list.
        if value.contains([';', '=', '\0']) {
            return Err(CniError::InvalidAttachment(format!(
                "{key} value {value:?} contains ';', '=' or NUL"
            )));
        }
        out.push_str(&format!(";{key}={value}"));
    }
    Ok(out)
}

impl Cni {
    /// Finds the binary of every plugin of a chain.
    pub(super) fn resolve(
        &self,
        network: &str,
        plugins: &[Map<String, Value>],
    ) -> Result<Vec<Plugin>, CniError> {
        plugins
            .iter()
            .map(|conf| self.resolve_one(network, conf))
            .collect()
    }

    /// Finds the binary of one plugin: the first bin dir holding a file named by its `type`.
    pub(super) fn resolve_one(
        &self,
        network: &str,
        conf: &Map<String, Value>,
    ) -> Result<Plugin, CniError> {
        let kind = conf
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let path = self
            .bin_dirs
            .iter()
            .map(|dir| dir.join(&kind))
            .find(|p| !kind.is_empty() && !kind.contains('/') && p.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                network: network.to_string(),
                plugin: kind.clone(),
                dirs: self.bin_dirs.clone(),
            })?;
        Ok(Plugin {
            kind,
            path,
            conf: conf.clone(),
        })
    }

    /// Runs ADD, DEL or CHECK (`command`) of `plugin` for an attachment.
    pub(super) async fn exec_attach(
        &self,
        plugin: &Plugin,
        command: &'static str,
        ctx: &AttachCtx<'_>,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, CniError> {
        let purpose = Purpose::Attach {
            prev,
            capability_args: ctx.capability_args,
        };
        let req = request::derive(&plugin.conf, ctx.network, ctx.version, purpose);
        let inv = Invocation::attach(command, ctx.sandbox_id, ctx.netns, ctx.cni_args);
        self.exec(plugin, inv, &req).await
    }

    /// Runs `plugin` with `inv`'s environment and `request` on stdin. Returns what it printed
    /// on success (`None` if nothing), or its error.
    pub(super) async fn exec(
        &self,
        plugin: &Plugin,
        inv: Invocation<'_>,
        request: &Value,
    ) -> Result<Option<Value>, CniError> {
        let started = Instant::now();
        let mut cmd = Command::new(&plugin.path);
        let cni_path = self
            .bin_dirs
            .iter()
            .map(|d| d.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":");
        cmd.env("CNI_COMMAND", inv.command)
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills whatever the plugin started too.
            .process_group(0)
            .kill_on_drop(true);
        // Values inherited from skiffd's own environment must not reach the plugin.
        for key in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
            cmd.env_remove(key);
        }
        if let Some((id, netns, args)) = inv.attachment {
            cmd.env("CNI_CONTAINERID", id)
                .env("CNI_IFNAME", IFNAME)
                .env("CNI_ARGS", args);
            if !netns.as_os_str().is_empty() {
                cmd.env("CNI_NETNS", netns);
            }
        }
        let mut child = cmd.spawn().map_err(|source| CniError::Spawn {
            plugin: plugin.kind.clone(),
            path: plugin.path.clone(),
            source,
        })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let stdin = request.to_string();
        let mut pipe = child.stdin.take();
        let run = async move {
            let write = async {
                if let Some(pipe) = pipe.as_mut() {
                    // A plugin may exit without reading its input: its exit status tells.
                    let _ = pipe.write_all(stdin.as_bytes()).await;
                }
                drop(pipe);
            };
            let (_, output) = tokio::join!(write, child.wait_with_output());
            output
        };
        let output = match tokio::time::timeout(self.timeout, run).await {
            Ok(output) => output.map_err(|source| CniError::Spawn {
                plugin: plugin.kind.clone(),
                path: plugin.path.clone(),
                source,
            })?,
            Err(_) => {
                if let Some(pid) = pid {
                    // The group leader is our child, so the group id is its pid.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(CniError::Timeout {
                    plugin: plugin.kind.clone(),
                    command: inv.command,
                    after: self.timeout,
                });
            }
        };
        tracing::debug!(
            plugin = %plugin.kind,
            command = inv.command,
            status = %output.status,
            took = ?started.elapsed(),
            "cni plugin finished"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(plugin_error(plugin, inv.command, &stdout, &stderr));
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&stdout)
            .map(Some)
            .map_err(|e| CniError::BadOutput {
                plugin: plugin.kind.clone(),
                command: inv.command,
                reason: format!("output is not JSON ({e}): {}", stdout.trim()),
            })
    }
}

/// The error of a failed plugin: its error JSON on stdout, or whatever it printed.
fn plugin_error(plugin: &Plugin, command: &'static str, stdout: &str, stderr: &str) -> CniError {
    let error = serde_json::from_str::<Value>(stdout)
        .ok()
        .filter(|v| v.get("msg").is_some() || v.get("code").is_some());
    let (code, msg, details) = match error {
        Some(v) => (
            v.get("code").and_then(Value::as_u64),
            v.get("msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            v.get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        None => {
            let text = [stdout.trim(), stderr.trim()]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" / ");
            let msg = if text.is_empty() {
                "exited with an error and printed nothing".to_string()
            } else {
                text
            };
            (None, msg, String::new())
        }
    };
    CniError::Plugin {
        plugin: plugin.kind.clone(),
        command,
        code,
        msg,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Plugin {
        Plugin {
            kind: "frob".into(),
            path: "/x/frob".into(),
            conf: Map::new(),
        }
    }

    #[test]
    fn cni_args_carry_the_pod_and_refuse_separators() {
        let mut a = Attachment {
            sandbox_id: "sb1".into(),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "u-1".into(),
            ..Attachment::default()
        };
        assert_eq!(
            cni_args(&a).unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u-1"
        );
        a.pod_name = "a;b=c".into();
        assert!(matches!(cni_args(&a), Err(CniError::InvalidAttachment(_))));
    }

    #[test]
    fn error_json_and_plain_text_both_become_messages() {
        let e = plugin_error(
            &plugin(),
            "ADD",
            r#"{"cniVersion":"1.1.0","code":7,"msg":"bad subnet","details":"10.0.0.0/33"}"#,
            "",
        );
        assert_eq!(
            e.to_string(),
            "plugin frob ADD failed (code 7): bad subnet: 10.0.0.0/33"
        );
        let e = plugin_error(&plugin(), "DEL", "", "panic: oops\n");
        assert_eq!(e.to_string(), "plugin frob DEL failed: panic: oops");
    }
}
