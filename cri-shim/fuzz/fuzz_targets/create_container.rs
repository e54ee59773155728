//! Fuzzes CreateContainer's request handling: the input is a protobuf `CreateContainerRequest`
//! as a kubelet sends it, checked as `runtime_service/create_container.rs` checks it and turned
//! into an OCI spec by [`build_spec_on`] with a fixed image config, a small rootfs (`/etc/passwd`
//! and `/etc/group`), a pinned pod and fixed host facts.
//!
//! Must hold: no panic on any input; an accepted request gives a `config.json` that reads back
//! as the same spec (skiff-oci loads it with the same types), rooted at the rootfs, with
//! absolute normalized mount destinations, the pod's sandbox id annotation and an
//! `oom_score_adj` never below skiffd's own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;
use prost::Message;
use skiff_proto::runtime::v1 as cri;
use skiff_runtime::image::config::{ImageConfigFile, RunConfig};
use skiffd::spec::{build_spec_on, HostInfo, SandboxPaths, SpecInputs};
use std::path::{Component, PathBuf};
use std::sync::OnceLock;

/// skiffd's own `oom_score_adj` in these runs: what systemd gives a daemon it must not kill.
const CURRENT_OOM_SCORE_ADJ: i32 = -500;

/// What stays the same across runs: the image, the rootfs, the pod's files, the host.
struct Fixture {
    pod_dir: PathBuf,
    image: ImageConfigFile,
    rootfs: PathBuf,
    host: HostInfo,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("skiff-fuzz-spec-{}", std::process::id()));
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("creating the rootfs");
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101::/var/cache/nginx:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .expect("writing /etc/passwd");
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nwheel:x:10:root,nginx\nnginx:x:101:\nnogroup:x:65534:\n",
        )
        .expect("writing /etc/group");
        let pod = dir.join("pod");
        std::fs::create_dir_all(&pod).expect("creating the pod directory");
        for file in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(pod.join(file), "").expect("writing a pod file");
        }
        // The host's mount table as the propagation check sees it: `/` shared, `/tmp`
        // private, `/mnt` a slave.
        let mountinfo = dir.join("mountinfo");
        std::fs::write(
            &mountinfo,
            "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             30 22 0:27 / /tmp rw,nosuid - tmpfs tmpfs rw\n\
             31 22 0:28 / /mnt rw master:7 - tmpfs tmpfs rw\n",
        )
        .expect("writing mountinfo");
        // Privileged containers get every device of this directory, not of the real /dev.
        let dev_dir = dir.join("dev");
        std::fs::create_dir_all(dev_dir.join("pts")).expect("creating the fake /dev");
        std::fs::write(dev_dir.join("not-a-device"), "").expect("writing the fake /dev");

        let image = ImageConfigFile {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: Some(RunConfig {
                user: Some("nginx".into()),
                env: Some(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    "NGINX_VERSION=1.25.3".into(),
                ]),
                entrypoint: Some(vec!["/docker-entrypoint.sh".into()]),
                cmd: Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]),
                working_dir: Some("/usr/share/nginx/html".into()),
                stop_signal: Some("SIGQUIT".into()),
                ..RunConfig::default()
            }),
            ..ImageConfigFile::default()
        };
        let host = HostInfo {
            cgroup2_unified: false,
            swap_limit: true,
            hugetlb: true,
            // This machine's bounding set, as skiffd would see it.
            capabilities: HostInfo::detect().capabilities,
            kernel: (6, 1),
            hostname: "node-1".into(),
            mountinfo,
            dev_dir,
        };
        Fixture {
            pod_dir: pod,
            image,
            rootfs,
            host,
        }
    })
}

/// What RunPodSandbox would have made for this pod: pinned namespaces unless the pod uses the
/// host's, a shared PID namespace for `pid: POD`, and its files.
fn sandbox_paths(pod: &cri::PodSandboxConfig, fixture: &Fixture) -> SandboxPaths {
    let options = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    let host_network = options.network == node;
    let pinned =
        |kind: &str, pin: bool| pin.then(|| PathBuf::from(format!("/run/skiff/ns/{kind}")));
    // As RunPodSandbox: the asked hostname, else (or with host networking) the host's.
    let hostname = if host_network || pod.hostname.is_empty() {
        fixture.host.hostname.clone()
    } else {
        pod.hostname.clone()
    };
    SandboxPaths {
        netns: pinned("net", !host_network),
        ipcns: pinned("ipc", options.ipc != node),
        utsns: pinned("uts", !host_network),
        pidns: pinned("pid", options.pid == cri::NamespaceMode::Pod as i32),
        host_pid: options.pid == node,
        hostname,
        hosts_file: fixture.pod_dir.join("hosts"),
        hostname_file: fixture.pod_dir.join("hostname"),
        resolv_conf: fixture.pod_dir.join("resolv.conf"),
        shm_dir: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = cri::CreateContainerRequest::decode(data) else {
        return;
    };
    // CreateContainer refuses these before looking anything up.
    let Some(config) = &request.config else {
        return;
    };
    if config.metadata.as_ref().is_none_or(|m| m.name.is_empty())
        || config.image.as_ref().is_none_or(|i| i.image.is_empty())
    {
        return;
    }
    let fixture = fixture();
    let pod = request.sandbox_config.clone().unwrap_or_default();
    let sandbox = sandbox_paths(&pod, fixture);
    let cgroup_parent = pod
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/skiff".to_string());
    let inputs = SpecInputs {
        sandbox_id: &request.pod_sandbox_id,
        config,
        sandbox_config: &pod,
        image: &fixture.image,
        rootfs: &fixture.rootfs,
        sandbox: &sandbox,
        cgroups_path: format!("{cgroup_parent}/0123456789abcdef"),
        current_oom_score_adj: CURRENT_OOM_SCORE_ADJ,
    };
    let Ok(spec) = build_spec_on(&inputs, &fixture.host) else {
        return;
    };

    let json = serde_json::to_vec_pretty(&spec).expect("the spec encodes as config.json");
    let back: Spec = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "config.json does not load: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        back, spec,
        "config.json does not load back as the same spec"
    );

    let root = spec.root().as_ref().expect("a root");
    assert_eq!(root.path(), &fixture.rootfs);
    for mount in spec.mounts().iter().flatten() {
        let dest = mount.destination();
        assert!(dest.is_absolute(), "mount destination {dest:?} is relative");
        assert!(
            dest.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
            "mount destination {dest:?} is not normalized"
        );
    }
    let process = spec.process().as_ref().expect("a process");
    assert!(
        !process.args().as_ref().is_none_or(Vec::is_empty),
        "no argv"
    );
    if let Some(adj) = process.oom_score_adj() {
        assert!(
            adj >= CURRENT_OOM_SCORE_ADJ,
            "oom_score_adj {adj} is below skiffd's"
        );
    }
    let annotations = spec.annotations().as_ref().expect("annotations");
    assert_eq!(
        annotations.get("io.kubernetes.cri.sandbox-id"),
        Some(&request.pod_sandbox_id)
    );
});
