//! Safe extraction of one OCI image layer into its own directory.
//!
//! Each layer is unpacked in isolation into an empty directory that later becomes one overlayfs
//! lower dir. That shapes two things:
//!
//! * **Whiteouts.** OCI marks deletions with `.wh.<name>` files and opaque directories with
//!   `.wh..wh..opq`. Overlayfs uses a 0:0 character device and the `trusted.overlay.opaque`
//!   xattr instead, so we translate while extracting.
//! * **Hostile tars.** A layer comes from a registry and must never touch the host. We never hand
//!   a path with more than one component to the kernel: every parent directory is opened one
//!   component at a time from a descriptor of the layer root with `O_NOFOLLOW`, and every
//!   file operation is done relative to the parent's descriptor with "don't follow" flags. A
//!   symlink in the way is refused, not followed.
//!
//! The `tar` crate parses headers (PAX and GNU long names included); path resolution and file
//! creation are ours.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use tar::EntryType;

mod limits;
use limits::{Breach, Meter};
pub use limits::{
    UnpackLimits, DEFAULT_MAX_LAYER_BYTES, DEFAULT_MAX_LAYER_ENTRIES, MAX_METADATA_BYTES,
};

/// Result of unpacking one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// `sha256:<hex>` of the whole uncompressed tar stream: the layer's DiffID.
    pub diff_id: String,
    /// Bytes of regular-file content written.
    pub size: u64,
}

