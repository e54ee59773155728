//! Unit tests of `build_spec` against a temporary rootfs and made-up host facts (no root).

use super::*;
use oci_spec::runtime::{
    Capability, LinuxDeviceType, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, Mount,
};
use std::fs;
use tonic::Code;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1::/:/bin/false
alice:x:1000:1000::/home/alice:/bin/sh
# a comment, then a broken line
broken:x:notanumber
bob:x:1001:100::/:/bin/sh
";

const GROUP: &str = "\
root:x:0:
wheel:x:10:root
staff:x:50:alice,bob
users:x:100:alice
alice:x:1000:alice
";

/// A container request against a temporary rootfs and pod, with host facts made up.
struct Fixture {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    sandbox: SandboxPaths,
    image: ImageConfigFile,
    config: cri::ContainerConfig,
    sandbox_config: cri::PodSandboxConfig,
    host: HostInfo,
    current_oom_score_adj: i32,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
        fs::write(rootfs.join("etc/group"), GROUP).unwrap();

        let pod = dir.path().join("pod");
        fs::create_dir_all(&pod).unwrap();
        for file in ["hosts", "hostname", "resolv.conf"] {
            fs::write(pod.join(file), "").unwrap();
        }
        let sandbox = SandboxPaths {
            netns: Some("/run/skiff/ns/net-p1".into()),
            ipcns: Some("/run/skiff/ns/ipc-p1".into()),
            utsns: Some("/run/skiff/ns/uts-p1".into()),
            pidns: None,
            host_pid: false,
            hostname: "web-0".to_string(),
            hosts_file: pod.join("hosts"),
            hostname_file: pod.join("hostname"),
            resolv_conf: pod.join("resolv.conf"),
            shm_dir: None,
        };

        let mountinfo = dir.path().join("mountinfo");
        fs::write(
            &mountinfo,
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n",
        )
        .unwrap();
        let dev_dir = dir.path().join("dev");
        fs::create_dir_all(&dev_dir).unwrap();
        let host = HostInfo {
            cgroup2_unified: false,
            swap_limit: true,
            hugetlb: true,
            // Like this project's CI: everything but CAP_SYS_RESOURCE.
            capabilities: caps::ALL_CAPABILITIES
                .iter()
                .map(|(cap, _)| *cap)
                .filter(|cap| *cap != Capability::SysResource)
                .collect(),
            kernel: (6, 1),
            hostname: "node-1".to_string(),
            mountinfo,
            dev_dir,
        };

        let image = ImageConfigFile {
            config: Some(RunConfig {
                entrypoint: Some(vec!["/entry".into()]),
                cmd: Some(vec!["image-arg".into()]),
                env: Some(vec!["PATH=/image/bin".into(), "FOO=image".into()]),
                working_dir: Some("/srv".into()),
                ..RunConfig::default()
            }),
            ..ImageConfigFile::default()
        };
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        Fixture {
            dir,
            rootfs,
            sandbox,
            image,
            config,
            sandbox_config,
            host,
            current_oom_score_adj: 0,
        }
    }

    fn build(&self) -> Result<Spec, SpecError> {
        let inputs = SpecInputs {
            sandbox_id: "p1",
            config: &self.config,
            sandbox_config: &self.sandbox_config,
            image: &self.image,
            rootfs: &self.rootfs,
            sandbox: &self.sandbox,
            cgroups_path: "/skiff/p1/c1".to_string(),
            current_oom_score_adj: self.current_oom_score_adj,
        };
        build_spec_on(&inputs, &self.host)
    }

    fn security(&mut self) -> &mut cri::LinuxContainerSecurityContext {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn resources(&mut self) -> &mut cri::LinuxContainerResources {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    fn run_config(&mut self) -> &mut RunConfig {
        self.image.config.get_or_insert_with(Default::default)
    }

    fn make_privileged(&mut self) {
        self.security().privileged = true;
        self.sandbox_config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
    }

    fn set_mountinfo(&self, text: &str) {
        fs::write(&self.host.mountinfo, text).unwrap();
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn process(spec: &Spec) -> &Process {
    spec.process().as_ref().unwrap()
}

fn linux(spec: &Spec) -> &Linux {
    spec.linux().as_ref().unwrap()
}

fn args_of(spec: &Spec) -> Vec<String> {
    process(spec).args().clone().unwrap()
}

fn env_of(spec: &Spec) -> Vec<String> {
    process(spec).env().clone().unwrap()
}

fn mount_at<'a>(spec: &'a Spec, destination: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(destination))
}

fn options(mount: &Mount) -> Vec<String> {
    mount.options().clone().unwrap_or_default()
}

fn bounding(spec: &Spec) -> std::collections::HashSet<Capability> {
    process(spec)
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap()
}

fn seccomp(spec: &Spec) -> Option<&LinuxSeccomp> {
    linux(spec).seccomp().as_ref()
}

/// Whether a rule allows `name` unconditionally (no argument filter).
fn allows(seccomp: &LinuxSeccomp, name: &str) -> bool {
    seccomp.syscalls().iter().flatten().any(|s| {
        s.action() == LinuxSeccompAction::ScmpActAllow
            && s.args().is_none()
            && s.names().iter().any(|n| n == name)
    })
}

// ---- process ----

#[test]
fn args_follow_dockers_rules() {
    let mut f = Fixture::new();
    // Neither: image Entrypoint + Cmd.
    assert_eq!(
        args_of(&f.build().unwrap()),
        strings(&["/entry", "image-arg"])
    );
    // args only: image Entrypoint + request args.
    f.config.args = strings(&["a1"]);
    assert_eq!(args_of(&f.build().unwrap()), strings(&["/entry", "a1"]));
    // command and args: the request's only.
    f.config.command = strings(&["/bin/sh"]);
    assert_eq!(args_of(&f.build().unwrap()), strings(&["/bin/sh", "a1"]));
    // command only: the image Cmd is not appended.
    f.config.args.clear();
    assert_eq!(args_of(&f.build().unwrap()), strings(&["/bin/sh"]));
}

#[test]
fn no_command_anywhere_is_an_error() {
    let mut f = Fixture::new();
    f.image.config = None;
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::NoCommand));
    assert_eq!(err.code(), Code::InvalidArgument);
    // An empty-string Entrypoint means "none".
    f.run_config().entrypoint = Some(strings(&[""]));
    f.run_config().cmd = Some(strings(&["sh"]));
    assert_eq!(args_of(&f.build().unwrap()), strings(&["sh"]));
}

