//! Containers end to end: the seed's first demo (two containers of one pod talking over
//! localhost), logs, exec, exit codes, stop/remove and a daemon crash with containers running.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::cri::*;
use tonic::Code;

#[tokio::test]
async fn two_containers_of_a_pod_talk_over_localhost() {
    let env = PodEnv::new("demo").await.unwrap();
    let (daemon, logs, pod_id) = (&env.daemon, &env.logs, &env.pod_id);
    let web = env
        .start(
            "web",
            &["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"],
        )
        .await
        .unwrap();
    let client = env.start("client", &["sleep", "3600"]).await.unwrap();

    // The client fetches the web container's page over the pod's shared loopback.
    let mut body = String::new();
    for _ in 0..50 {
        let reply = exec(
            daemon,
            &client,
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
            5,
        )
        .await
        .unwrap();
        if reply.exit_code == 0 {
            body = String::from_utf8(reply.stdout).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body, "hello-from-web\n");
    // The page lives in the web container's writable layer, yet no container root is mounted
    // on the host: each keeps it in its own mount namespace, so the host's mount table does
    // not grow with every container.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for id in [&web, &client] {
        assert!(
            !host_mounts.contains(id.as_str()),
            "rootfs of {id} is mounted on the host"
        );
    }

    // Same UTS and IPC namespace: both see the pod's hostname.
    for id in [&web, &client] {
        let reply = exec(daemon, id, &["hostname"], 5).await.unwrap();
        assert_eq!(String::from_utf8(reply.stdout).unwrap(), "demo\n");
    }
    let status = container_status(daemon, &web).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert!(status.started_at >= status.created_at && status.created_at > 0);
    assert_eq!(
        status.log_path,
        logs.path().join("web.log").display().to_string()
    );

    remove_pod(daemon, pod_id).await.unwrap();
    let err = container_status(daemon, &web).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test]
async fn logs_exit_codes_and_exec_behave_like_containerd() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let pod = pod_config("exits", "exits", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();

    let job = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config(
            "job",
            &image,
            &["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"],
        ),
    )
    .await
    .unwrap();
    let status = wait_exited(&daemon, &job, 20).await.unwrap();
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(status.finished_at >= status.started_at);
    let log = std::fs::read_to_string(logs.path().join("job.log")).unwrap();
    let records: Vec<Vec<&str>> = log.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    let fields: Vec<(&str, &str, &str)> = records.iter().map(|r| (r[1], r[2], r[3])).collect();
    assert!(fields.contains(&("stdout", "F", "out")), "{log}");
    assert!(fields.contains(&("stderr", "F", "err")), "{log}");
    assert!(fields.contains(&("stdout", "P", "partial")), "{log}");
    assert!(
        records
            .iter()
            .all(|r| r[0].ends_with('Z') && r[0].contains('T')),
        "{log}"
    );

    let sleeper = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config(
            "sleeper",
            &image,
            &[
                "sh",
                "-c",
                "trap 'exit 42' TERM; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await
    .unwrap();
    let reply = exec(
        &daemon,
        &sleeper,
        &["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(reply.exit_code, 7);
    assert_eq!(reply.stdout, b"to-out\n");
    assert_eq!(reply.stderr, b"to-err\n");
    let started = std::time::Instant::now();
    let err = exec(&daemon, &sleeper, &["sleep", "30"], 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed().as_secs() < 10);

    // Stop with a timeout: the shell traps TERM and exits with its own code.
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .stop_container(cri::StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    let status = container_status(&daemon, &sleeper).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 42, "stopped by SIGTERM");

    // A PID 1 without a TERM handler ignores TERM: after the timeout it is killed.
    let stubborn = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("stubborn", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();
    runtime
        .stop_container(cri::StopContainerRequest {
            container_id: stubborn.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    let status = container_status(&daemon, &stubborn).await.unwrap();
    assert_eq!(status.exit_code, 137, "SIGKILL after the timeout");
    runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: stubborn.clone(),
        })
        .await
        .unwrap();
    // Stop and remove are idempotent.
    runtime
        .stop_container(cri::StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    for _ in 0..2 {
        runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: sleeper.clone(),
            })
            .await
            .unwrap();
    }
    let listed = list_all_containers(&daemon).await.unwrap();
    assert_eq!(listed.len(), 1, "only the job is left");
    assert_eq!(listed[0].id, job);
    remove_pod(&daemon, &pod_id).await.unwrap();
}

#[tokio::test]
async fn containers_keep_running_across_a_daemon_crash() {
    let Node {
        registry: _registry,
        mut daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let pod = pod_config("crash", "crash", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let long = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config(
            "long",
            &image,
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        ),
    )
    .await
    .unwrap();
    let short = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("short", &image, &["sh", "-c", "sleep 2; exit 5"]),
    )
    .await
    .unwrap();

    daemon.restart().unwrap();
    let status = container_status(&daemon, &long).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    // The container that exits while (or after) skiffd was down reports its real exit code.
    let status = wait_exited(&daemon, &short, 20).await.unwrap();
    assert_eq!(status.exit_code, 5);
    // Logs continue after the restart.
    let log = logs.path().join("long.log");
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let after = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(after > before, "log grew from {before} to {after} lines");
    let reply = exec(&daemon, &long, &["echo", "still-here"], 5)
        .await
        .unwrap();
    assert_eq!(reply.stdout, b"still-here\n");
    remove_pod(&daemon, &pod_id).await.unwrap();
}

/// True while some process on the host runs exactly `sleep <arg>`.
fn sleeping(arg: &str) -> bool {
    let wanted = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| cmdline == wanted.as_bytes())
}

#[tokio::test]
async fn an_exec_the_client_gives_up_on_is_killed() {
    use std::time::{Duration, Instant};
    let env = PodEnv::new("abandon").await.unwrap();
    let id = env.start("main", &["sleep", "3600"]).await.unwrap();

    // A command that hangs, no ExecSync timeout, and a client that stops waiting for it.
    let call = exec(&env.daemon, &id, &["sleep", "31337"], 0);
    let gave_up = tokio::time::timeout(Duration::from_millis(800), call).await;
    assert!(
        gave_up.is_err(),
        "the call was meant to be cut short: {gave_up:?}"
    );

    // The command goes with its call, as with containerd.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping("31337") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sleeping("31337"), "the exec'd command outlived its call");
    // Nothing it left behind holds the container up.
    let mut runtime = env.daemon.runtime().await.unwrap();
    runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    let status = container_status(&env.daemon, &id).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    runtime
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
}
