//! A real skiffd for a test: its own root, state dir and socket in a temp directory, started as
//! a child process and killed (and reaped) when the fixture drops, also when the test panics.

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use skiff_proto::runtime::v1::image_service_client::ImageServiceClient;
use skiff_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// A running skiffd and the directory it lives in.
pub struct Skiffd {
    child: Option<Child>,
    /// The test network, when the daemon has one (dropped after the daemon is gone).
    network: Option<TestNetwork>,
    /// Extra environment for the next (re)start, e.g. a crash point.
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    /// The CRI socket.
    pub socket: PathBuf,
    /// The config file the daemon was started with.
    pub config_path: PathBuf,
}

/// The skiffd binary built next to the running test or tool (`cargo build --bins` builds it;
/// the Makefile does that first). `SKIFFD_BIN` overrides.
pub fn skiffd_binary() -> PathBuf {
    sibling_binary("skiffd", "SKIFFD_BIN")
}

/// A workspace binary `name` from the same target profile directory as the running executable:
/// beside it (a tool in target/<profile>/) or one level up (a test in target/<profile>/deps/).
/// The environment variable `env_override` wins when set.
pub fn sibling_binary(name: &str, env_override: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable has a directory");
    let beside = dir.join(name);
    if beside.exists() {
        return beside;
    }
    dir.parent().map(|p| p.join(name)).unwrap_or(beside)
}

impl Skiffd {
    /// Starts skiffd with a fresh root; `extra_config` is appended to the generated TOML (for
    /// registry mirrors, a CNI conf dir…).
    pub fn start(extra_config: &str) -> Result<Skiffd> {
        let mut daemon = Skiffd::start_bare(extra_config)?;
        daemon.network = Some(TestNetwork::install(&daemon)?);
        Ok(daemon)
    }

    /// The test network of this daemon (bridge, subnet), if it has one.
    pub fn network(&self) -> Option<&TestNetwork> {
        self.network.as_ref()
    }

    /// Starts skiffd without any CNI network configured (pods then fail to get a network,
    /// as with containerd).
    pub fn start_bare(extra_config: &str) -> Result<Skiffd> {
        let mut daemon = Skiffd::prepare(extra_config)?;
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Like [`Skiffd::start`], with the root and state directories each on a tmpfs of
    /// `size_bytes` (to fill the disk under skiffd). The mounts go with the fixture, like every
    /// other mount under its directory.
    pub fn start_on_tmpfs(extra_config: &str, size_bytes: u64) -> Result<Skiffd> {
        let mut daemon = Skiffd::prepare(extra_config)?;
        for dir in [daemon.root_dir(), daemon.state_dir()] {
            std::fs::create_dir_all(&dir)?;
            nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(format!("size={size_bytes},mode=0755").as_str()),
            )
            .with_context(|| format!("mounting a tmpfs on {}", dir.display()))?;
        }
        daemon.spawn()?;
        daemon.network = Some(TestNetwork::install(&daemon)?);
        Ok(daemon)
    }

    /// skiffd's `root_dir` (images, state database).
    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// skiffd's `state_dir` (sandboxes, containers, runtime state, the socket).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Writes the config and creates the fixture, without starting the daemon.
    fn prepare(extra_config: &str) -> Result<Skiffd> {
        let dir = tempfile::Builder::new().prefix("skiffd-test-").tempdir()?;
        let socket = dir.path().join("run/skiff.sock");
        let cni_dir = dir.path().join("cni");
        let cni_bin = dir.path().join("cni-bin");
        std::fs::create_dir_all(&cni_dir)?;
        std::fs::create_dir_all(&cni_bin)?;
        let config = format!(
            "socket = {:?}\nroot_dir = {:?}\nstate_dir = {:?}\nlog_level = \"debug\"\n\
             [cni]\nconf_dir = {:?}\nbin_dirs = [{:?}]\n{extra_config}\n",
            socket,
            dir.path().join("root"),
            dir.path().join("run"),
            cni_dir,
            cni_bin,
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        Ok(Skiffd {
            child: None,
            network: None,
            env: Vec::new(),
            dir,
            socket,
            config_path,
        })
    }

    /// The fixture's temp directory (root is `dir/root`, state `dir/run`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CNI conf dir the daemon watches.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    /// The CNI plugin directory the daemon searches.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.path().join("cni-bin")
    }