#[test]
fn env_merges_image_and_request_by_key() {
    let mut f = Fixture::new();
    f.config.envs = vec![
        cri::KeyValue {
            key: "FOO".into(),
            value: b"request".to_vec(),
        },
        cri::KeyValue {
            key: "BAR".into(),
            value: b"1".to_vec(),
        },
    ];
    let env = env_of(&f.build().unwrap());
    assert_eq!(
        env,
        strings(&["PATH=/image/bin", "HOSTNAME=web-0", "FOO=request", "BAR=1"])
    );

    // Without an image PATH, the default one.
    f.run_config().env = None;
    let env = env_of(&f.build().unwrap());
    assert_eq!(env[0], format!("PATH={}", process::DEFAULT_PATH));

    f.config.envs[0].value = vec![0xff, 0xfe];
    assert!(matches!(f.build().unwrap_err(), SpecError::Invalid(_)));
}

#[test]
fn cwd_and_terminal() {
    let mut f = Fixture::new();
    assert_eq!(process(&f.build().unwrap()).cwd(), Path::new("/srv"));
    f.config.working_dir = "/work".into();
    f.config.tty = true;
    let spec = f.build().unwrap();
    assert_eq!(process(&spec).cwd(), Path::new("/work"));
    assert_eq!(process(&spec).terminal(), Some(true));
    f.config.working_dir.clear();
    f.run_config().working_dir = None;
    assert_eq!(process(&f.build().unwrap()).cwd(), Path::new("/"));
}

// ---- user ----

fn user_of(f: &Fixture) -> (u32, u32, Vec<u32>) {
    let spec = f.build().unwrap();
    let user = process(&spec).user();
    (
        user.uid(),
        user.gid(),
        user.additional_gids().clone().unwrap(),
    )
}

#[test]
fn root_by_default() {
    let f = Fixture::new();
    assert_eq!(user_of(&f), (0, 0, vec![0, 10]));
}

#[test]
fn run_as_user_takes_gid_and_groups_from_the_image() {
    let mut f = Fixture::new();
    f.security().run_as_user = Some(cri::Int64Value { value: 1000 });
    assert_eq!(user_of(&f), (1000, 1000, vec![50, 100, 1000]));

    f.security().run_as_group = Some(cri::Int64Value { value: 4242 });
    f.security().supplemental_groups = vec![5678, 1234];
    assert_eq!(user_of(&f), (1000, 4242, vec![50, 100, 1234, 4242, 5678]));

    // Strict: no /etc/group memberships.
    f.security().supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
    assert_eq!(user_of(&f), (1000, 4242, vec![1234, 4242, 5678]));
}