/// Why a layer could not be unpacked.
///
/// On any error the destination may hold a partial extraction; the caller discards it.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The stream could not be read or decompressed, or is not a valid tar.
    #[error("reading layer stream: {0}")]
    Read(#[source] io::Error),
    /// The destination directory could not be opened.
    #[error("opening destination {}: {source}", path.display())]
    Destination {
        /// The directory we were asked to fill.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The entry would be written (or would link to something) outside the layer root.
    #[error("tar entry {entry:?} escapes the layer root: {reason}")]
    PathEscape {
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// The entry is malformed or cannot be applied (e.g. a hard link to a missing file).
    #[error("tar entry {entry:?} is invalid: {reason}")]
    InvalidEntry {
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The entry has a type we do not extract (GNU sparse, tape volume headers, ...).
    #[error("tar entry {entry:?} has unsupported type {kind}")]
    UnsupportedEntryType {
        /// The entry's path as written in the tar.
        entry: String,
        /// The type, as the tar crate names it, with its type flag byte.
        kind: String,
    },
    /// The uncompressed stream is longer than [`UnpackLimits::max_bytes`] (a decompression
    /// bomb, or a layer too big for this node).
    #[error("the uncompressed layer exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// An entry declares more content than the rest of the byte limit allows; refused before
    /// any of it is written.
    #[error(
        "tar entry {entry:?} declares {size} bytes, more than the {left} left of the limit of \
         {limit} uncompressed bytes per layer"
    )]
    EntryTooLarge {
        /// The entry's path as written in the tar.
        entry: String,
        /// The size its header declares.
        size: u64,
        /// What was left of the limit when the entry came.
        left: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The layer has more entries than [`UnpackLimits::max_entries`].
    #[error("the layer has more than {limit} entries, the limit")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// One entry's header records (long names, PAX) exceed [`MAX_METADATA_BYTES`].
    #[error("a tar header with its long-name and PAX records exceeds {limit} bytes")]
    HeaderTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A filesystem operation failed while writing the entry.
    #[error("tar entry {entry:?}: {op} failed: {source}")]
    Io {
        /// The entry's path as written in the tar.
        entry: String,
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// True when the layer was refused for crossing a configured size or count limit, not
    /// for being malformed or hostile.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            UnpackError::TooLarge { .. }
                | UnpackError::EntryTooLarge { .. }
                | UnpackError::TooManyEntries { .. }
                | UnpackError::HeaderTooLarge { .. }
        )
    }

    fn escape(entry: &str, reason: impl Into<String>) -> Self {
        UnpackError::PathEscape {
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn invalid(entry: &str, reason: impl Into<String>) -> Self {
        UnpackError::InvalidEntry {
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn io(entry: &str, op: &'static str, source: impl Into<io::Error>) -> Self {
        UnpackError::Io {
            entry: entry.to_string(),
            op,
            source: source.into(),
        }
    }
}

/// The OCI prefix marking a whiteout file.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI name marking its directory as opaque.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Names starting with this are OCI/AUFS metadata, not whiteouts.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The overlayfs xattr that makes a directory opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Xattr namespaces overlayfs interprets (`user.overlay.` with the `userxattr` mount option).
/// A layer must not smuggle these in: they would change what the merged view shows.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// PAX records carrying xattrs, as written by GNU tar, Go's archive/tar and BuildKit.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Extracts one OCI layer (`blob`: a tar, gzip- or zstd-compressed tar) into `dest`, an existing
/// empty directory, and returns its DiffID and the bytes of file content written. The default
/// [`UnpackLimits`] apply; see [`unpack_layer_limited`].
///
/// Blocking; needs root (chown, mknod, `trusted.*` xattrs).
pub fn unpack_layer<R: Read>(blob: R, dest: &Path) -> Result<UnpackedLayer, UnpackError> {
    unpack_layer_limited(blob, dest, &UnpackLimits::default())
}

/// Like [`unpack_layer`], refusing a layer that expands beyond `limits`.
///
/// OCI whiteouts become overlayfs whiteouts. Entries that would land outside `dest` (absolute
/// paths, `..` climbing out, a symlink among the parent components, hard links whose target is
/// outside or missing) abort the extraction with an error naming the entry. A stream longer
/// than `limits.max_bytes` is not decompressed further than one byte past the limit.
///
/// Blocking; needs root (chown, mknod, `trusted.*` xattrs).
pub fn unpack_layer_limited<R: Read>(
    blob: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackedLayer, UnpackError> {
    let root = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Destination {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;

    let meter = Meter::new(limits.max_bytes);
    let stream = HashingReader::new(meter.reader(decompress(blob).map_err(UnpackError::Read)?));
    let mut extractor = Extractor {
        root,
        size: 0,
        dir_times: BTreeMap::new(),
        meter: meter.clone(),
        max_bytes: limits.max_bytes,
    };
    // Once a bound is crossed, whatever error the tar reader made of it is reported as the
    // limit, which is what the user needs to know.
    let over_limit = |e: UnpackError| match meter.breach() {
        Some(Breach::Bytes) => UnpackError::TooLarge {
            limit: limits.max_bytes,
        },
        Some(Breach::Metadata) => UnpackError::HeaderTooLarge {
            limit: MAX_METADATA_BYTES,
        },
        None => e,
    };
    let mut archive = tar::Archive::new(stream);
    let mut entries = archive.entries().map_err(UnpackError::Read)?;
    let mut count = 0u64;
    loop {
        meter.start_metadata();
        let Some(entry) = entries.next() else {
            break;
        };
        meter.start_content();
        let mut entry = entry.map_err(|e| over_limit(UnpackError::Read(e)))?;
        count += 1;
        if count > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        extractor.extract(&mut entry).map_err(over_limit)?;
        // Content nobody wrote (a whiteout or a link with data) is read here, as content, so
        // the tar reader never skips over it while only header bytes are allowed.
        io::copy(&mut entry, &mut io::sink()).map_err(|e| over_limit(UnpackError::Read(e)))?;
    }
    meter.start_content();
    extractor.set_dir_times()?;

    // The DiffID covers the whole stream, including the zero blocks and padding after the last
    // entry that the tar reader stops short of.
    let mut stream = archive.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(|e| over_limit(UnpackError::Read(e)))?;
    Ok(UnpackedLayer {
        diff_id: format!("sha256:{}", hex::encode(stream.hasher.finalize())),
        size: extractor.size,
    })
}

/// Picks the decompressor from the stream's magic bytes.
fn decompress<'a, R: Read + 'a>(mut blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut filled = 0;
    while filled < magic.len() {
        match blob.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Put the peeked bytes back in front of the rest of the stream.
    let whole = io::Cursor::new(magic[..filled].to_vec()).chain(blob);
    Ok(match &magic[..filled] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(whole)?),
        _ => Box::new(whole),
    })
}

/// Passes bytes through while hashing them.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Splits a tar path into in-root components: empty and `.` parts are dropped and `..` pops the
/// previous part. Returns the reason when the path is absolute or `..` climbs above the root.
fn clean_path(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("`..` climbs above the layer root");
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

/// Shows path components for error messages.
fn display(parts: &[&[u8]]) -> String {
    String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
}

/// Why walking down to a directory stopped, with the index of the offending component.
enum WalkError {
    Symlink(usize),
    NotDirectory(usize),
    Missing(usize),
    Os(Errno),
}

/// What kind of node metadata is applied to; some calls do not apply to every kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Directory,
    Symlink,
    /// Regular files, devices and fifos.
    Other,
}

/// Ownership, permissions, times and xattrs of one entry.
struct Metadata {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Metadata {
    fn from_entry<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Self, UnpackError> {
        let header = entry.header();
        let bad = |what: &str, e: io::Error| UnpackError::invalid(name, format!("{what}: {e}"));
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        // The tar crate has already applied PAX uid/gid overrides to the header.
        let uid = header.uid().map_err(|e| bad("uid", e))?;
        let gid = header.gid().map_err(|e| bad("gid", e))?;
        let uid = u32::try_from(uid).map_err(|_| UnpackError::invalid(name, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| UnpackError::invalid(name, "gid out of range"))?;
        let mtime = header.mtime().map_err(|e| bad("mtime", e))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(mtime).map_err(|_| UnpackError::invalid(name, "bad mtime"))?,
            tv_nsec: 0,
        };

        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for record in pax {
                let record = record.map_err(|e| bad("PAX record", e))?;
                let key = record.key_bytes();
                if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if !OVERLAY_XATTR_PREFIXES.iter().any(|p| xattr.starts_with(p)) {
                        xattrs.push((xattr.to_vec(), record.value_bytes().to_vec()));
                    }
                } else if key == b"mtime" {
                    // PAX carries sub-second precision; keep the header's value if unparsable.
                    if let Some(precise) = parse_pax_time(record.value_bytes()) {
                        mtime = precise;
                    }
                }
            }
        }
        Ok(Metadata {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }
}

/// Parses a PAX time such as `1700000000.123456789` or `-1.5`.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut tv_sec: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Keep at most nanosecond digits, right-padded: "5" is 500_000_000 ns.
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut tv_nsec: i64 = digits.parse().ok()?;
    // The fraction extends a negative time further from zero.
    if secs.starts_with('-') && tv_nsec > 0 {
        tv_sec = tv_sec.checked_sub(1)?;
        tv_nsec = 1_000_000_000 - tv_nsec;
    }
    Some(Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    })
}

/// Opens `name` in `dir` as a directory, refusing to follow a symlink.
fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Returns the type of `dir/name` without following a symlink, or `None` if it does not exist.
fn type_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Option<FileType>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `dir/name` and everything below it without following any symlink.
fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let fd = open_dir_at(dir, name)?;
    // Collect first so we never delete while the directory stream is being read.
    let mut children = Vec::new();
    let mut stream = rfs::Dir::read_from(&fd)?;
    while let Some(child) = stream.read() {
        let child = child?;
        let child_name = child.file_name().to_bytes();
        if child_name != b"." && child_name != b".." {
            children.push(child_name.to_vec());
        }
    }
    for child in children {
        if type_at(fd.as_fd(), &child)? == Some(FileType::Directory) {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            rfs::unlinkat(&fd, child.as_slice(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Sets an xattr on `dir/name` itself, never on what a symlink there points to.
fn set_xattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    // There is no `lsetxattrat`. The directory's /proc magic link pins the exact directory we
    // hold open, and `lsetxattr` does not follow the last component.
    let path =
        PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(OsStr::from_bytes(name));
    Ok(rfs::lsetxattr(
        &path,
        OsStr::from_bytes(key),
        value,
        XattrFlags::empty(),
    )?)
}

/// Extraction state for one layer.
struct Extractor {
    /// The layer root; every path is resolved from here.
    root: OwnedFd,
    /// Bytes of file content written so far.
    size: u64,
    /// Directory mtimes, applied at the end because writing their contents changes them.
    dir_times: BTreeMap<Vec<Vec<u8>>, Timespec>,
    /// Counts the stream, to refuse an entry bigger than what is left of the byte limit.
    meter: Meter,
    /// The byte limit, for messages.
    max_bytes: u64,
}

impl Extractor {
    /// Opens the directory at `parts` below the root, one component at a time, never following
    /// a symlink. With `create`, missing directories are made (mode 0755, as tar tools do).
    fn walk(&self, parts: &[&[u8]], create: bool) -> Result<OwnedFd, WalkError> {
        let mut dir = open_dir_at(self.root.as_fd(), b".").map_err(WalkError::Os)?;
        for (i, part) in parts.iter().enumerate() {
            dir = match open_dir_at(dir.as_fd(), part) {
                Ok(next) => next,
                Err(Errno::NOENT) if create => {
                    let mode = Mode::from_raw_mode(0o755);
                    match rfs::mkdirat(&dir, *part, mode) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(WalkError::Os(e)),
                    }
                    let next = open_dir_at(dir.as_fd(), part).map_err(WalkError::Os)?;
                    // mkdir honours the umask; be explicit.
                    rfs::fchmod(&next, mode).map_err(WalkError::Os)?;
                    next
                }
                // Depending on the kernel path, a symlink fails with ELOOP or ENOTDIR; look.
                Err(err) => {
                    return Err(match type_at(dir.as_fd(), part) {
                        Ok(Some(FileType::Symlink)) => WalkError::Symlink(i),
                        Ok(Some(FileType::Directory)) => WalkError::Os(err),
                        Ok(Some(_)) => WalkError::NotDirectory(i),
                        Ok(None) => WalkError::Missing(i),
                        Err(e) => WalkError::Os(e),
                    })
                }
            };
        }
        Ok(dir)
    }

    /// [`Self::walk`] with the failure explained for the entry `name`; `what` says whose path
    /// this is ("path" or "hard link target").
    fn open_dir(
        &self,
        name: &str,
        what: &str,
        parts: &[&[u8]],
        create: bool,
    ) -> Result<OwnedFd, UnpackError> {
        self.walk(parts, create).map_err(|err| match err {
            WalkError::Symlink(i) => UnpackError::escape(
                name,
                format!("{what} goes through symlink `{}`", display(&parts[..=i])),
            ),
            WalkError::NotDirectory(i) => UnpackError::invalid(
                name,
                format!("{what}: `{}` is not a directory", display(&parts[..=i])),
            ),
            WalkError::Missing(i) => UnpackError::invalid(
                name,
                format!("{what}: `{}` does not exist", display(&parts[..=i])),
            ),
            WalkError::Os(e) => UnpackError::io(name, "opening parent directory", e),
        })
    }

    /// Makes room for a new node at `dir/leaf`. An existing directory is kept (and `true`
    /// returned) when `keep_dir` is set, since a directory entry over a directory merges;
    /// anything else there is removed without following it.
    fn clear_slot(
        &self,
        name: &str,
        dir: BorrowedFd<'_>,
        leaf: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let existing = type_at(dir, leaf).map_err(|e| UnpackError::io(name, "inspecting", e))?;
        match existing {
            None => Ok(false),
            Some(FileType::Directory) if keep_dir => Ok(true),
            Some(FileType::Directory) => remove_tree(dir, leaf)
                .map(|()| false)
                .map_err(|e| UnpackError::io(name, "removing the directory it replaces", e)),
            Some(_) => rfs::unlinkat(dir, leaf, AtFlags::empty())
                .map(|()| false)
                .map_err(|e| UnpackError::io(name, "removing the file it replaces", e)),
        }
    }

    /// Extracts one tar entry.
    fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Archive-wide PAX defaults (git archive writes a comment here); nothing we use.
            return Ok(());
        }

        let parts = clean_path(&raw_path).map_err(|reason| UnpackError::escape(&name, reason))?;
        let Some((&leaf, parents)) = parts.split_last() else {
            // The layer root itself (`./`). Its attributes come from the layer store, not the tar.
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(UnpackError::invalid(
                    &name,
                    "only a directory may name the root",
                )),
            };
        };

        if leaf.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&name, parents, leaf);
        }

        let meta = Metadata::from_entry(entry, &name)?;
        let dir = self.open_dir(&name, "path", parents, true)?;
        let dir = dir.as_fd();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.clear_slot(&name, dir, leaf, false)?;
                self.write_file(&name, dir, leaf, entry)?;
                apply_metadata(&name, dir, leaf, &meta, NodeKind::Other)
            }
            EntryType::Directory => {
                if !self.clear_slot(&name, dir, leaf, true)? {
                    rfs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700))
                        .map_err(|e| UnpackError::io(&name, "creating directory", e))?;
                }
                apply_metadata(&name, dir, leaf, &meta, NodeKind::Directory)?;
                let key = parts.iter().map(|p| p.to_vec()).collect();
                self.dir_times.insert(key, meta.mtime);
                Ok(())
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| UnpackError::invalid(&name, "symlink without a target"))?;
                self.clear_slot(&name, dir, leaf, false)?;
                // The target is stored as-is: it is resolved inside the container, not here.
                rfs::symlinkat(target.as_ref(), dir, leaf)
                    .map_err(|e| UnpackError::io(&name, "creating symlink", e))?;
                apply_metadata(&name, dir, leaf, &meta, NodeKind::Symlink)
            }
            EntryType::Link => self.hard_link(&name, &parts, dir, leaf, entry),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let number = |n: io::Result<Option<u32>>| match n {
                            Ok(Some(n)) => Ok(n),
                            _ => Err(UnpackError::invalid(&name, "bad device number")),
                        };
                        let major = number(entry.header().device_major())?;
                        let minor = number(entry.header().device_minor())?;
                        let file_type = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (file_type, rfs::makedev(major, minor))
                    }
                };
                self.clear_slot(&name, dir, leaf, false)?;
                rfs::mknodat(dir, leaf, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| UnpackError::io(&name, "creating device node", e))?;
                apply_metadata(&name, dir, leaf, &meta, NodeKind::Other)
            }
            other => Err(UnpackError::UnsupportedEntryType {
                entry: name,
                kind: format!("{other:?} ({:?})", other.as_byte() as char),
            }),
        }
    }

    /// Writes a regular file's content to a new file at `dir/leaf`.
    fn write_file<R: Read>(
        &mut self,
        name: &str,
        dir: BorrowedFd<'_>,
        leaf: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        // A bomb declares its size up front: refuse it before writing a byte.
        let (declared, left) = (entry.size(), self.meter.remaining());
        if declared > left {
            return Err(UnpackError::EntryTooLarge {
                entry: name.to_string(),
                size: declared,
                left,
                limit: self.max_bytes,
            });
        }
        // EXCL + NOFOLLOW: we only ever write into a file we just created.
        let fd = rfs::openat(
            dir,
            leaf,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| UnpackError::io(name, "creating file", e))?;
        let mut file = File::from(fd);
        // A plain loop rather than io::copy, so read errors (the stream's fault) and write
        // errors (ours) are reported apart.
        let mut buf = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            file.write_all(&buf[..n])
                .map_err(|e| UnpackError::io(name, "writing file", e))?;
            written += n as u64;
        }
        let expected = entry.size();
        if written != expected {
            return Err(UnpackError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {name:?} is truncated ({written} of {expected} bytes)"),
            )));
        }
        self.size += written;
        Ok(())
    }

    /// Links `dir/leaf` to an earlier entry of this layer, resolved inside the root.
    fn hard_link<R: Read>(
        &self,
        name: &str,
        parts: &[&[u8]],
        dir: BorrowedFd<'_>,
        leaf: &[u8],
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| UnpackError::invalid(name, "hard link without a target"))?;
        let target = clean_path(&raw_target)
            .map_err(|reason| UnpackError::escape(name, format!("hard link target: {reason}")))?;
        let Some((&target_leaf, target_parents)) = target.split_last() else {
            return Err(UnpackError::invalid(name, "hard link to the layer root"));
        };
        if target == parts {
            return Err(UnpackError::invalid(name, "hard link to itself"));
        }
        let target_dir = self.open_dir(name, "hard link target", target_parents, false)?;
        match type_at(target_dir.as_fd(), target_leaf) {
            Ok(None) => {
                return Err(UnpackError::invalid(
                    name,
                    format!(
                        "hard link target `{}` is not in this layer",
                        display(&target)
                    ),
                ))
            }
            Ok(Some(FileType::Directory)) => {
                return Err(UnpackError::invalid(name, "hard link to a directory"))
            }
            Ok(Some(_)) => {}
            Err(e) => return Err(UnpackError::io(name, "inspecting hard link target", e)),
        }
        self.clear_slot(name, dir, leaf, false)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself. The inode's
        // metadata is the target's; a link entry carries nothing of its own to apply.
        rfs::linkat(&target_dir, target_leaf, dir, leaf, AtFlags::empty())
            .map_err(|e| UnpackError::io(name, "creating hard link", e))
    }

    /// Turns an OCI whiteout entry into its overlayfs form.
    fn whiteout(&self, name: &str, parents: &[&[u8]], leaf: &[u8]) -> Result<(), UnpackError> {
        if leaf == OPAQUE_MARKER {
            let dir = self.open_dir(name, "path", parents, true)?;
            return rfs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| UnpackError::io(name, "marking directory opaque", e));
        }
        if leaf.starts_with(WHITEOUT_META_PREFIX) {
            // Other `.wh..wh.*` names (e.g. AUFS `.wh..wh..plnk`) carry no meaning for us.
            return Ok(());
        }
        let hidden = &leaf[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(UnpackError::invalid(name, "whiteout without a valid name"));
        }
        let dir = self.open_dir(name, "path", parents, true)?;
        // A whiteout only hides lower layers. If this layer already put something at that name,
        // that entry already hides them and must stay.
        let existing =
            type_at(dir.as_fd(), hidden).map_err(|e| UnpackError::io(name, "inspecting", e))?;
        if existing.is_some() {
            return Ok(());
        }
        rfs::mknodat(
            &dir,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .map_err(|e| UnpackError::io(name, "creating whiteout device", e))
    }

    /// Sets the recorded directory mtimes, now that nothing more is written inside them.
    fn set_dir_times(&self) -> Result<(), UnpackError> {
        for (path, mtime) in &self.dir_times {
            let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
            let name = display(&parts);
            let dir = match self.walk(&parts, false) {
                Ok(dir) => dir,
                // A later entry replaced or removed it; it has no recorded time any more.
                Err(WalkError::Symlink(_) | WalkError::NotDirectory(_) | WalkError::Missing(_)) => {
                    continue
                }
                Err(WalkError::Os(e)) => {
                    return Err(UnpackError::io(&name, "opening directory", e))
                }
            };
            let times = Timestamps {
                last_access: *mtime,
                last_modification: *mtime,
            };
            rfs::futimens(&dir, &times)
                .map_err(|e| UnpackError::io(&name, "setting directory mtime", e))?;
        }
        Ok(())
    }
}

