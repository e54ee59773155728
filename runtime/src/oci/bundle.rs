//! Reading a bundle's `config.json` and turning it into the spec skiff-oci actually runs.
//!
//! The caller's bundle is never modified. `create` writes the adjusted spec into the
//! container's state directory instead, because libcontainer reads `<bundle>/config.json`
//! again later (`exec` joins the cgroup named there), so the adjusted copy must outlive
//! `create` and must not change if the caller edits or removes its bundle.

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompArgBuilder, LinuxSeccompOperator, Process, Spec,
};

use super::error::{OciError, Result};

/// The name of the spec file inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// Reads and parses `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    read_json(&bundle.join(CONFIG_FILE))
}

/// Reads and parses a JSON document (config.json or an exec process.json).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|source| OciError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| OciError::InvalidJson {
        path: path.to_path_buf(),
        source,
    })
}

/// Adjusts a bundle's spec so that it runs on this host and no longer depends on the
/// bundle directory:
///
/// - `root.path` and relative bind-mount sources become absolute (they are relative
///   to the bundle in the OCI spec);
/// - an empty `linux.cgroupsPath` becomes `/skiff/<id>` (libcontainer's default is a
///   literal `:youki:<id>` directory);
/// - `process.oomScoreAdj` is raised to ours if lower (see [`clamp_oom_score_adj`]);
/// - `process.noNewPrivileges: false` is dropped: libcontainer 0.7 treats an explicit `false`
///   like `true` when it decides when to load seccomp (after dropping CAP_SYS_ADMIN), which
///   then fails with "failed to load seccomp context"; absent means the same and works;
/// - masked-equal seccomp conditions are reordered for libcontainer (see
///   [`order_masked_eq_for_libcontainer`]).
pub fn prepare(mut spec: Spec, bundle: &Path, id: &str) -> Result<Spec> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| OciError::InvalidArgument(format!("{}: no root", CONFIG_FILE)))?;
    let rootfs = bundle.join(root.path());
    // Fail here with the path in the message; libcontainer only says "io error".
    let rootfs = fs::canonicalize(&rootfs)
        .map_err(|err| OciError::io(format!("rootfs {}", rootfs.display()), err))?;
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs);
    }

    if let Some(mounts) = spec.mounts_mut() {
        for mount in mounts.iter_mut() {
            let is_bind = mount.typ().as_deref() == Some("bind")
                || mount
                    .options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind");
            let relative = mount.source().as_ref().filter(|s| s.is_relative());
            if let (true, Some(source)) = (is_bind, relative) {
                let absolute = bundle.join(source);
                mount.set_source(Some(absolute));
            }
        }
    }

    if let Some(linux) = spec.linux_mut() {
        let empty = linux
            .cgroups_path()
            .as_ref()
            .is_none_or(|p| p.as_os_str().is_empty());
        if empty {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/skiff/{id}"))));
        }
    }

    if let Some(process) = spec.process_mut() {
        clamp_oom_score_adj(process)?;
        if process.no_new_privileges() == Some(false) {
            process.set_no_new_privileges(None);
        }
    }
    if let Some(linux) = spec.linux_mut() {
        if let Some(mut seccomp) = linux.seccomp().clone() {
            order_masked_eq_for_libcontainer(&mut seccomp);
            linux.set_seccomp(Some(seccomp));
        }
    }
    Ok(spec)
}

/// The OCI spec (and runc) read `SCMP_CMP_MASKED_EQ` as `(arg & value) == valueTwo`, but
/// libcontainer 0.7 passes `valueTwo` as the mask and `value` as the datum. With Docker's
/// default profile that turns "allow clone without namespace flags" into a rule that always
/// matches (libseccomp masks the datum with a zero mask), so containers could create
/// namespaces. Swapping the two values gives libcontainer the intended condition.
pub fn order_masked_eq_for_libcontainer(seccomp: &mut LinuxSeccomp) {
    let Some(mut syscalls) = seccomp.syscalls().clone() else {
        return;
    };
    for syscall in syscalls.iter_mut() {
        let Some(mut args) = syscall.args().clone() else {
            continue;
        };
        for arg in args.iter_mut() {
            if arg.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
                continue;
            }
            let (mask, datum) = (arg.value(), arg.value_two().unwrap_or(0));
            // The spec type has no setters for these fields; rebuild the condition swapped.
            if let Ok(swapped) = LinuxSeccompArgBuilder::default()
                .index(arg.index())
                .value(datum)
                .value_two(mask)
                .op(arg.op())
                .build()
            {
                *arg = swapped;
            }
        }
        syscall.set_args(Some(args));
    }
    seccomp.set_syscalls(Some(syscalls));
}

/// Raises `process.oomScoreAdj` to this process's own value if it is lower.
///
/// libcontainer writes the value to `/proc/self/oom_score_adj` before cloning the
/// container. Lowering it needs CAP_SYS_RESOURCE, which some hosts (this project's
/// build machines among them) lack even for root; the write then fails with EPERM
/// and the create dies with an obscure error. Raising is always allowed.
pub fn clamp_oom_score_adj(process: &mut Process) -> Result<()> {
    let Some(wanted) = process.oom_score_adj() else {
        return Ok(());
    };
    let current = current_oom_score_adj()?;
    if wanted < current {
        tracing::info!(
            wanted,
            current,
            "oomScoreAdj cannot be lowered below ours, using ours"
        );
        process.set_oom_score_adj(Some(current));
    }
    Ok(())
}