#[test]
fn unknown_uid_runs_with_gid_zero() {
    let mut f = Fixture::new();
    f.security().run_as_user = Some(cri::Int64Value { value: 4000 });
    assert_eq!(user_of(&f), (4000, 0, vec![0]));
    f.security().run_as_user = Some(cri::Int64Value { value: -1 });
    assert!(matches!(f.build().unwrap_err(), SpecError::Invalid(_)));
}

#[test]
fn run_as_username_and_image_user_forms() {
    let mut f = Fixture::new();
    f.security().run_as_username = "bob".into();
    assert_eq!(user_of(&f), (1001, 100, vec![50, 100]));

    let mut f = Fixture::new();
    for (image_user, expected) in [
        ("alice", (1000, 1000, vec![50, 100, 1000])),
        ("alice:staff", (1000, 50, vec![50, 100])),
        ("alice:7", (1000, 7, vec![7, 50, 100])),
        ("1234", (1234, 0, vec![0])),
        ("1234:4321", (1234, 4321, vec![4321])),
    ] {
        f.run_config().user = Some(image_user.into());
        assert_eq!(user_of(&f), expected, "image USER {image_user}");
    }
    // The request's user wins over the image's, and the image's group goes with it.
    f.security().run_as_user = Some(cri::Int64Value { value: 1001 });
    assert_eq!(user_of(&f), (1001, 100, vec![50, 100]));
}

#[test]
fn unknown_names_and_group_without_user_are_errors() {
    let mut f = Fixture::new();
    f.security().run_as_username = "mallory".into();
    let err = f.build().unwrap_err();
    assert!(err.to_string().contains("mallory"), "{err}");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let mut f = Fixture::new();
    f.run_config().user = Some("alice:nogroup".into());
    assert!(matches!(f.build().unwrap_err(), SpecError::UnknownGroup(g) if g == "nogroup"));

    let mut f = Fixture::new();
    f.security().run_as_group = Some(cri::Int64Value { value: 5 });
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
}

#[test]
fn passwd_symlinks_resolve_inside_the_rootfs() {
    let f = Fixture::new();
    // A "host" passwd outside the rootfs, and the image's /etc/passwd pointing at it.
    let host_dir = f.dir.path().join("host-etc");
    fs::create_dir_all(&host_dir).unwrap();
    let host_passwd = host_dir.join("passwd");
    fs::write(&host_passwd, "mallory:x:4000:4000::/:/bin/sh\n").unwrap();
    fs::remove_file(f.rootfs.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink(&host_passwd, f.rootfs.join("etc/passwd")).unwrap();

    let mut f = f;
    f.security().run_as_username = "mallory".into();
    assert!(
        matches!(f.build().unwrap_err(), SpecError::UnknownUser(u) if u == "mallory"),
        "the host's passwd must not be read"
    );

    // The same absolute target inside the rootfs is what counts.
    let in_root = f.rootfs.join(host_passwd.strip_prefix("/").unwrap());
    fs::create_dir_all(in_root.parent().unwrap()).unwrap();
    fs::write(&in_root, "carol:x:3000:3000::/:/bin/sh\n").unwrap();
    f.security().run_as_username = "carol".into();
    assert_eq!(user_of(&f).0, 3000);

    // `..` cannot climb out either.
    let depth = f.rootfs.components().count();
    let climb = "../".repeat(depth + 3) + host_passwd.strip_prefix("/").unwrap().to_str().unwrap();
    fs::remove_file(f.rootfs.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink(climb, f.rootfs.join("etc/passwd")).unwrap();
    assert_eq!(user_of(&f).0, 3000);
}

#[test]
fn symlink_loops_are_refused() {
    let mut f = Fixture::new();
    fs::remove_file(f.rootfs.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.rootfs.join("etc/passwd")).unwrap();
    f.security().run_as_username = "alice".into();
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::RootfsFile { .. }), "{err}");
}

// ---- capabilities and privileges ----

#[test]
fn default_capabilities_like_docker() {
    let f = Fixture::new();
    let spec = f.build().unwrap();
    let expected: std::collections::HashSet<_> = caps::DEFAULT_CAPABILITIES.into_iter().collect();
    assert_eq!(bounding(&spec), expected);
    let caps = process(&spec).capabilities().as_ref().unwrap();
    assert_eq!(caps.effective().as_ref(), Some(&expected));
    assert_eq!(caps.permitted().as_ref(), Some(&expected));
    assert!(caps.inheritable().as_ref().unwrap().is_empty());
    assert!(caps.ambient().as_ref().unwrap().is_empty());
}