/// Applies owner, mode, xattrs and (except for directories) mtime to the node just created at
/// `dir/leaf`.
fn apply_metadata(
    name: &str,
    dir: BorrowedFd<'_>,
    leaf: &[u8],
    meta: &Metadata,
    kind: NodeKind,
) -> Result<(), UnpackError> {
    // chown first: it clears setuid/setgid bits and file capabilities set before it.
    rfs::chownat(
        dir,
        leaf,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| UnpackError::io(name, "chown", e))?;

    // Linux has no symlink permissions. For the other kinds, following is harmless: we created
    // this node an instant ago, it is not a symlink, and nothing else writes in the layer.
    if kind != NodeKind::Symlink {
        rfs::chmodat(dir, leaf, Mode::from_raw_mode(meta.mode), AtFlags::empty())
            .map_err(|e| UnpackError::io(name, "chmod", e))?;
    }

    for (key, value) in &meta.xattrs {
        match set_xattr_at(dir, leaf, key, value) {
            Ok(()) => {}
            // Some filesystems lack a namespace, and `user.*` is refused on symlinks and
            // devices; losing such an xattr beats refusing the image (as other runtimes do).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                tracing::warn!(
                    entry = name,
                    xattr = %String::from_utf8_lossy(key),
                    error = %e,
                    "xattr not applied"
                );
            }
            Err(e) => return Err(UnpackError::io(name, "setting xattr", e)),
        }
    }

    if kind != NodeKind::Directory {
        let times = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rfs::utimensat(dir, leaf, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| UnpackError::io(name, "setting mtime", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
