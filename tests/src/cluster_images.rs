//! The images a Kubernetes cluster on skiff runs, built offline from real software on this
//! host and pushed to a registry under their public names, so that skiffd's registry mirrors
//! serve `nginx` as Docker Hub would:
//!
//! - `docker.io/library/nginx`: Debian's nginx package (`apt-get download`), with the shared
//!   libraries its binary links (from the host, which runs the same Debian release), configured
//!   as the official image is: one server on port 80 serving `/usr/share/nginx/html`, logs to
//!   the container's stdout and stderr, `daemon off`; busybox gives it a shell and tools.
//! - `docker.io/library/busybox`: the host's busybox-static with every applet (see
//!   [`crate::busybox`]). It is also the walkthrough's client (wget, nslookup, nc): the seed's
//!   alpine cannot be built from a Debian package.
//! - `registry.k8s.io/coredns/coredns`: the CoreDNS binary built by `scripts/gotools.sh`.
//! - `docker.io/skiff/pause:busybox`: busybox sleeping forever, containerd's sandbox image
//!   when it is the node's runtime for comparison.
//!
//! Each image is tagged with its real version too (`nginx:1.22.1`, `busybox:1.35.0`,
//! `coredns:v1.15.0`) and never with a version it is not.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::busybox::{applets, busybox_spec, Variant, HOST_BUSYBOX, IMAGE_PATH};
use crate::oci_layout::{ImageSpec, Layer};
use crate::registry::{push_to, Format};

/// One image pushed: its public name and its manifest digest.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The public reference it answers to through the mirrors, e.g. `docker.io/library/nginx:1.22.1`.
    pub name: String,
    /// The manifest digest.
    pub digest: String,
}

/// Builds every cluster image and pushes it to `registry` (`host:port`, plain HTTP). `coredns`
/// is the CoreDNS binary; `work` holds downloaded packages and layouts between runs.
pub fn push_cluster_images(registry: &str, coredns: &Path, work: &Path) -> Result<Vec<Pushed>> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let mut pushed = Vec::new();

    let (nginx, nginx_version) = nginx_spec(&work.join("debs"))?;
    pushed.extend(publish(
        &nginx,
        work,
        registry,
        "docker.io/library/nginx",
        &version_tags(&nginx_version),
    )?);

    let busybox_version = busybox_version()?;
    pushed.extend(publish(
        &busybox_spec(Variant::Plain)?,
        work,
        registry,
        "docker.io/library/busybox",
        &version_tags(&busybox_version),
    )?);

    // containerd's sandbox image, for `scripts/cluster.sh runtime containerd` (skiff needs
    // none): anything that sleeps forever holds a pod's namespaces as the real pause does.
    pushed.extend(publish(
        &busybox_spec(Variant::Plain)?.cmd(&["sleep", "infinity"]),
        work,
        registry,
        "docker.io/skiff/pause",
        &["busybox".to_string()],
    )?);

    let coredns_version = coredns_version(coredns)?;
    pushed.extend(publish(
        &coredns_spec(coredns)?,
        work,
        registry,
        "registry.k8s.io/coredns/coredns",
        &[format!("v{coredns_version}")],
    )?);
    Ok(pushed)
}

/// `latest`, the full version and its major.minor: `1.22.1` gives `latest`, `1.22.1`, `1.22`.
fn version_tags(version: &str) -> Vec<String> {
    let mut tags = vec!["latest".to_string(), version.to_string()];
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 2 {
        tags.push(parts[..2].join("."));
    }
    tags
}

/// Writes `spec` to a layout and pushes it as `repository:tag` for each tag. The repository is
/// the public name without its registry host: every mirrored host shares the local registry.
pub fn publish(
    spec: &ImageSpec,
    work: &Path,
    registry: &str,
    repository: &str,
    tags: &[String],
) -> Result<Vec<Pushed>> {
    let (_, path) = repository
        .split_once('/')
        .context("a public name has a registry host")?;
    let layout = work.join("layouts").join(path.replace('/', "_"));
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    spec.write(&layout, "build")?;
    tags.iter()
        .map(|tag| {
            let digest = push_to(
                &layout,
                "build",
                &format!("{registry}/{path}:{tag}"),
                Format::Oci,
                false,
            )?;
            Ok(Pushed {
                name: format!("{repository}:{tag}"),
                digest,
            })
        })
        .collect()
}