#[test]
fn capabilities_add_and_drop() {
    let mut f = Fixture::new();
    f.security().capabilities = Some(cri::Capability {
        add_capabilities: strings(&["NET_ADMIN", "cap_sys_time"]),
        drop_capabilities: strings(&["CHOWN", "CAP_KILL"]),
        ..Default::default()
    });
    let set = bounding(&f.build().unwrap());
    assert!(set.contains(&Capability::NetAdmin));
    assert!(set.contains(&Capability::SysTime));
    assert!(!set.contains(&Capability::Chown));
    assert!(!set.contains(&Capability::Kill));
    assert_eq!(set.len(), 14);

    // Drop ALL, then add one back.
    f.security().capabilities = Some(cri::Capability {
        add_capabilities: strings(&["NET_BIND_SERVICE"]),
        drop_capabilities: strings(&["ALL"]),
        ..Default::default()
    });
    let set = bounding(&f.build().unwrap());
    assert_eq!(set, [Capability::NetBindService].into_iter().collect());

    // Add ALL: what the host has (no CAP_SYS_RESOURCE here), minus explicit drops.
    f.security().capabilities = Some(cri::Capability {
        add_capabilities: strings(&["all"]),
        drop_capabilities: strings(&["MKNOD"]),
        ..Default::default()
    });
    let set = bounding(&f.build().unwrap());
    assert_eq!(set.len(), f.host.capabilities.len() - 1);
    assert!(!set.contains(&Capability::SysResource));
    assert!(!set.contains(&Capability::Mknod));

    f.security().capabilities = Some(cri::Capability {
        add_capabilities: strings(&["NOT_A_CAP"]),
        ..Default::default()
    });
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
}

#[test]
fn privileged_gets_everything_and_no_confinement() {
    let mut f = Fixture::new();
    f.security().privileged = true;
    // A privileged container needs a privileged pod.
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);

    f.make_privileged();
    f.security().seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    // A fake host device to copy in, and one entry that must be skipped.
    fs::create_dir_all(f.host.dev_dir.join("pts")).unwrap();
    let spec = f.build().unwrap();
    let expected: std::collections::HashSet<_> = f.host.capabilities.iter().copied().collect();
    assert_eq!(bounding(&spec), expected);
    assert_eq!(linux(&spec).masked_paths(), &None);
    assert_eq!(linux(&spec).readonly_paths(), &None);
    assert!(seccomp(&spec).is_none());
    assert!(options(mount_at(&spec, "/sys").unwrap()).contains(&"rw".to_string()));
    assert!(options(mount_at(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_string()));
    // Every device allowed.
    let rules = linux(&spec)
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A));
}

#[test]
fn masked_and_readonly_paths_by_default() {
    let mut f = Fixture::new();
    let spec = f.build().unwrap();
    let masked = linux(&spec).masked_paths().clone().unwrap();
    assert!(masked.contains(&"/proc/kcore".to_string()));
    assert!(masked.contains(&"/sys/devices/virtual/powercap".to_string()));
    let readonly = linux(&spec).readonly_paths().clone().unwrap();
    assert!(readonly.contains(&"/proc/sys".to_string()));
    assert!(options(mount_at(&spec, "/sys").unwrap()).contains(&"ro".to_string()));

    // Explicit lists replace the defaults (critest masks /bin/ls).
    f.security().masked_paths = strings(&["/bin/ls"]);
    let spec = f.build().unwrap();
    assert_eq!(
        linux(&spec).masked_paths().clone().unwrap(),
        strings(&["/bin/ls"])
    );
}

#[test]
fn no_new_privs_and_readonly_rootfs() {
    let mut f = Fixture::new();
    let spec = f.build().unwrap();
    assert_eq!(process(&spec).no_new_privileges(), Some(false));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    assert_eq!(spec.root().as_ref().unwrap().path(), &f.rootfs);

    f.security().no_new_privs = true;
    f.security().readonly_rootfs = true;
    let spec = f.build().unwrap();
    assert_eq!(process(&spec).no_new_privileges(), Some(true));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    // The pod's files follow the rootfs.
    assert!(options(mount_at(&spec, "/etc/hosts").unwrap()).contains(&"ro".to_string()));
}

#[test]
fn oom_score_adj_is_never_lowered() {
    let mut f = Fixture::new();
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), None);
    f.current_oom_score_adj = -500;
    f.resources().oom_score_adj = -998;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), Some(-500));
    f.resources().oom_score_adj = 1000;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), Some(1000));
    f.resources().oom_score_adj = 5000;
    assert_eq!(process(&f.build().unwrap()).oom_score_adj(), Some(1000));
}

