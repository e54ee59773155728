//! crictl against skiffd: the commands a user types, with crictl's own output checked.
//!
//! crictl is not packaged for Debian 12: `scripts/gotools.sh` builds v1.37 from its Go module
//! (`SKIFF_CRICTL` names another binary). It drives the same RPCs as the other e2e tests, but
//! through the real client's request shapes, JSON output and streaming (for `exec` without
//! `-s` and `logs -f`).

use serde_json::Value;
use skiff_tests::cri::Node;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The crictl binary: `SKIFF_CRICTL`, else the one `scripts/gotools.sh` built.
fn crictl_binary() -> PathBuf {
    match std::env::var_os("SKIFF_CRICTL") {
        Some(path) => PathBuf::from(path),
        None => skiff_tests::kube::gotool("crictl").unwrap(),
    }
}

/// Runs crictl commands against one daemon.
struct Crictl {
    binary: PathBuf,
    endpoint: String,
    config: tempfile::NamedTempFile,
}

impl Crictl {
    fn new(binary: PathBuf, socket: &Path) -> Crictl {
        // An empty config file of our own, so a host's /etc/crictl.yaml cannot interfere.
        Crictl {
            binary,
            endpoint: format!("unix://{}", socket.display()),
            config: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(self.config.path())
            .args(["--runtime-endpoint", &self.endpoint])
            .args(["--image-endpoint", &self.endpoint])
            .args(["--timeout", "30s"])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs crictl and returns its stdout; fails the test with stderr if it failed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "crictl {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs crictl with `-o json` output and parses it.
    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

/// Writes `value` as a JSON file in `dir` and returns its path as a string.
fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn crictl_runs_a_pod_end_to_end() {
    let binary = crictl_binary();
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let crictl = Crictl::new(binary, &daemon.socket);
    let files = tempfile::tempdir().unwrap();

    let version = crictl.ok(&["version"]);
    assert!(version.contains("RuntimeName:  skiff"), "{version}");
    let info = crictl.json(&["info", "-o", "json"]);
    let conditions = info["status"]["conditions"].as_array().unwrap();
    assert!(conditions.iter().all(|c| c["status"] == true), "{info}");

    crictl.ok(&["pull", &image]);
    let images = crictl.ok(&["images"]);
    assert!(images.contains("busybox"), "{images}");

    let pod = write_json(
        files.path(),
        "pod.json",
        &serde_json::json!({
            "metadata": {"name": "crictl-pod", "namespace": "default", "uid": "crictl-uid", "attempt": 0},
            "hostname": "crictl-pod",
            "log_directory": logs.path(),
            "linux": {},
        }),
    );
    let container = write_json(
        files.path(),
        "container.json",
        &serde_json::json!({
            "metadata": {"name": "talker"},
            "image": {"image": image},
            "command": ["sh", "-c", "echo hello from crictl; while true; do echo tick; sleep 0.2; done"],
            "log_path": "talker.log",
            "linux": {},
        }),
    );
    let pod_id = crictl.ok(&["runp", &pod]).trim().to_string();
    let ctr_id = crictl
        .ok(&["create", &pod_id, &container, &pod])
        .trim()
        .to_string();
    crictl.ok(&["start", &ctr_id]);

    // ps / pods, in table and JSON form.
    let ps = crictl.ok(&["ps"]);
    assert!(ps.contains(&ctr_id[..13]) && ps.contains("Running"), "{ps}");
    let pods = crictl.json(&["pods", "-o", "json"]);
    assert_eq!(pods["items"][0]["id"], pod_id.as_str(), "{pods}");
    assert_eq!(pods["items"][0]["state"], "SANDBOX_READY");

    // inspect / inspectp: the state, and the pod's IP on the test network.
    let inspect = crictl.json(&["inspect", &ctr_id]);
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    assert_eq!(inspect["status"]["metadata"]["name"], "talker");
    let inspectp = crictl.json(&["inspectp", &pod_id]);
    let ip = inspectp["status"]["network"]["ip"].as_str().unwrap();
    let subnet = format!("10.216.{}.", daemon.network().unwrap().number);
    assert!(ip.starts_with(&subnet), "{inspectp}");

    // logs, and logs -f, which keeps printing new lines.
    let mut lines = String::new();
    for _ in 0..50 {
        lines = crictl.ok(&["logs", &ctr_id]);
        if lines.contains("tick") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(lines.starts_with("hello from crictl\n"), "{lines}");
    let mut follow = crictl
        .command(&["logs", "-f", "--tail", "1", &ctr_id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(follow.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        assert_eq!(followed.next().unwrap().unwrap(), "tick");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();

    // exec -s (ExecSync) and exec (the streaming server), with exit codes. crictl prints
    // ExecSync's stdout and stderr each with a newline of its own.
    assert_eq!(
        crictl.ok(&["exec", "-s", &ctr_id, "hostname"]),
        "crictl-pod\n\n\n"
    );
    assert_eq!(
        crictl.ok(&["exec", &ctr_id, "sh", "-c", "echo streamed"]),
        "streamed\n"
    );
    let failed = crictl
        .command(&["exec", "-s", &ctr_id, "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    // crictl 1.29 reports the command's exit code in its message and exits 1.
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("exited with 3"), "{stderr}");

    // stats for the running container.
    let stats = crictl.json(&["stats", "-o", "json", "--id", &ctr_id]);
    let entry = &stats["stats"][0];
    assert_eq!(entry["attributes"]["id"], ctr_id.as_str(), "{stats}");
    assert!(entry["memory"]["workingSetBytes"]["value"]
        .as_str()
        .is_some_and(|v| v.parse::<u64>().unwrap() > 0));

    // stop / rm, then stopp / rmp: each leaves what a user expects to see.
    crictl.ok(&["stop", "--timeout", "2", &ctr_id]);
    let stopped = crictl.json(&["inspect", &ctr_id]);
    assert_eq!(stopped["status"]["state"], "CONTAINER_EXITED", "{stopped}");
    crictl.ok(&["rm", &ctr_id]);
    let all = crictl.ok(&["ps", "-a", "-q"]);
    assert!(all.trim().is_empty(), "{all}");
    crictl.ok(&["stopp", &pod_id]);
    let pods = crictl.json(&["pods", "-o", "json"]);
    assert_eq!(pods["items"][0]["state"], "SANDBOX_NOTREADY", "{pods}");
    crictl.ok(&["rmp", &pod_id]);
    let pods = crictl.ok(&["pods", "-q"]);
    assert!(pods.trim().is_empty(), "{pods}");
}