/// Debian's nginx, as the official image runs it. Returns the spec and nginx's version.
pub fn nginx_spec(debs: &Path) -> Result<(ImageSpec, String)> {
    let root = unpack_debs(debs, &["nginx", "nginx-common"])?;
    let binary = root.join("usr/sbin/nginx");
    let version = deb_version(debs, "nginx")?;

    let mut files = RootBuilder::default();
    files.usrmerge_links();
    files.host_file(&binary, "/usr/sbin/nginx", 0o755)?;
    files.libraries_of(&binary)?;
    files.tree(&root, "etc/nginx")?;
    files.tree(&root, "usr/share/nginx/html")?;
    // A shell and the usual tools for `kubectl exec -it nginx -- sh`: the official image has
    // Debian's bash and coreutils; this one has busybox (from busybox-static) in their place.
    files.host_file(Path::new(HOST_BUSYBOX), "/usr/bin/busybox", 0o755)?;
    for applet in applets()? {
        files.symlink(&format!("/usr/bin/{applet}"), "busybox");
    }
    // Debian's site is replaced by the official image's: a server answering on port 80 from
    // /usr/share/nginx/html (its "Welcome to nginx!" page).
    files.remove_prefix("/etc/nginx/sites-available");
    files.add(
        "/etc/nginx/conf.d/default.conf",
        b"server {\n    listen 80;\n    listen [::]:80;\n    server_name localhost;\n    \
          location / {\n        root /usr/share/nginx/html;\n        index index.html index.htm;\n    }\n}\n"
            .to_vec(),
        0o644,
    );
    files.dir("/etc/nginx/sites-enabled", 0o755);
    files.dir("/etc/nginx/modules-enabled", 0o755);
    files.dir("/var/lib/nginx", 0o755);
    files.dir("/run", 0o755);
    // As in Debian (the official image's base): the official nginx writes /var/run/nginx.pid,
    // which critest's HostPID spec waits for; Debian's nginx writes /run/nginx.pid.
    files.symlink("/var/run", "/run");
    files.dir("/tmp", 0o1777);
    // Logs go to the container's output, where `kubectl logs` finds them.
    files.symlink("/var/log/nginx/access.log", "/dev/stdout");
    files.symlink("/var/log/nginx/error.log", "/dev/stderr");
    files.add(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            .to_vec(),
        0o644,
    );
    files.add(
        "/etc/group",
        b"root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n".to_vec(),
        0o644,
    );
    let spec = ImageSpec::new()
        .layer(files.into_layer())
        .env("PATH", IMAGE_PATH)
        .env("NGINX_VERSION", &version)
        .cmd(&["nginx", "-g", "daemon off;"]);
    Ok((spec, version))
}

/// CoreDNS: its static binary alone, as the upstream image (which adds only CA certificates).
pub fn coredns_spec(binary: &Path) -> Result<ImageSpec> {
    let mut files = RootBuilder::default();
    files.host_file(binary, "/coredns", 0o755)?;
    files.dir("/etc/coredns", 0o755);
    files.dir("/tmp", 0o1777);
    Ok(ImageSpec::new()
        .layer(files.into_layer())
        .entrypoint(&["/coredns"]))
}

/// `1.15.0` from `coredns -version` (`CoreDNS-1.15.0`).
fn coredns_version(binary: &Path) -> Result<String> {
    let out = run(Command::new(binary).arg("-version"))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("CoreDNS-"))
        .map(str::to_string)
        .with_context(|| format!("no version in `{} -version`: {out}", binary.display()))
}

/// `1.35.0` from the host busybox's banner (`BusyBox v1.35.0 (Debian …)`).
fn busybox_version() -> Result<String> {
    let out = Command::new(HOST_BUSYBOX)
        .output()
        .context("running busybox")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .with_context(|| format!("no version in the busybox banner: {text}"))
}

/// Downloads `packages` (`apt-get download`, cached in `debs`) and unpacks them into
/// `debs/root`, which is returned.
pub fn unpack_debs(debs: &Path, packages: &[&str]) -> Result<PathBuf> {
    fs::create_dir_all(debs)?;
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| find_deb(debs, p).is_none())
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get")
            .arg("download")
            .args(&missing)
            .current_dir(debs))
        .context("downloading Debian packages (apt-get update may be needed)")?;
    }
    let root = debs.join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    for package in packages {
        let deb = find_deb(debs, package).with_context(|| format!("{package}.deb"))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    Ok(root)
}

/// The downloaded `.deb` of `package` (named `package_version_arch.deb`).
pub fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(debs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
}

/// The upstream version of a downloaded package: `1.22.1` of `1.22.1-9+deb12u12`.
pub fn deb_version(debs: &Path, package: &str) -> Result<String> {
    let deb = find_deb(debs, package).with_context(|| format!("{package}.deb"))?;
    let full = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Version"))?;
    let full = full.trim();
    let upstream = full.split_once(':').map_or(full, |(_, v)| v);
    Ok(upstream.split('-').next().unwrap_or(upstream).to_string())
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A root filesystem assembled path by path; parents are added as directories.
#[derive(Default)]
pub struct RootBuilder {
    /// Path → entry, so a later entry replaces an earlier one and the tar is sorted.
    entries: std::collections::BTreeMap<String, Node>,
}

enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(String),
}

impl RootBuilder {
    fn parents(&mut self, path: &str) {
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.and_then(|p| p.to_str()).filter(|p| *p != "/") {
            self.entries
                .entry(dir.to_string())
                .or_insert(Node::Dir(0o755));
            parent = Path::new(dir).parent();
        }
    }