// ---- seccomp ----

fn with_seccomp(f: &mut Fixture, profile_type: cri::security_profile::ProfileType, path: &str) {
    f.security().seccomp = Some(cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: path.to_string(),
    });
}

#[test]
fn runtime_default_seccomp_is_dockers_allowlist() {
    use cri::security_profile::ProfileType;
    let mut f = Fixture::new();
    with_seccomp(&mut f, ProfileType::RuntimeDefault, "");
    let spec = f.build().unwrap();
    let profile = seccomp(&spec).unwrap();
    assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(profile.default_errno_ret(), Some(1));
    for name in ["read", "write", "exit_group", "execve", "chroot"] {
        assert!(allows(profile, name), "{name} should be allowed");
    }
    for name in ["kexec_load", "mount", "sethostname", "unshare", "reboot"] {
        assert!(!allows(profile, name), "{name} should be blocked");
    }
    if cfg!(target_arch = "x86_64") {
        use oci_spec::runtime::Arch;
        assert_eq!(
            profile.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert!(allows(profile, "arch_prctl"));
    }
    // clone is allowed only without namespace flags; clone3 fails with ENOSYS.
    let clone = profile
        .syscalls()
        .iter()
        .flatten()
        .find(|s| s.names() == &strings(&["clone"]));
    assert!(clone.unwrap().args().is_some());
    let clone3 = profile
        .syscalls()
        .iter()
        .flatten()
        .find(|s| s.names() == &strings(&["clone3"]));
    assert_eq!(clone3.unwrap().errno_ret(), Some(38));

    // With CAP_SYS_ADMIN the namespace syscalls open up; without CAP_SYS_CHROOT chroot closes.
    f.security().capabilities = Some(cri::Capability {
        add_capabilities: strings(&["SYS_ADMIN"]),
        drop_capabilities: strings(&["SYS_CHROOT"]),
        ..Default::default()
    });
    let spec = f.build().unwrap();
    let profile = seccomp(&spec).unwrap();
    assert!(allows(profile, "sethostname") && allows(profile, "mount") && allows(profile, "clone"));
    assert!(!allows(profile, "chroot"));
    assert!(!profile
        .syscalls()
        .iter()
        .flatten()
        .any(|s| s.names().contains(&"clone3".to_string())
            && s.action() == LinuxSeccompAction::ScmpActErrno));
}

#[test]
#[allow(deprecated)] // seccomp_profile_path is what older clients send
fn seccomp_unconfined_and_deprecated_paths() {
    use cri::security_profile::ProfileType;
    let mut f = Fixture::new();
    // Nothing set: unconfined, as containerd and critest expect.
    assert!(seccomp(&f.build().unwrap()).is_none());
    with_seccomp(&mut f, ProfileType::Unconfined, "");
    assert!(seccomp(&f.build().unwrap()).is_none());

    f.security().seccomp = None;
    for path in ["runtime/default", "docker/default"] {
        f.security().seccomp_profile_path = path.into();
        assert!(seccomp(&f.build().unwrap()).is_some(), "{path}");
    }
    f.security().seccomp_profile_path = "unconfined".into();
    assert!(seccomp(&f.build().unwrap()).is_none());
    f.security().seccomp_profile_path = "/no/localhost/prefix.json".into();
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
}

#[test]
#[allow(deprecated)] // seccomp_profile_path is what older clients send
fn localhost_seccomp_profile_is_loaded() {
    use cri::security_profile::ProfileType;
    let mut f = Fixture::new();
    // critest's profile, in Docker's format.
    let path = f.dir.path().join("block-chmod.json");
    fs::write(
        &path,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["chmod"], "action": "SCMP_ACT_ERRNO" },
                { "names": ["sethostname"], "action": "SCMP_ACT_ERRNO",
                  "excludes": { "caps": ["CAP_SYS_ADMIN"] } }
            ]
        }"#,
    )
    .unwrap();
    with_seccomp(&mut f, ProfileType::Localhost, path.to_str().unwrap());
    let spec = f.build().unwrap();
    let profile = seccomp(&spec).unwrap();
    assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActAllow);
    let names: Vec<_> = profile
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names().clone())
        .collect();
    assert_eq!(names, strings(&["chmod", "sethostname"]));

    // The deprecated field, with its prefix.
    f.security().seccomp = None;
    f.security().seccomp_profile_path = format!("localhost/{}", path.display());
    assert!(seccomp(&f.build().unwrap()).is_some());

    with_seccomp(&mut f, ProfileType::Localhost, "/does/not/exist.json");
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::HostPath { .. }), "{err}");

    fs::write(&path, "not json").unwrap();
    with_seccomp(&mut f, ProfileType::Localhost, path.to_str().unwrap());
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
}