    /// The daemon's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Mount points this daemon left: those under its directory in the host's mount table
    /// (except the pin space's own pin, `run/pins.mnt`, which lives as long as the node), and
    /// the pods' namespace pins inside its pin space (as `pin space:/sandboxes/...`).
    pub fn mounts_left(&self) -> Vec<String> {
        let dir = self.dir().display().to_string();
        let space = self.state_dir().join("pins.mnt").display().to_string();
        let points = |info: &str| -> Vec<String> {
            info.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(str::to_string)
                .collect()
        };
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut left: Vec<String> = points(&host)
            .into_iter()
            .filter(|p| p.starts_with(&dir) && *p != space)
            .collect();
        // `pinroot` links to the root of a skiffd thread inside the pin space; that thread's
        // mountinfo is the pin space's table.
        if let Ok(root) = std::fs::read_link(self.state_dir().join("pinroot")) {
            let inside =
                std::fs::read_to_string(root.with_file_name("mountinfo")).unwrap_or_default();
            left.extend(
                points(&inside)
                    .into_iter()
                    .filter(|p| p.starts_with("/sandboxes/"))
                    .map(|p| format!("pin space:{p}")),
            );
        }
        left
    }

    /// The daemon's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("skiffd.log")).unwrap_or_default()
    }

    /// Starts the process and waits until the socket accepts connections.
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("skiffd.log"))?;
        let binary = skiffd_binary();
        if !binary.exists() {
            bail!(
                "{} not found: run `cargo build --bins` first",
                binary.display()
            );
        }
        let child = Command::new(&binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("skiffd exited during startup ({status}):\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "skiffd did not open {} in time:\n{}",
            self.socket.display(),
            self.log()
        )
    }

    /// SIGKILLs the daemon (a crash), without cleanup of its own.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the daemon and returns its exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("skiffd is not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("skiffd ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sets (or with `None` removes) an environment variable for the next restart.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Waits (bounded) until the daemon process has exited on its own; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    self.child = None;
                    return true;
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    /// Kills the daemon and starts it again on the same root (crash recovery).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// A gRPC channel over the daemon's unix socket.
    pub async fn channel(&self) -> Result<Channel> {
        let socket = self.socket.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::try_from("http://skiffd.invalid")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await?;
        Ok(channel)
    }

    /// A RuntimeService client.
    pub async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    /// An ImageService client.
    pub async fn images(&self) -> Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }
}

impl Drop for Skiffd {
    fn drop(&mut self) {
        self.kill();
        // A test that failed half-way leaves containers behind: kill them through the runtime
        // (their monitors then exit) before anything is unmounted.
        let oci_root = self.dir.path().join("run/oci");
        delete_containers(&oci_root);
        kill_pause_processes(&self.dir.path().join("run"));
        // A delete fails while a process still holds the container's cgroup: a stray exec that
        // outlived its call, or one still dying (libcgroups retries its rmdir for only about
        // 0.1 s). The container's state stays, so retry what is left for a while.
        let deadline = Instant::now() + Duration::from_secs(3);
        while has_entries(&oci_root) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            delete_containers(&oci_root);
        }
        remove_empty_default_cgroup_parent();
        // A test that failed half-way leaves pods behind: release whatever the daemon mounted
        // under its directory (pinned namespaces, rootfs overlays), deepest first, so nothing
        // outlives the test.
        unmount_below(self.dir.path());
        if let Some(network) = self.network.take() {
            network.remove_bridge();
        }
    }
}

/// A CNI network of its own for one test daemon: the bundled plugins, a bridge and a /24 that
/// no other test uses at the same time (a lock file per subnet number, held while the test runs).
pub struct TestNetwork {
    /// Subnet number N: the pods get 10.216.N.0/24.
    pub number: u8,
    /// The bridge, `sktN`.
    pub bridge: String,
    conflist: serde_json::Value,
    bin_dir: PathBuf,
    _lock: std::fs::File,
}