    /// A file with `content` at `path`.
    pub fn add(&mut self, path: &str, content: Vec<u8>, mode: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_string(), Node::File(content, mode));
    }

    /// A directory at `path`.
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.parents(path);
        self.entries.insert(path.to_string(), Node::Dir(mode));
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries
            .insert(path.to_string(), Node::Symlink(target.to_string()));
    }

    /// Drops every path starting with `prefix`.
    pub fn remove_prefix(&mut self, prefix: &str) {
        self.entries.retain(|path, _| !path.starts_with(prefix));
    }

    /// Debian 12's merged /usr: /bin, /sbin, /lib and /lib64 are links into /usr.
    pub fn usrmerge_links(&mut self) {
        for dir in ["bin", "sbin", "lib", "lib64"] {
            self.symlink(&format!("/{dir}"), &format!("usr/{dir}"));
        }
    }

    /// The image path of a host path under merged /usr: `/lib/x` is stored as `/usr/lib/x`.
    fn merged(path: &str) -> String {
        for dir in ["/bin/", "/sbin/", "/lib/", "/lib64/"] {
            if let Some(rest) = path.strip_prefix(dir) {
                return format!("/usr{dir}{rest}");
            }
        }
        path.to_string()
    }

    /// The host file `host` at `path`.
    pub fn host_file(&mut self, host: &Path, path: &str, mode: u32) -> Result<()> {
        let content = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.add(path, content, mode);
        Ok(())
    }

    /// Every shared library `binary` loads (as `ldd` resolves them on this host) and the
    /// dynamic loader, each at the path the loader looks it up by.
    pub fn libraries_of(&mut self, binary: &Path) -> Result<()> {
        let out = run(Command::new("ldd").arg(binary))?;
        let mut paths = BTreeSet::new();
        for line in out.lines() {
            let line = line.trim();
            if line.contains("not found") {
                bail!(
                    "{}: {line} (install the library's package)",
                    binary.display()
                );
            }
            // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or `/lib64/ld-linux… (0x…)`
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                paths.insert(path.to_string());
            }
        }
        for path in paths {
            // The file itself (symlinks followed): the loader finds it by this name.
            self.host_file(Path::new(&path), &Self::merged(&path), 0o755)?;
        }
        Ok(())
    }

    /// Everything under `root/sub`, at `/sub` in the image.
    pub fn tree(&mut self, root: &Path, sub: &str) -> Result<()> {
        let top = root.join(sub);
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let host = entry?.path();
                let rel = host
                    .strip_prefix(root)?
                    .to_str()
                    .context("non-UTF-8 path")?;
                let path = format!("/{rel}");
                let meta = fs::symlink_metadata(&host)?;
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&host)?;
                    self.symlink(&path, target.to_str().context("non-UTF-8 link")?);
                } else if meta.is_dir() {
                    self.dir(&path, mode);
                    stack.push(host);
                } else {
                    self.host_file(&host, &path, mode)?;
                }
            }
        }
        Ok(())
    }

    /// One layer holding every path, in path order.
    pub fn into_layer(self) -> Layer {
        let mut layer = Layer::new();
        for (path, node) in self.entries {
            layer = match node {
                Node::Dir(mode) => layer.dir(&path, mode),
                Node::File(content, mode) => layer.file(&path, content, mode),
                Node::Symlink(target) => layer.symlink(&path, &target),
            };
        }
        layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_latest_the_version_and_its_minor() {
        assert_eq!(version_tags("1.22.1"), ["latest", "1.22.1", "1.22"]);
        assert_eq!(version_tags("1.35"), ["latest", "1.35"]);
    }

    #[test]
    fn host_library_paths_land_under_merged_usr() {
        assert_eq!(
            RootBuilder::merged("/lib/x86_64-linux-gnu/libz.so.1"),
            "/usr/lib/x86_64-linux-gnu/libz.so.1"
        );
        assert_eq!(
            RootBuilder::merged("/lib64/ld-linux-x86-64.so.2"),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(RootBuilder::merged("/usr/lib/x/y"), "/usr/lib/x/y");
    }

    #[test]
    fn parents_are_directories_and_later_entries_win() {
        let mut root = RootBuilder::default();
        root.add("/a/b/c", b"1".to_vec(), 0o644);
        root.add("/a/b/c", b"2".to_vec(), 0o600);
        root.symlink("/a/link", "b/c");
        let kinds: Vec<(String, &str)> = root
            .entries
            .iter()
            .map(|(p, n)| {
                let kind = match n {
                    Node::Dir(_) => "dir",
                    Node::File(content, _) if content == b"2" => "file 2",
                    Node::File(..) => "file",
                    Node::Symlink(_) => "link",
                };
                (p.clone(), kind)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("/a".to_string(), "dir"),
                ("/a/b".to_string(), "dir"),
                ("/a/b/c".to_string(), "file 2"),
                ("/a/link".to_string(), "link"),
            ]
        );
    }
}
