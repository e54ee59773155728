//! Security context, resources and stats, observed the way a user would: from inside the
//! container (`id`, `/proc/self/status`, a write that fails) and from the host's cgroup tree.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::Variant;
use skiff_tests::cri::*;
use std::time::Duration;

/// One pod with the plain and the USER busybox images pulled.
struct Setup {
    env: PodEnv,
    user_image: String,
}

async fn setup(name: &str) -> Setup {
    let env = PodEnv::new(name).await.unwrap();
    let user_image = pull_busybox(&env.daemon, &env.registry, Variant::User)
        .await
        .unwrap();
    Setup { env, user_image }
}

impl std::ops::Deref for Setup {
    type Target = PodEnv;
    fn deref(&self) -> &PodEnv {
        &self.env
    }
}

fn with_security(
    mut config: cri::ContainerConfig,
    security: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context = Some(security);
    config
}

async fn output(s: &Setup, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let reply = exec(&s.daemon, id, cmd, 10).await.unwrap();
    (
        reply.exit_code,
        String::from_utf8_lossy(&reply.stdout).into_owned(),
        String::from_utf8_lossy(&reply.stderr).into_owned(),
    )
}

/// The value of a `Key:\tvalue` line of /proc/1/status inside the container.
async fn proc_status(s: &Setup, id: &str, key: &str) -> String {
    let (_, text, _) = output(s, id, &["cat", "/proc/1/status"]).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

const SLEEP: &[&str] = &["sleep", "3600"];

#[tokio::test]
async fn users_come_from_the_image_or_the_security_context() {
    let s = setup("sec-users").await;
    let from_image = start_container(
        &s.daemon,
        &s.pod_id,
        &s.pod,
        container_config("image-user", &s.user_image, SLEEP),
    )
    .await
    .unwrap();
    assert_eq!(output(&s, &from_image, &["id", "-u"]).await.1, "1000\n");
    assert_eq!(output(&s, &from_image, &["id", "-un"]).await.1, "skiff\n");

    let overridden = start_container(
        &s.daemon,
        &s.pod_id,
        &s.pod,
        with_security(
            container_config("override", &s.user_image, SLEEP),
            cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 65534 }),
                supplemental_groups: vec![4242],
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(output(&s, &overridden, &["id", "-u"]).await.1, "65534\n");
    assert!(output(&s, &overridden, &["id", "-G"])
        .await
        .1
        .contains("4242"));
    remove_pod(&s.daemon, &s.pod_id).await.unwrap();
}

#[tokio::test]
async fn readonly_rootfs_capabilities_no_new_privs_and_seccomp_hold_inside() {
    let s = setup("sec-caps").await;
    let default = start_container(
        &s.daemon,
        &s.pod_id,
        &s.pod,
        container_config("default", &s.image, SLEEP),
    )
    .await
    .unwrap();
    let hardened = start_container(
        &s.daemon,
        &s.pod_id,
        &s.pod,
        with_security(
            container_config("hardened", &s.image, SLEEP),
            cri::LinuxContainerSecurityContext {
                readonly_rootfs: true,
                no_new_privs: true,
                capabilities: Some(cri::Capability {
                    drop_capabilities: vec!["NET_RAW".into()],
                    ..Default::default()
                }),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();

    // A read-only root refuses writes; the default one takes them.
    let (code, _, err) = output(&s, &hardened, &["touch", "/new-file"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only"), "{err}");
    assert_eq!(output(&s, &default, &["touch", "/new-file"]).await.0, 0);

    // CAP_NET_RAW is bit 13 of the effective set: there by default, gone when dropped.
    let net_raw = |hex: &str| u64::from_str_radix(hex, 16).unwrap() & (1 << 13) != 0;
    assert!(net_raw(&proc_status(&s, &default, "CapEff").await));
    assert!(!net_raw(&proc_status(&s, &hardened, "CapEff").await));
    // CAP_SYS_ADMIN (bit 21) is never in the default set.
    assert_eq!(
        u64::from_str_radix(&proc_status(&s, &default, "CapEff").await, 16).unwrap() & (1 << 21),
        0
    );
    assert_eq!(proc_status(&s, &hardened, "NoNewPrivs").await, "1");
    assert_eq!(
        proc_status(&s, &hardened, "Seccomp").await,
        "2",
        "filter mode"
    );
    // The container sees its own processes only, and masked /proc paths are empty.
    let (_, ps, _) = output(&s, &default, &["ps", "-o", "pid,args"]).await;
    assert!(!ps.contains("skiffd"), "host processes visible: {ps}");
    let (_, keys, _) = output(&s, &default, &["cat", "/proc/keys"]).await;
    assert!(keys.is_empty());
    remove_pod(&s.daemon, &s.pod_id).await.unwrap();
}

#[tokio::test]
async fn memory_limits_reach_the_cgroup_and_updates_follow() {
    let s = setup("sec-limits").await;
    let mut config = container_config("limited", &s.image, SLEEP);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = start_container(&s.daemon, &s.pod_id, &s.pod, config)
        .await
        .unwrap();
    let memory = format!("/sys/fs/cgroup/memory/skiff/{id}/memory.limit_in_bytes");
    let shares = format!("/sys/fs/cgroup/cpu/skiff/{id}/cpu.shares");
    assert_eq!(std::fs::read_to_string(&memory).unwrap().trim(), "67108864");
    assert_eq!(std::fs::read_to_string(&shares).unwrap().trim(), "512");

    let mut runtime = s.daemon.runtime().await.unwrap();
    runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&memory).unwrap().trim(),
        "134217728"
    );
    remove_pod(&s.daemon, &s.pod_id).await.unwrap();
    assert!(
        !std::path::Path::new(&memory).exists(),
        "the container's cgroup is removed with it"
    );
}

#[tokio::test]
async fn stats_show_a_busy_container_working() {
    let s = setup("sec-stats").await;
    let busy = start_container(
        &s.daemon,
        &s.pod_id,
        &s.pod,
        container_config("busy", &s.image, &["sh", "-c", "while true; do :; done"]),
    )
    .await
    .unwrap();
    let mut runtime = s.daemon.runtime().await.unwrap();
    let stats =
        |runtime: &mut skiff_proto::runtime::v1::runtime_service_client::RuntimeServiceClient<
            _,
        >| {
            let id = busy.clone();
            let mut runtime = runtime.clone();
            async move {
                runtime
                    .container_stats(cri::ContainerStatsRequest { container_id: id })
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .unwrap()
            }
        };
    let first = stats(&mut runtime).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = stats(&mut runtime).await;
    let cpu = second.cpu.unwrap();
    assert!(cpu.usage_core_nano_seconds.unwrap().value > 0);
    assert!(
        cpu.usage_nano_cores.unwrap().value > 100_000_000,
        "a busy loop uses more than 0.1 core"
    );
    assert!(second.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(first.writable_layer.is_some());

    let pod = runtime
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: s.pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let listed = runtime
        .list_container_stats(cri::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    remove_pod(&s.daemon, &s.pod_id).await.unwrap();
}

#[tokio::test]
async fn reopen_container_log_follows_a_rotation() {
    let s = setup("sec-logs").await;
    let id = start_container(
        &s.daemon,
        &s.pod_id,
        &s.pod,
        container_config(
            "ticker",
            &s.image,
            &["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
        ),
    )
    .await
    .unwrap();
    let log = s.logs.path().join("ticker.log");
    let rotated = s.logs.path().join("ticker.log.1");
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::rename(&log, &rotated).unwrap();
    let mut runtime = s.daemon.runtime().await.unwrap();
    runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let frozen = std::fs::read_to_string(&rotated).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap(),
        frozen,
        "old file untouched"
    );
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(
        fresh.lines().count() >= 2,
        "new file gets the new lines: {fresh:?}"
    );
    assert!(
        fresh.lines().all(|l| l.ends_with(" stdout F tick")),
        "{fresh}"
    );
    remove_pod(&s.daemon, &s.pod_id).await.unwrap();
}

#[tokio::test]
async fn pod_sysctls_and_privileged_containers() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let mut pod = pod_config("sec-sysctl", "sysctl", logs.path());
    let linux = pod.linux.get_or_insert_with(Default::default);
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    let pod_id = run_pod(&daemon, &pod).await.unwrap();

    let plain = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("plain", &image, SLEEP),
    )
    .await
    .unwrap();
    let reply = exec(
        &daemon,
        &plain,
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
        5,
    )
    .await
    .unwrap();
    assert_eq!(
        reply.stdout, b"80\n",
        "the pod's sysctl is set in its network namespace"
    );
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "80", "and not on the host");

    let privileged = start_container(
        &daemon,
        &pod_id,
        &pod,
        with_security_fields(container_config("privileged", &image, SLEEP)),
    )
    .await
    .unwrap();
    let cap_eff = |id: String| {
        let daemon = &daemon;
        async move {
            let reply = exec(daemon, &id, &["cat", "/proc/1/status"], 5)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&reply.stdout).into_owned();
            let hex = text
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .unwrap()
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).unwrap()
        }
    };
    assert_ne!(
        cap_eff(privileged.clone()).await & (1 << 21),
        0,
        "CAP_SYS_ADMIN when privileged"
    );
    assert_eq!(cap_eff(plain.clone()).await & (1 << 21), 0);
    // A privileged container may write /sys; a plain one sees it read-only.
    let reply = exec(
        &daemon,
        &plain,
        &["sh", "-c", "grep ' /sys ' /proc/mounts"],
        5,
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&reply.stdout).contains(" ro,"),
        "plain /sys is read-only"
    );
    remove_pod(&daemon, &pod_id).await.unwrap();
}

