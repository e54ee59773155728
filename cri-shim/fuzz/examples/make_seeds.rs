//! Writes the seed corpus of the `create_container` fuzz target: CreateContainerRequests
//! encoded as a kubelet sends them, from an ordinary Deployment's container to a privileged
//! host-namespace one. Run with `cargo run --example make_seeds` from `cri-shim/fuzz/`; the
//! output is deterministic.

use prost::Message;
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::path::Path;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mount(
    container: &str,
    host: &str,
    readonly: bool,
    propagation: cri::MountPropagation,
) -> cri::Mount {
    cri::Mount {
        container_path: container.into(),
        host_path: host.into(),
        readonly,
        propagation: propagation as i32,
        ..Default::default()
    }
}

fn namespaces(
    network: cri::NamespaceMode,
    pid: cri::NamespaceMode,
    ipc: cri::NamespaceMode,
) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    }
}

fn profile(kind: cri::security_profile::ProfileType, localhost: &str) -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost.into(),
    }
}

/// The pod of a Deployment replica, as the kubelet describes it in every CreateContainer.
fn pod(name: &str, namespace: cri::NamespaceOption, privileged: bool) -> cri::PodSandboxConfig {
    let host_network = namespace.network == cri::NamespaceMode::Node as i32;
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: "6f1c7d0e-3b8a-4d52-9a7e-2c4b1f0e9d88".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/default_{name}_6f1c7d0e-3b8a-4d52-9a7e-2c4b1f0e9d88"),
        dns_config: Some(cri::DnsConfig {
            servers: strings(&["10.96.0.10"]),
            searches: strings(&[
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ]),
            options: strings(&["ndots:5"]),
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }],
        labels: map(&[("app", "web"), ("pod-template-hash", "5d9c7b8f4")]),
        annotations: map(&[("kubernetes.io/config.source", "api")]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/pod6f1c7d0e-3b8a-4d52-9a7e-2c4b1f0e9d88".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace),
                privileged,
                seccomp: Some(profile(
                    cri::security_profile::ProfileType::RuntimeDefault,
                    "",
                )),
                ..Default::default()
            }),
            // Namespaced sysctls need the pod's own network namespace.
            sysctls: if host_network {
                HashMap::new()
            } else {
                map(&[("net.ipv4.ip_unprivileged_port_start", "0")])
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        log_path: format!("{name}/0.log"),
        labels: map(&[
            ("io.kubernetes.container.name", name),
            ("io.kubernetes.pod.name", "web-5d9c7b8f4-x2v7q"),
            ("io.kubernetes.pod.namespace", "default"),
        ]),
        annotations: map(&[
            ("io.kubernetes.container.hash", "8b1f3c2a"),
            ("io.kubernetes.container.restartCount", "0"),
            (
                "io.kubernetes.container.terminationMessagePath",
                "/dev/termination-log",
            ),
        ]),
        ..Default::default()
    }
}