// ---- mounts ----

#[test]
fn standard_and_pod_mounts() {
    let f = Fixture::new();
    let spec = f.build().unwrap();
    let destinations: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        destinations,
        strings(&[
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
        ])
    );
    let hosts = mount_at(&spec, "/etc/hosts").unwrap();
    assert_eq!(hosts.source().as_ref(), Some(&f.sandbox.hosts_file));
    assert_eq!(options(hosts), strings(&["rbind", "rprivate", "rw"]));
    assert_eq!(
        mount_at(&spec, "/dev/shm").unwrap().typ().as_deref(),
        Some("tmpfs")
    );
}

#[test]
fn cgroup_v1_hosts_bind_the_containers_own_cgroups() {
    let mut f = Fixture::new();
    f.set_mountinfo(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
         33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    );
    let spec = f.build().unwrap();
    let mounts = spec.mounts().as_ref().unwrap();
    // No `cgroup` mount: libcontainer's emulation of it fails in a pod-shared PID namespace.
    assert!(mounts.iter().all(|m| m.typ().as_deref() != Some("cgroup")));
    assert_eq!(
        mount_at(&spec, "/sys/fs/cgroup").unwrap().typ().as_deref(),
        Some("tmpfs")
    );
    for (destination, hierarchy) in [
        ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct"),
        ("/sys/fs/cgroup/cpu", "cpu,cpuacct"),
        ("/sys/fs/cgroup/cpuacct", "cpu,cpuacct"),
        ("/sys/fs/cgroup/memory", "memory"),
    ] {
        let mount = mount_at(&spec, destination).unwrap();
        let source = format!("/sys/fs/cgroup/{hierarchy}/skiff/p1/c1");
        assert_eq!(mount.source().as_deref(), Some(Path::new(&source)));
        assert_eq!(options(mount), strings(&["rbind", "rprivate", "ro"]));
    }
    // Privileged containers may change their cgroups.
    f.make_privileged();
    let spec = f.build().unwrap();
    let memory = mount_at(&spec, "/sys/fs/cgroup/memory").unwrap();
    assert_eq!(options(memory), strings(&["rbind", "rprivate", "rw"]));

    // On a cgroup v2 host the kernel's own mount, in the container's cgroup namespace.
    f.host.cgroup2_unified = true;
    let spec = f.build().unwrap();
    let cgroup = mount_at(&spec, "/sys/fs/cgroup").unwrap();
    assert_eq!(cgroup.typ().as_deref(), Some("cgroup"));
}

#[test]
fn shm_dir_and_host_ipc_replace_the_private_tmpfs() {
    let mut f = Fixture::new();
    f.sandbox.shm_dir = Some(f.dir.path().join("shm"));
    let spec = f.build().unwrap();
    let shm: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
        .collect();
    assert_eq!(shm.len(), 1);
    assert_eq!(shm[0].source().as_ref(), f.sandbox.shm_dir.as_ref());

    f.sandbox.shm_dir = None;
    f.sandbox.ipcns = None;
    let spec = f.build().unwrap();
    assert_eq!(
        mount_at(&spec, "/dev/shm").unwrap().source().as_deref(),
        Some(Path::new("/dev/shm"))
    );
}

#[test]
fn request_mounts_resolve_symlinks_and_set_propagation() {
    let mut f = Fixture::new();
    let data = f.dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let link = f.dir.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    f.config.mounts = vec![
        cri::Mount {
            container_path: "/mnt/a/b".into(),
            host_path: link.to_str().unwrap().into(),
            readonly: true,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/mnt/a".into(),
            host_path: data.to_str().unwrap().into(),
            ..Default::default()
        },
        // The request's own /etc/hosts replaces the pod's.
        cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: data.to_str().unwrap().into(),
            ..Default::default()
        },
    ];
    let spec = f.build().unwrap();
    let canonical = fs::canonicalize(&data).unwrap();
    let inner = mount_at(&spec, "/mnt/a/b").unwrap();
    assert_eq!(inner.source().as_ref(), Some(&canonical));
    assert_eq!(options(inner), strings(&["rbind", "rprivate", "ro"]));
    // Shallower first, whatever the request's order.
    let mounts = spec.mounts().as_ref().unwrap();
    let position = |d: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    assert!(position("/mnt/a") < position("/mnt/a/b"));
    let hosts: Vec<_> = mounts
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].source().as_ref(), Some(&canonical));
    assert_eq!(linux(&spec).rootfs_propagation(), &None);

    // Host-to-container needs a shared (or slave) host mount.
    f.config.mounts.truncate(1);
    f.config.mounts[0].propagation = cri::MountPropagation::PropagationHostToContainer as i32;
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::HostPathUnsuitable { .. }), "{err}");
    f.set_mountinfo("27 1 254:0 / / rw,relatime master:3 - ext4 /dev/vda rw\n");
    let spec = f.build().unwrap();
    assert!(options(mount_at(&spec, "/mnt/a/b").unwrap()).contains(&"rslave".to_string()));
    assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("slave"));

    // Bidirectional needs shared.
    f.config.mounts[0].propagation = cri::MountPropagation::PropagationBidirectional as i32;
    assert!(f.build().is_err());
    f.set_mountinfo("27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n");
    let spec = f.build().unwrap();
    assert!(options(mount_at(&spec, "/mnt/a/b").unwrap()).contains(&"rshared".to_string()));
    assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("shared"));
}