fn with_security_fields(config: cri::ContainerConfig) -> cri::ContainerConfig {
    with_security(
        config,
        cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    )
}

/// A static program that tries `clone(CLONE_NEWUSER)` and prints `allowed` or `denied …`.
const CLONE_NEWUSER_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid < 0) { printf("denied %s\n", strerror(errno)); return 1; }
    waitpid(pid, 0, 0);
    printf("allowed\n");
    return 0;
}
"#;

#[tokio::test]
async fn runtime_default_seccomp_blocks_namespace_creation_through_clone() {
    // Build the probe with the host's gcc and ship it in a layer on top of busybox.
    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("probe.c"), CLONE_NEWUSER_PROBE).unwrap();
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(build.path().join("probe"))
        .arg(build.path().join("probe.c"))
        .status()
        .expect("gcc (build-essential)");
    assert!(status.success());
    let probe = std::fs::read(build.path().join("probe")).unwrap();
    let image_spec = skiff_tests::busybox::busybox_spec(Variant::Plain)
        .unwrap()
        .layer(skiff_tests::oci_layout::Layer::new().file("probe", probe, 0o755));
    let layout = tempfile::tempdir().unwrap();
    image_spec.write(layout.path(), "probe").unwrap();

    let env = PodEnv::new("sec-clone").await.unwrap();
    skiff_tests::registry::push(
        layout.path(),
        "probe",
        &env.registry,
        "probe:1",
        skiff_tests::registry::Format::Oci,
    )
    .unwrap();
    let image = format!("{}/probe:1", env.registry.addr());
    env.daemon
        .images()
        .await
        .unwrap()
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    // The probe runs as the container's own process and reports in its log.
    let run = |name: &'static str, kind: cri::security_profile::ProfileType| {
        let (env, image) = (&env, image.clone());
        async move {
            let id = env
                .start_config(with_security(
                    container_config(name, &image, &["/probe"]),
                    cri::LinuxContainerSecurityContext {
                        seccomp: Some(cri::SecurityProfile {
                            profile_type: kind as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
            wait_exited(&env.daemon, &id, 20).await.unwrap();
            std::fs::read_to_string(env.logs.path().join(format!("{name}.log"))).unwrap()
        }
    };
    let confined = run(
        "confined",
        cri::security_profile::ProfileType::RuntimeDefault,
    )
    .await;
    assert!(
        confined.contains(" denied "),
        "RuntimeDefault must block it: {confined}"
    );
    let unconfined = run("unconfined", cri::security_profile::ProfileType::Unconfined).await;
    assert!(
        unconfined.contains(" allowed"),
        "the probe itself works: {unconfined}"
    );
    // Ordinary forks still pass the clone rule.
    let shell = env
        .start_config(with_security(
            container_config("shell", &env.image, SLEEP),
            cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let reply = exec(&env.daemon, &shell, &["sh", "-c", "echo piped | cat"], 10)
        .await
        .unwrap();
    assert_eq!(reply.stdout, b"piped\n");
    // A process exec'd into a confined container is under the same filter.
    let confined = env
        .start_config(with_security(
            container_config("confined-exec", &image, SLEEP),
            cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let reply = exec(&env.daemon, &confined, &["/probe"], 10).await.unwrap();
    let stdout = String::from_utf8_lossy(&reply.stdout);
    assert!(stdout.starts_with("denied "), "exec'd probe: {stdout}");
    assert_eq!(reply.exit_code, 1);
    let reply = exec(&env.daemon, &confined, &["cat", "/proc/self/status"], 10)
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&reply.stdout);
    assert!(status.contains("Seccomp:\t2"), "{status}");
    remove_pod(&env.daemon, &env.pod_id).await.unwrap();
}