/// Reads `/proc/self/oom_score_adj`.
fn current_oom_score_adj() -> Result<i32> {
    let path = "/proc/self/oom_score_adj";
    let text = fs::read_to_string(path).map_err(|err| OciError::io(format!("read {path}"), err))?;
    text.trim()
        .parse()
        .map_err(|_| OciError::InvalidArgument(format!("unexpected content in {path}: {text:?}")))
}

/// Writes `spec` as `<dir>/config.json`, creating `dir`.
pub fn write_spec(dir: &Path, spec: &Spec) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|err| OciError::io(format!("create {}", dir.display()), err))?;
    write_json(&dir.join(CONFIG_FILE), spec)
}

/// Writes a value as JSON to `path` (replacing the file).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec(value)
        .map_err(|err| OciError::io(format!("encode {}", path.display()), err.into()))?;
    fs::write(path, json).map_err(|err| OciError::io(format!("write {}", path.display()), err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{LinuxBuilder, ProcessBuilder, RootBuilder, SpecBuilder};

    fn spec_with(cgroups_path: Option<&str>, oom: Option<i32>) -> Spec {
        let mut linux = LinuxBuilder::default();
        if let Some(p) = cgroups_path {
            linux = linux.cgroups_path(PathBuf::from(p));
        }
        let mut process = ProcessBuilder::default().args(vec!["true".to_string()]);
        if let Some(oom) = oom {
            process = process.oom_score_adj(oom);
        }
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .linux(linux.build().unwrap())
            .process(process.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn prepare_fills_cgroups_path_and_absolute_rootfs() {
        let bundle = tempfile::tempdir().unwrap();
        fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let spec = prepare(spec_with(None, None), bundle.path(), "abc").unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/skiff/abc"))
        );
        let root = spec.root().as_ref().unwrap().path();
        assert_eq!(
            root,
            &fs::canonicalize(bundle.path().join("rootfs")).unwrap()
        );
    }

    #[test]
    fn prepare_keeps_explicit_cgroups_path() {
        let bundle = tempfile::tempdir().unwrap();
        fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let spec = prepare(spec_with(Some("/pods/x"), None), bundle.path(), "abc").unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/pods/x")));
    }

    #[test]
    fn an_explicit_false_no_new_privileges_is_dropped() {
        let bundle = tempfile::tempdir().unwrap();
        fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let mut spec = spec_with(None, None);
        spec.process_mut()
            .as_mut()
            .unwrap()
            .set_no_new_privileges(Some(false));
        let spec = prepare(spec, bundle.path(), "abc").unwrap();
        assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), None);
        let mut spec = spec_with(None, None);
        spec.process_mut()
            .as_mut()
            .unwrap()
            .set_no_new_privileges(Some(true));
        let spec = prepare(spec, bundle.path(), "abc").unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
    }

    #[test]
    fn masked_eq_conditions_are_reordered_for_libcontainer() {
        use libcontainer::oci_spec::runtime::{
            LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
        };
        let clone_rule = |op| {
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(0x7E02_0000u64)
                    .value_two(0u64)
                    .op(op)
                    .build()
                    .unwrap()])
                .build()
                .unwrap()
        };
        let mut seccomp = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![
                clone_rule(LinuxSeccompOperator::ScmpCmpMaskedEq),
                clone_rule(LinuxSeccompOperator::ScmpCmpEq),
            ])
            .build()
            .unwrap();
        order_masked_eq_for_libcontainer(&mut seccomp);
        let syscalls = seccomp.syscalls().as_ref().unwrap();
        let masked = &syscalls[0].args().as_ref().unwrap()[0];
        assert_eq!((masked.value(), masked.value_two()), (0, Some(0x7E02_0000)));
        let equal = &syscalls[1].args().as_ref().unwrap()[0];
        assert_eq!((equal.value(), equal.value_two()), (0x7E02_0000, Some(0)));
    }

    #[test]
    fn prepare_reports_missing_rootfs() {
        let bundle = tempfile::tempdir().unwrap();
        let err = prepare(spec_with(None, None), bundle.path(), "abc").unwrap_err();
        assert!(err.to_string().contains("rootfs"), "{err}");
    }

    #[test]
    fn oom_score_adj_is_never_lowered() {
        let current = current_oom_score_adj().unwrap();
        let mut low = ProcessBuilder::default()
            .oom_score_adj(-1000)
            .build()
            .unwrap();
        clamp_oom_score_adj(&mut low).unwrap();
        assert_eq!(low.oom_score_adj(), Some(current.max(-1000)));

        let mut high = ProcessBuilder::default()
            .oom_score_adj(1000)
            .build()
            .unwrap();
        clamp_oom_score_adj(&mut high).unwrap();
        assert_eq!(high.oom_score_adj(), Some(1000));
    }
}