#[test]
fn missing_host_path_and_relative_container_path_are_errors() {
    let mut f = Fixture::new();
    f.config.mounts = vec![cri::Mount {
        container_path: "/mnt".into(),
        host_path: "/does/not/exist".into(),
        ..Default::default()
    }];
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::HostPath { .. }), "{err}");
    assert_eq!(err.code(), Code::FailedPrecondition);

    f.config.mounts[0].container_path = "mnt".into();
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
}

#[test]
fn image_volumes_are_refused_as_unimplemented() {
    let mut f = Fixture::new();
    f.config.mounts = vec![cri::Mount {
        container_path: "/mnt/image".into(),
        image: Some(cri::ImageSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        }),
        readonly: true,
        ..Default::default()
    }];
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::Unsupported(_)), "{err}");
    // A missing feature, not a bad request: critest skips image volume specs on this code.
    assert_eq!(err.code(), Code::Unimplemented);
}

// ---- devices ----

#[test]
fn requested_devices_become_nodes_and_cgroup_rules() {
    let mut f = Fixture::new();
    let spec = f.build().unwrap();
    let rules = linux(&spec)
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(!rules[0].allow(), "deny everything not listed");

    if !Path::new("/dev/null").exists() {
        return;
    }
    f.config.devices = vec![cri::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let spec = f.build().unwrap();
    let nodes = linux(&spec).devices().clone().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].path(), Path::new("/dev/mynull"));
    assert_eq!(nodes[0].typ(), LinuxDeviceType::C);
    assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));
    let rules = linux(&spec)
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules[1].access().as_deref(), Some("rw"));
    assert_eq!((rules[1].major(), rules[1].minor()), (Some(1), Some(3)));

    f.config.devices[0].permissions = "rwx".into();
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
    f.config.devices[0].permissions = "rw".into();
    f.config.devices[0].host_path = f.rootfs.to_str().unwrap().into();
    // An ordinary directory holds no devices: nothing to add, no error.
    assert!(f.build().is_ok());
    f.config.devices[0].host_path = f.sandbox.hosts_file.to_str().unwrap().into();
    assert!(matches!(
        f.build().unwrap_err(),
        SpecError::HostPathUnsuitable { .. }
    ));
}

// ---- namespaces, sysctls, resources ----

fn namespace_types(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    linux(spec)
        .namespaces()
        .clone()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

#[test]
fn namespaces_join_the_pod() {
    let mut f = Fixture::new();
    let spec = f.build().unwrap();
    assert_eq!(
        namespace_types(&spec),
        vec![
            (LinuxNamespaceType::Pid, None),
            (
                LinuxNamespaceType::Network,
                Some("/run/skiff/ns/net-p1".into())
            ),
            (LinuxNamespaceType::Ipc, Some("/run/skiff/ns/ipc-p1".into())),
            (LinuxNamespaceType::Uts, Some("/run/skiff/ns/uts-p1".into())),
            (LinuxNamespaceType::Mount, None),
        ]
    );
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    assert_eq!(
        linux(&spec).cgroups_path().as_deref(),
        Some(Path::new("/skiff/p1/c1"))
    );

    // Host network, IPC and PID; a cgroup namespace on cgroup v2.
    f.sandbox.netns = None;
    f.sandbox.ipcns = None;
    f.sandbox.utsns = None;
    f.sandbox.host_pid = true;
    f.sandbox.hostname.clear();
    f.host.cgroup2_unified = true;
    let spec = f.build().unwrap();
    assert_eq!(
        namespace_types(&spec),
        vec![
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Cgroup, None)
        ]
    );
    assert_eq!(spec.hostname(), &None);
    assert!(env_of(&spec).contains(&"HOSTNAME=node-1".to_string()));

    // The pod's shared PID namespace.
    f.sandbox.host_pid = false;
    f.sandbox.pidns = Some("/proc/42/ns/pid".into());
    let spec = f.build().unwrap();
    assert_eq!(
        namespace_types(&spec)[0],
        (LinuxNamespaceType::Pid, Some("/proc/42/ns/pid".into()))
    );
}