fn requests() -> Vec<(&'static str, cri::CreateContainerRequest)> {
    use cri::security_profile::ProfileType;
    use cri::MountPropagation::*;
    use cri::NamespaceMode::*;
    let sandbox_id = "5b2f0c4d8e9a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c";

    // An ordinary Deployment container: env, mounts, limits, the kubelet's security defaults.
    let mut web = container("nginx", "docker.io/library/nginx:1.25");
    web.envs = vec![
        cri::KeyValue {
            key: "KUBERNETES_SERVICE_HOST".into(),
            value: "10.96.0.1".into(),
        },
        cri::KeyValue {
            key: "KUBERNETES_SERVICE_PORT".into(),
            value: "443".into(),
        },
        cri::KeyValue {
            key: "PATH".into(),
            value: "/opt/bin:/usr/bin:/bin".into(),
        },
    ];
    web.mounts = vec![
        mount("/etc/hosts", "/etc/hosts", false, PropagationPrivate),
        mount(
            "/dev/termination-log",
            "/dev/null",
            false,
            PropagationPrivate,
        ),
        mount(
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/tmp",
            true,
            PropagationPrivate,
        ),
    ];
    web.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            oom_score_adj: 968,
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        }),
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(namespaces(Pod, Container, Pod)),
            run_as_user: Some(cri::Int64Value { value: 101 }),
            supplemental_groups: vec![10, 2000],
            no_new_privs: true,
            masked_paths: strings(&["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"]),
            readonly_paths: strings(&["/proc/bus", "/proc/sys", "/proc/sysrq-trigger"]),
            seccomp: Some(profile(ProfileType::RuntimeDefault, "")),
            capabilities: Some(cri::Capability {
                add_capabilities: strings(&["NET_BIND_SERVICE"]),
                drop_capabilities: strings(&["CAP_MKNOD", "net_raw"]),
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    web.working_dir = "/srv".into();
    web.args = strings(&["nginx", "-g", "daemon off;"]);
    let web_pod = pod(
        "web-5d9c7b8f4-x2v7q",
        namespaces(Pod, Container, Pod),
        false,
    );

    // A privileged node agent: host namespaces, all capabilities, devices, a shared mount.
    let mut agent = container("agent", "registry.k8s.io/e2e-test-images/busybox:1.29-2");
    agent.command = strings(&["/bin/sh", "-c"]);
    agent.args = strings(&["while true; do sleep 3600; done"]);
    agent.tty = true;
    agent.stdin = true;
    agent.devices = vec![cri::Device {
        container_path: "/dev/fuse-like".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    }];
    agent.mounts = vec![
        mount("/host", "/mnt", true, PropagationHostToContainer),
        mount(
            "/var/lib/agent",
            "/var/lib",
            false,
            PropagationBidirectional,
        ),
    ];
    agent.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            oom_score_adj: -997,
            cpuset_cpus: "0-1".into(),
            unified: map(&[("memory.high", "max")]),
            memory_swap_limit_in_bytes: 512 << 20,
            ..Default::default()
        }),
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            namespace_options: Some(namespaces(Node, Node, Node)),
            seccomp: Some(profile(ProfileType::Unconfined, "")),
            ..Default::default()
        }),
    });
    let agent_pod = pod("node-agent-7kq2p", namespaces(Node, Node, Node), true);

    // A restricted container: a named user and group, read-only root, every capability
    // dropped, the pod's shared PID namespace.
    let mut restricted = container("app", "registry.example:5000/team/app@sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1");
    restricted.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(namespaces(Pod, Pod, Pod)),
            run_as_username: "nobody".into(),
            run_as_group: Some(cri::Int64Value { value: 65534 }),
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(cri::Capability {
                drop_capabilities: strings(&["ALL"]),
                ..Default::default()
            }),
            seccomp: Some(profile(ProfileType::RuntimeDefault, "")),
            ..Default::default()
        }),
    });
    let restricted_pod = pod("app-0", namespaces(Pod, Pod, Pod), false);

    // The smallest request crictl can send.
    let minimal = container("c", "busybox");

    // A Localhost seccomp profile: a host file the kubelet names (absent here, so refused).
    let mut localhost = container("audited", "busybox");
    localhost.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(profile(
                ProfileType::Localhost,
                "/var/lib/kubelet/seccomp/profiles/audit.json",
            )),
            ..Default::default()
        }),
    });

    vec![
        ("deployment-nginx.pb", (web, web_pod)),
        ("privileged-host-agent.pb", (agent, agent_pod)),
        ("restricted-named-user.pb", (restricted, restricted_pod)),
        (
            "crictl-minimal.pb",
            (minimal, cri::PodSandboxConfig::default()),
        ),
        (
            "localhost-seccomp.pb",
            (localhost, cri::PodSandboxConfig::default()),
        ),
    ]
    .into_iter()
    .map(|(file, (config, pod))| {
        (
            file,
            cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(pod),
            },
        )
    })
    .collect()
}

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/create_container");
    std::fs::create_dir_all(&dir)?;
    for (file, request) in requests() {
        let path = dir.join(file);
        std::fs::write(&path, request.encode_to_vec())?;
        println!("{}", path.display());
    }
    Ok(())
}