impl TestNetwork {
    fn install(daemon: &Skiffd) -> Result<TestNetwork> {
        let (number, lock) = claim_subnet()?;
        for plugin in ["skiff-bridge", "skiff-portmap"] {
            let source = sibling_binary(plugin, "SKIFF_CNI_BIN_DIR_UNUSED");
            std::os::unix::fs::symlink(&source, daemon.cni_bin_dir().join(plugin))
                .with_context(|| format!("linking {}", source.display()))?;
        }
        let bridge = format!("skt{number}");
        let conflist = serde_json::json!({
            "cniVersion": "1.1.0",
            "name": format!("skiff-test-{number}"),
            "plugins": [
                {
                    "type": "skiff-bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.216.{number}.0/24")}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": daemon.dir().join("cni-leases"),
                    }
                },
                {"type": "skiff-portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(
            daemon.cni_conf_dir().join("10-test.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )?;
        Ok(TestNetwork {
            number,
            bridge,
            conflist,
            bin_dir: daemon.cni_bin_dir(),
            _lock: lock,
        })
    }

    /// CNI GC with no valid attachments: the plugins release every lease and nftables rule a
    /// failed test left (the same mechanism skiffd uses at startup).
    fn collect_garbage(&self) {
        let Some(plugins) = self.conflist["plugins"].as_array() else {
            return;
        };
        for plugin in plugins {
            let mut config = plugin.clone();
            config["cniVersion"] = self.conflist["cniVersion"].clone();
            config["name"] = self.conflist["name"].clone();
            config["cni.dev/valid-attachments"] = serde_json::json!([]);
            let kind = plugin["type"].as_str().unwrap_or_default();
            let Ok(mut child) = Command::new(self.bin_dir.join(kind))
                .env("CNI_COMMAND", "GC")
                .env("CNI_PATH", &self.bin_dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            else {
                continue;
            };
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                let _ = stdin.write_all(config.to_string().as_bytes());
            }
            let _ = child.wait();
        }
    }

    /// The gateway (bridge) address, `10.216.N.1`.
    pub fn gateway(&self) -> String {
        format!("10.216.{}.1", self.number)
    }

    /// Releases what a failed test left (leases, rules) and deletes the bridge the plugin
    /// created (pods are gone by now).
    fn remove_bridge(&self) {
        self.collect_garbage();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// Takes the first free subnet number, holding its lock file until the returned file closes.
fn claim_subnet() -> Result<(u8, std::fs::File)> {
    let dir = std::env::temp_dir().join("skiff-test-subnets");
    std::fs::create_dir_all(&dir)?;
    for number in 1..=250u8 {
        let file = std::fs::File::create(dir.join(format!("{number}.lock")))?;
        if file.try_lock().is_ok() {
            return Ok((number, file));
        }
    }
    bail!("no free test subnet: 250 test daemons at once?")
}

/// Force-deletes every container in the OCI runtime state dir `oci_root`.
/// skiffd drops its default cgroup parent `/skiff` when it removes the last container in it;
/// containers deleted here bypass skiffd. rmdir fails while another test's containers use it.
fn remove_empty_default_cgroup_parent() {
    for controller in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(controller.path().join("skiff"));
    }
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn delete_containers(oci_root: &Path) {
    let Ok(entries) = std::fs::read_dir(oci_root) else {
        return;
    };
    let runtime = sibling_binary("skiff-oci", "SKIFF_OCI_BIN");
    for entry in entries.flatten() {
        let _ = Command::new(&runtime)
            .arg("--root")
            .arg(oci_root)
            .args(["delete", "--force"])
            .arg(entry.file_name())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The PID namespaces pinned in the pin space of the daemon whose state directory is
/// `state_dir`, read from inside it: the daemon (whose thread `pinroot` leads into it) may be
/// dead already, but `pins.mnt` still holds the pin space.
fn pinned_pid_namespaces(state_dir: &Path) -> Vec<(u64, u64)> {
    use nix::sched::{setns, unshare, CloneFlags};
    use std::os::unix::fs::MetadataExt;
    let Ok(space) = std::fs::File::open(state_dir.join("pins.mnt")) else {
        return Vec::new();
    };
    // setns applies to this thread only, and only once it stops sharing its root with the
    // test's other threads; the thread ends right after.
    std::thread::spawn(move || {
        if unshare(CloneFlags::CLONE_FS).is_err() || setns(&space, CloneFlags::CLONE_NEWNS).is_err()
        {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/sandboxes") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("ns/pid")).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect()
    })
    .join()
    .unwrap_or_default()
}

/// Kills the pause processes holding the shared PID namespaces pinned in the daemon's pin
/// space.
fn kill_pause_processes(state_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let pinned = pinned_pid_namespaces(state_dir);
    if pinned.is_empty() {
        return;
    }
    for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(proc_entry.path().join("ns/pid")) else {
            continue;
        };
        if pinned.contains(&(ns.dev(), ns.ino())) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}
