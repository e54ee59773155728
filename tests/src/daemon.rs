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
        let mut daemon = Skiffd {
            child: None,
            dir,
            socket,
            config_path,
        };
        daemon.spawn()?;
        Ok(daemon)
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
    }
}