#[test]
fn sysctls_must_be_namespaced_and_not_the_hosts() {
    let mut f = Fixture::new();
    let sysctls = &mut f
        .sandbox_config
        .linux
        .get_or_insert_with(Default::default)
        .sysctls;
    sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    sysctls.insert("kernel.shm_rmid_forced".into(), "1".into());
    let spec = f.build().unwrap();
    assert_eq!(linux(&spec).sysctl().as_ref().unwrap().len(), 2);

    f.sandbox.netns = None;
    assert_eq!(f.build().unwrap_err().code(), Code::InvalidArgument);
    f.sandbox.netns = Some("/run/netns/x".into());
    f.sandbox_config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("vm.swappiness".into(), "1".into());
    assert!(f.build().unwrap_err().to_string().contains("vm.swappiness"));
}

#[test]
fn resources_map_to_cgroup_settings() {
    let mut f = Fixture::new();
    *f.resources() = cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        cpuset_cpus: "0-1".into(),
        hugepage_limits: vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        ..Default::default()
    };
    let spec = f.build().unwrap();
    let resources = linux(&spec).resources().clone().unwrap();
    let cpu = resources.cpu().clone().unwrap();
    assert_eq!(
        (cpu.period(), cpu.quota(), cpu.shares()),
        (Some(100_000), Some(50_000), Some(512))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems(), &None);
    let memory = resources.memory().unwrap();
    assert_eq!(memory.limit(), Some(64 << 20));
    assert_eq!(memory.swap(), Some(64 << 20), "no swap beyond the limit");
    assert_eq!(
        resources.hugepage_limits().clone().unwrap()[0].limit(),
        4 << 20
    );

    // Without swap accounting or hugetlb, those settings would make creation fail.
    f.host.swap_limit = false;
    f.host.hugetlb = false;
    let spec = f.build().unwrap();
    let resources = linux(&spec).resources().clone().unwrap();
    assert_eq!(resources.memory().unwrap().swap(), None);
    assert_eq!(resources.hugepage_limits(), &None);
}

// ---- the whole spec ----

#[test]
fn annotations_name_the_pod_and_container() {
    let mut f = Fixture::new();
    f.config.annotations.insert("team".into(), "storage".into());
    let spec = f.build().unwrap();
    let annotations = spec.annotations().clone().unwrap();
    assert_eq!(annotations["team"], "storage");
    assert_eq!(annotations["io.kubernetes.cri.container-type"], "container");
    assert_eq!(annotations["io.kubernetes.cri.sandbox-id"], "p1");
    assert_eq!(annotations["io.kubernetes.cri.container-name"], "app");
    assert_eq!(
        annotations["io.kubernetes.cri.sandbox-namespace"],
        "default"
    );
    assert_eq!(
        annotations["io.kubernetes.cri.image-name"],
        "busybox:latest"
    );
}

#[test]
fn user_namespaces_are_refused() {
    let mut f = Fixture::new();
    f.security().namespace_options = Some(cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(matches!(f.build().unwrap_err(), SpecError::Unsupported(_)));
}

#[test]
fn serialized_spec_parses_back() {
    use cri::security_profile::ProfileType;
    let mut f = Fixture::new();
    with_seccomp(&mut f, ProfileType::RuntimeDefault, "");
    f.resources().memory_limit_in_bytes = 1 << 30;
    let spec = f.build().unwrap();
    let json = serde_json::to_string_pretty(&spec).unwrap();
    let parsed: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, spec);
    // Spot-check field names a runtime reads.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["ociVersion"], "1.1.0");
    assert_eq!(value["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(value["linux"]["cgroupsPath"], "/skiff/p1/c1");
    assert!(value["process"].get("rlimits").is_none());
}

#[test]
fn host_facts_are_detected() {
    let host = HostInfo::detect();
    assert!(!host.capabilities.is_empty());
    assert_eq!(host::parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
    assert_eq!(host::parse_kernel_version("5.4"), Some((5, 4)));
}
