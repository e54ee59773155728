//! A busybox image built from the host's static `/bin/busybox` (Debian `busybox-static`),
//! cached as OCI layouts under `<target dir>/skiff-test-images/`.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};

use crate::oci_layout::{sha256_digest, Entry, ImageDigests, ImageSpec, Layer};

/// The tag of the image in every busybox layout.
pub const BUSYBOX_TAG: &str = "latest";
/// The host binary the image is made of; must be statically linked.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// `PATH` in the image config.
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Uid and gid of the image's `skiff` user.
pub const SKIFF_UID: u32 = 1000;
/// Bump when the image contents change so cached layouts are rebuilt.
const CACHE_VERSION: u32 = 2;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
skiff:x:1000:1000:skiff:/home/skiff:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "root:x:0:
skiff:x:1000:
nogroup:x:65534:
";

/// Which busybox image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant<'a> {
    /// Runs as root.
    Plain,
    /// Config `User: "skiff"` (uid 1000).
    User,
    /// Like `Plain` plus a top layer with `/marker` holding this string, so images differ.
    Marker(&'a str),
}

impl Variant<'_> {
    /// The cache directory name of this variant.
    pub fn name(&self) -> String {
        match self {
            Variant::Plain => "plain".to_string(),
            Variant::User => "user".to_string(),
            // Hash the marker: it may hold anything, including `/`.
            Variant::Marker(m) => format!("marker-{}", &sha256_digest(m.as_bytes())[7..23]),
        }
    }
}

/// The image spec of a busybox variant: one layer, like real busybox images, with busybox and
/// its applet links in `/bin`, users and the usual directories; `Marker` adds a second layer
/// with `/marker`, so marker images share the first.
pub fn busybox_spec(variant: Variant) -> Result<ImageSpec> {
    let binary = fs::read(HOST_BUSYBOX)
        .with_context(|| format!("reading {HOST_BUSYBOX} (Debian package busybox-static)"))?;
    let mut layer = Layer::new()
        .dir("/bin", 0o755)
        .file("/bin/busybox", binary, 0o755);
    for applet in applets()? {
        layer = layer.symlink(&format!("/bin/{applet}"), "busybox");
    }
    let layer = layer
        .dir("/etc", 0o755)
        .file("/etc/passwd", PASSWD, 0o644)
        .file("/etc/group", GROUP, 0o644)
        .dir("/tmp", 0o1777)
        .dir("/root", 0o700)
        .dir("/home", 0o755)
        .entry(Entry::dir("/home/skiff", 0o755).owner(SKIFF_UID.into(), SKIFF_UID.into()))
        // Mount points exist as in real images, so a read-only rootfs can still be mounted on.
        .dir("/dev", 0o755)
        .dir("/proc", 0o555)
        .dir("/sys", 0o555);

    let mut spec = ImageSpec::new()
        .layer(layer)
        .env("PATH", IMAGE_PATH)
        .cmd(&["sh"]);
    match variant {
        Variant::Plain => {}
        Variant::User => spec = spec.user("skiff"),
        Variant::Marker(marker) => {
            spec = spec.layer(Layer::new().file("/marker", marker, 0o644));
        }
    }
    Ok(spec)
}

/// Applet names of the host busybox, except `busybox` itself.
pub fn applets() -> Result<Vec<String>> {
    applets_of(Path::new(HOST_BUSYBOX))
}

/// Applet names of the busybox binary `busybox`, except `busybox` itself.
pub fn applets_of(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list failed: {}", busybox.display(), out.status);
    }
    let list = String::from_utf8(out.stdout)?;
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(String::from)
        .collect())
}

/// Writes the busybox image `variant` into the layout at `out` under `tag`.
pub fn write_busybox_layout(variant: Variant, out: &Path, tag: &str) -> Result<ImageDigests> {
    busybox_spec(variant)?.write(out, tag)
}

/// The cached OCI layout of a busybox variant (tag [`BUSYBOX_TAG`]), built on first use.
///
/// # Panics
/// If the layout cannot be built; see [`try_busybox_layout`].
pub fn busybox_layout(variant: Variant) -> PathBuf {
    try_busybox_layout(variant)
        .unwrap_or_else(|e| panic!("building busybox layout {variant:?}: {e:#}"))
}

/// The cached OCI layout of a busybox variant, building it if needed. An exclusive `flock`
/// per variant makes parallel test processes build it once and wait for each other.
pub fn try_busybox_layout(variant: Variant) -> Result<PathBuf> {
    let cache = test_images_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let name = variant.name();
    let layout = cache.join(&name);
    let complete = cache.join(format!("{name}.complete"));

    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join(format!("{name}.lock")))?;
    // Released when `lock` is closed at return.
    lock.lock()?;

    let stamp = cache_stamp()?;
    if fs::read_to_string(&complete).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(layout);
    }
    // Missing, stale or interrupted: build from scratch, marking completion last.
    let _ = fs::remove_file(&complete);
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    write_busybox_layout(variant, &layout, BUSYBOX_TAG)?;
    fs::write(&complete, stamp)?;
    Ok(layout)
}

/// Identifies what a cached layout was built from: this code's version and the host binary.
fn cache_stamp() -> Result<String> {
    let meta = fs::metadata(HOST_BUSYBOX).with_context(|| format!("stat {HOST_BUSYBOX}"))?;
    let mtime = meta.modified()?.duration_since(UNIX_EPOCH)?.as_nanos();
    Ok(format!("v{CACHE_VERSION} {} {mtime}\n", meta.len()))
}

/// `<workspace target dir>/skiff-test-images`.
pub fn test_images_dir() -> PathBuf {
    target_dir().join("skiff-test-images")
}

/// The cargo target dir: the nearest ancestor of the running executable (a test binary in
/// `target/debug/deps` or a tool in `target/debug`) holding cargo's `CACHEDIR.TAG`, else the
/// workspace's `target`.
fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
            return dir.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}
