//! Tests for the layer unpacker. They need root (chown, mknod, `trusted.*` xattrs, mount).
//!
//! Tars are built in memory. Hostile names are written straight into the header bytes, since
//! the `tar` crate (rightly) refuses to write them.

use super::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tar::{Builder, Header};

/// The mtime every test entry gets unless it says otherwise.
const MTIME: u64 = 1_600_000_000;

/// Builds a tar in memory, one entry at a time.
struct TarWriter {
    builder: Builder<Vec<u8>>,
}

impl TarWriter {
    fn new() -> Self {
        TarWriter {
            builder: Builder::new(Vec::new()),
        }
    }

    /// A header with the given type, raw path bytes and mode; owner root, mtime [`MTIME`].
    fn header(kind: EntryType, path: &[u8], mode: u32) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        set_raw(&mut header.as_old_mut().name, path);
        header
    }

    /// Appends `header` with `data` as content (fixing size and checksum).
    fn add(&mut self, mut header: Header, data: &[u8]) -> &mut Self {
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.add(
            Self::header(EntryType::Regular, path.as_bytes(), mode),
            data,
        )
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.add(
            Self::header(EntryType::Directory, path.as_bytes(), mode),
            b"",
        )
    }

    fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Self {
        let mut header = Self::header(kind, path.as_bytes(), 0o777);
        set_raw(&mut header.as_old_mut().linkname, target.as_bytes());
        self.add(header, b"")
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(EntryType::Symlink, path, target)
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(EntryType::Link, path, target)
    }

    fn device(
        &mut self,
        kind: EntryType,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut header = Self::header(kind, path.as_bytes(), mode);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.add(header, b"")
    }

    /// PAX records applying to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }
}

/// Writes `value` into a fixed, NUL-padded header field.
fn set_raw(field: &mut [u8], value: &[u8]) {
    assert!(value.len() <= field.len(), "test name too long for header");
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// A scratch area: `<tmp>/a/b/layer` is the (empty) destination, `<tmp>/outside` stands for the
/// host and must stay empty. The tempdir is removed on drop, also when a test fails.
struct Sandbox {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a/b/layer");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    Sandbox { tmp, dest, outside }
}

/// Every path below `dir`, relative and sorted, without following symlinks.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Reads an xattr of `path` itself (not following a symlink), if set.
fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    match rfs::lgetxattr(path, key, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {}: {e}", path.display()),
    }
}

/// Asserts `result` is a `PathEscape` for `entry`.
fn assert_escape(result: Result<UnpackedLayer, UnpackError>, entry: &str) {
    match result {
        Err(UnpackError::PathEscape { entry: got, reason }) => {
            assert_eq!(got, entry, "wrong entry blamed ({reason})")
        }
        other => panic!("expected PathEscape for {entry:?}, got {other:?}"),
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[test]
fn extracts_files_dirs_symlinks_and_hardlinks() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .dir("etc/", 0o750)
        .file("etc/hello", 0o644, b"hello\n")
        .symlink("etc/rel-link", "hello")
        .symlink("abs-link", "/etc/passwd")
        .hardlink("etc/hard", "etc/hello")
        .file("./deep/nested/file", 0o600, b"xyz")
        .finish();
    let layer = unpack_layer(&tar[..], &sb.dest).unwrap();

    assert_eq!(layer.size, 9, "bytes of file content");
    assert_eq!(layer.diff_id, sha256_of(&tar));
    let d = &sb.dest;
    assert_eq!(fs::read(d.join("etc/hello")).unwrap(), b"hello\n");
    assert_eq!(fs::read(d.join("deep/nested/file")).unwrap(), b"xyz");

    let etc = fs::symlink_metadata(d.join("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!(etc.mtime(), MTIME as i64, "dir mtime survives its children");
    // Parents without an entry of their own are made 0755.
    let implicit = fs::symlink_metadata(d.join("deep/nested")).unwrap();
    assert_eq!(implicit.mode() & 0o7777, 0o755);

    let hello = fs::symlink_metadata(d.join("etc/hello")).unwrap();
    assert_eq!(hello.mode() & 0o7777, 0o644);
    assert_eq!(hello.mtime(), MTIME as i64);
    let hard = fs::symlink_metadata(d.join("etc/hard")).unwrap();
    assert_eq!(hard.ino(), hello.ino());
    assert_eq!(hello.nlink(), 2);

    assert_eq!(
        fs::read_link(d.join("etc/rel-link")).unwrap(),
        Path::new("hello")
    );
    // Absolute targets are kept verbatim (they mean something inside the container).
    assert_eq!(
        fs::read_link(d.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let link = fs::symlink_metadata(d.join("abs-link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(link.mtime(), MTIME as i64, "symlink's own mtime");
}

#[test]
fn creates_devices_and_fifos() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .device(EntryType::Char, "dev/null", 0o666, 1, 3)
        .device(EntryType::Block, "dev/loop0", 0o660, 7, 0)
        .device(EntryType::Fifo, "run/pipe", 0o620, 0, 0)
        .finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    let null = fs::symlink_metadata(sb.dest.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rfs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let block = fs::symlink_metadata(sb.dest.join("dev/loop0")).unwrap();
    assert!(block.file_type().is_block_device());
    assert_eq!(block.rdev(), rfs::makedev(7, 0));
    assert_eq!(block.mode() & 0o7777, 0o660);
    let fifo = fs::symlink_metadata(sb.dest.join("run/pipe")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    assert_eq!(fifo.mtime(), MTIME as i64);
}

#[test]
fn preserves_owner_and_special_mode_bits() {
    let sb = sandbox();
    let mut w = TarWriter::new();
    let mut setuid = TarWriter::header(EntryType::Regular, b"bin/su", 0o4755);
    setuid.set_uid(1000);
    setuid.set_gid(2000);
    w.add(setuid, b"#!");
    let mut setgid = TarWriter::header(EntryType::Regular, b"bin/wall", 0o2711);
    setgid.set_gid(5);
    w.add(setgid, b"");
    let mut sticky = TarWriter::header(EntryType::Directory, b"tmp", 0o1777);
    sticky.set_uid(3);
    w.add(sticky, b"");
    let mut link = TarWriter::header(EntryType::Symlink, b"bin/owned-link", 0o777);
    set_raw(&mut link.as_old_mut().linkname, b"su");
    link.set_uid(42);
    link.set_gid(43);
    w.add(link, b"");
    let tar = w.finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    let su = fs::symlink_metadata(sb.dest.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!(
        (su.uid(), su.gid()),
        (1000, 2000),
        "not chowned through owned-link"
    );
    let wall = fs::symlink_metadata(sb.dest.join("bin/wall")).unwrap();
    assert_eq!(wall.mode() & 0o7777, 0o2711);
    assert_eq!(wall.gid(), 5);
    let tmp = fs::symlink_metadata(sb.dest.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(tmp.uid(), 3);
    let link = fs::symlink_metadata(sb.dest.join("bin/owned-link")).unwrap();
    assert_eq!(
        (link.uid(), link.gid()),
        (42, 43),
        "symlink itself is chowned"
    );
}

#[test]
fn applies_pax_xattrs_but_not_overlay_ones() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .pax(&[
            ("SCHILY.xattr.user.color", b"blue"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/x"),
        ])
        .dir("d", 0o755)
        .pax(&[(
            "SCHILY.xattr.security.capability",
            b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        )])
        .file("d/ping", 0o755, b"elf")
        .pax(&[("SCHILY.xattr.trusted.skiff", b"on-the-link")])
        .symlink("d/link", "ping")
        .finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    let d = sb.dest.join("d");
    assert_eq!(xattr(&d, "user.color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(
        xattr(&d, "trusted.overlay.opaque"),
        None,
        "tar may not make dirs opaque"
    );
    assert_eq!(xattr(&d, "trusted.overlay.redirect"), None);
    // File capabilities are set after chown, which would clear them.
    assert!(xattr(&d.join("ping"), "security.capability").is_some());
    assert_eq!(
        xattr(&d.join("link"), "trusted.skiff").as_deref(),
        Some(&b"on-the-link"[..]),
        "xattr lands on the symlink itself"
    );
    assert_eq!(xattr(&d.join("ping"), "trusted.skiff"), None);
}

#[test]
fn pax_long_names_and_precise_mtime() {
    let sb = sandbox();
    let long = format!("{}/file", "x".repeat(150));
    let mut w = TarWriter::new();
    w.pax(&[("path", long.as_bytes()), ("mtime", b"1700000000.25")]);
    w.file("short-name-overridden", 0o644, b"data");
    let tar = w.finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    let meta = fs::symlink_metadata(sb.dest.join(&long)).unwrap();
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert_eq!(meta.mtime_nsec(), 250_000_000);
    assert!(!sb.dest.join("short-name-overridden").exists());
}

#[test]
fn parses_pax_times() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
    assert_eq!(t("12"), Some((12, 0)));
    assert_eq!(t("12.5"), Some((12, 500_000_000)));
    assert_eq!(t("12.1234567891"), Some((12, 123_456_789)));
    assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(t("1.x"), None);
    assert_eq!(t(""), None);
}

#[test]
fn whiteout_becomes_overlay_char_device() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .file("etc/.wh.passwd", 0o644, b"")
        .file(".wh.top", 0o644, b"")
        .file("etc/.wh..wh..plnk", 0o644, b"")
        .file("kept", 0o644, b"real")
        .file(".wh.kept", 0o644, b"")
        .finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    for hidden in ["etc/passwd", "top"] {
        let meta = fs::symlink_metadata(sb.dest.join(hidden)).unwrap();
        assert!(meta.file_type().is_char_device(), "{hidden} is a whiteout");
        assert_eq!(meta.rdev(), 0, "{hidden} is 0:0");
    }
    assert_eq!(
        fs::read(sb.dest.join("kept")).unwrap(),
        b"real",
        "a whiteout does not delete an entry of its own layer"
    );
    assert_eq!(
        listing(&sb.dest),
        ["etc", "etc/passwd", "kept", "top"],
        "no .wh.* files are left behind"
    );
}

#[test]
fn opaque_marker_sets_overlay_xattr() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .dir("existing", 0o755)
        .file("existing/.wh..wh..opq", 0o644, b"")
        .file("implicit/sub/.wh..wh..opq", 0o644, b"")
        .file("implicit/sub/new", 0o644, b"n")
        .finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    for dir in ["existing", "implicit/sub"] {
        let path = sb.dest.join(dir);
        assert!(fs::symlink_metadata(&path).unwrap().is_dir());
        assert_eq!(
            xattr(&path, "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
    }
    assert_eq!(
        xattr(&sb.dest.join("implicit"), "trusted.overlay.opaque"),
        None
    );
    assert_eq!(
        listing(&sb.dest),
        ["existing", "implicit", "implicit/sub", "implicit/sub/new"]
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn whiteouts_hide_lower_layers_in_a_real_overlay() {
    let sb = sandbox();
    let lower = sb.tmp.path().join("lower");
    let upper = sb.tmp.path().join("upper");
    let merged = sb.tmp.path().join("merged");
    for dir in [&lower, &upper, &merged] {
        fs::create_dir(dir).unwrap();
    }
    let base = TarWriter::new()
        .file("gone", 0o644, b"old")
        .file("keep/file", 0o644, b"k")
        .file("dir/old", 0o644, b"o")
        .finish();
    let top = TarWriter::new()
        .file(".wh.gone", 0o644, b"")
        .file("dir/.wh..wh..opq", 0o644, b"")
        .file("dir/new", 0o644, b"n")
        .finish();
    unpack_layer(&base[..], &lower).unwrap();
    unpack_layer(&top[..], &upper).unwrap();

    let options = format!("lowerdir={}:{}", upper.display(), lower.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
    let _unmount = Unmount(merged.clone());

    assert_eq!(listing(&merged), ["dir", "dir/new", "keep", "keep/file"]);
}

#[test]
fn diff_id_is_the_same_for_plain_gzip_and_zstd() {
    let mut plain = TarWriter::new()
        .dir("d", 0o755)
        .file("d/f", 0o644, &[7u8; 3000])
        .finish();
    // Tar writers pad to a record size; those zeros are part of the DiffID too.
    plain.extend_from_slice(&[0u8; 8192]);
    let expected = sha256_of(&plain);

    let gzip = |data: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    };
    // pigz and friends may write several gzip members back to back.
    let mut multi_member = gzip(&plain[..2048]);
    multi_member.extend(gzip(&plain[2048..]));
    let zstd = zstd::encode_all(&plain[..], 3).unwrap();

    for (label, blob) in [
        ("plain", plain.clone()),
        ("gzip", gzip(&plain)),
        ("gzip, two members", multi_member),
        ("zstd", zstd),
    ] {
        let sb = sandbox();
        let layer = unpack_layer(&blob[..], &sb.dest).unwrap();
        assert_eq!(layer.diff_id, expected, "{label}");
        assert_eq!(layer.size, 3000, "{label}");
        assert_eq!(
            fs::read(sb.dest.join("d/f")).unwrap(),
            [7u8; 3000],
            "{label}"
        );
    }
}

#[test]
fn later_entries_replace_earlier_ones_without_following() {
    let sb = sandbox();
    let outside = sb.outside.display().to_string();
    let tar = TarWriter::new()
        // file -> dir
        .file("x", 0o644, b"file")
        .dir("x", 0o700)
        // dir with content -> symlink pointing outside (the old tree goes, outside is untouched)
        .file("y/child", 0o644, b"c")
        .symlink("y", &outside)
        // symlink pointing outside -> regular file (written in place, not through the link)
        .symlink("z", &format!("{outside}/target"))
        .file("z", 0o600, b"inside")
        // dir -> dir merges
        .file("m/one", 0o644, b"1")
        .dir("m", 0o755)
        .file("m/two", 0o644, b"2")
        .finish();
    unpack_layer(&tar[..], &sb.dest).unwrap();

    let d = &sb.dest;
    assert!(fs::symlink_metadata(d.join("x")).unwrap().is_dir());
    assert!(fs::symlink_metadata(d.join("y"))
        .unwrap()
        .file_type()
        .is_symlink());
    let z = fs::symlink_metadata(d.join("z")).unwrap();
    assert!(z.is_file());
    assert_eq!(fs::read(d.join("z")).unwrap(), b"inside");
    assert_eq!(
        listing(&sb.outside),
        Vec::<String>::new(),
        "outside untouched"
    );
    assert_eq!(fs::read(d.join("m/one")).unwrap(), b"1");
    assert_eq!(fs::read(d.join("m/two")).unwrap(), b"2");
    assert_eq!(
        listing(d),
        ["m", "m/one", "m/two", "x", "y", "z"],
        "nothing else left over"
    );
}

#[test]
fn unsupported_entry_types_are_errors() {
    let mut sparse = TarWriter::header(EntryType::GNUSparse, b"sparse", 0o644);
    sparse.as_gnu_mut().unwrap().set_real_size(0);
    // 'V' is a GNU tape volume label.
    let volume = TarWriter::header(EntryType::new(b'V'), b"volume", 0o644);
    for (header, name, kind) in [(sparse, "sparse", "GNUSparse"), (volume, "volume", "'V'")] {
        let sb = sandbox();
        let tar = TarWriter::new().add(header, b"").finish();
        match unpack_layer(&tar[..], &sb.dest) {
            Err(UnpackError::UnsupportedEntryType { entry, kind: got }) => {
                assert_eq!(entry, name);
                assert!(got.contains(kind), "{got}");
            }
            other => panic!("expected UnsupportedEntryType, got {other:?}"),
        }
        assert!(listing(&sb.dest).is_empty());
    }
}

#[test]
fn garbage_is_a_read_error() {
    let sb = sandbox();
    let garbage = vec![0x55u8; 1024];
    assert!(matches!(
        unpack_layer(&garbage[..], &sb.dest),
        Err(UnpackError::Read(_))
    ));
    let bad_gzip = [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xff];
    assert!(matches!(
        unpack_layer(&bad_gzip[..], &sb.dest),
        Err(UnpackError::Read(_))
    ));
    assert!(listing(&sb.dest).is_empty());
}

#[test]
fn writing_below_a_file_is_invalid() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .file("f", 0o644, b"")
        .file("f/x", 0o644, b"")
        .finish();
    let err = unpack_layer(&tar[..], &sb.dest).unwrap_err();
    assert!(
        matches!(&err, UnpackError::InvalidEntry { entry, .. } if entry == "f/x"),
        "{err:?}"
    );
    assert_eq!(listing(&sb.dest), ["f"]);
}

// ---- hostile layers: each must fail and leave everything outside the layer untouched ----
// The filesystem is checked before the error, so a regression reports what it broke.

#[test]
fn rejects_dotdot_escape() {
    let sb = sandbox();
    let tar = TarWriter::new().file("../escape", 0o644, b"pwned").finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(!sb.dest.parent().unwrap().join("escape").exists());
    assert!(listing(&sb.dest).is_empty());
    assert_escape(result, "../escape");
}

#[test]
fn rejects_absolute_path() {
    let sb = sandbox();
    let target = format!("{}/pwned", sb.outside.display());
    let tar = TarWriter::new().file(&target, 0o644, b"pwned").finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(listing(&sb.outside).is_empty());
    assert!(listing(&sb.dest).is_empty());
    assert_escape(result, &target);
}

#[test]
fn rejects_dotdot_in_the_middle() {
    let sb = sandbox();
    let tar = TarWriter::new().file("a/../../x", 0o644, b"pwned").finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(!sb.dest.parent().unwrap().join("x").exists());
    assert!(listing(&sb.dest).is_empty(), "not even `a` is created");
    assert_escape(result, "a/../../x");
}

#[test]
fn rejects_write_through_absolute_symlink() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .symlink("evil", &sb.outside.display().to_string())
        .file("evil/pwned", 0o644, b"pwned")
        .finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(listing(&sb.outside).is_empty());
    assert_eq!(listing(&sb.dest), ["evil"]);
    assert_escape(result, "evil/pwned");
}

#[test]
fn rejects_write_through_relative_symlink() {
    let sb = sandbox();
    // From <tmp>/a/b/layer/rel, ../../.. is <tmp>.
    let tar = TarWriter::new()
        .symlink("rel", "../../..")
        .file("rel/x", 0o644, b"pwned")
        .finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(!sb.tmp.path().join("x").exists());
    assert_eq!(listing(&sb.dest), ["rel"]);
    assert_escape(result, "rel/x");
}

#[test]
fn rejects_write_through_dangling_symlink() {
    let sb = sandbox();
    // Following this link would create the missing directory outside, then write in it.
    let tar = TarWriter::new()
        .symlink(
            "dangling",
            &format!("{}/made-by-layer", sb.outside.display()),
        )
        .file("dangling/x", 0o644, b"pwned")
        .finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(listing(&sb.outside).is_empty());
    assert_eq!(listing(&sb.dest), ["dangling"]);
    assert_escape(result, "dangling/x");
}

#[test]
fn rejects_symlinked_dir_deeper_in_the_path() {
    let sb = sandbox();
    let tar = TarWriter::new()
        .dir("usr", 0o755)
        .symlink("usr/lib", &sb.outside.display().to_string())
        .dir("usr/lib/sub", 0o755)
        .finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert!(listing(&sb.outside).is_empty());
    assert_escape(result, "usr/lib/sub");
}

/// Hard-link count of `/etc/passwd`, to see that no link to it was made.
fn passwd_links() -> u64 {
    fs::metadata("/etc/passwd").unwrap().nlink()
}

#[test]
fn rejects_hardlink_climbing_out() {
    let sb = sandbox();
    let before = passwd_links();
    let tar = TarWriter::new().hardlink("h", "../../etc/passwd").finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert_eq!(passwd_links(), before);
    assert!(listing(&sb.dest).is_empty());
    assert_escape(result, "h");
}

#[test]
fn rejects_hardlink_to_absolute_path() {
    let sb = sandbox();
    let before = passwd_links();
    let tar = TarWriter::new().hardlink("h", "/etc/passwd").finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert_eq!(passwd_links(), before);
    assert!(listing(&sb.dest).is_empty());
    assert_escape(result, "h");
}

#[test]
fn rejects_hardlink_through_symlinked_dir() {
    let sb = sandbox();
    let secret = sb.outside.join("secret");
    fs::write(&secret, b"s").unwrap();
    let tar = TarWriter::new()
        .symlink("d", &sb.outside.display().to_string())
        .hardlink("h", "d/secret")
        .finish();
    let result = unpack_layer(&tar[..], &sb.dest);
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    assert_eq!(listing(&sb.dest), ["d"]);
    assert_escape(result, "h");
}

#[test]
fn hardlink_target_must_already_be_in_the_layer() {
    let sb = sandbox();
    let tar = TarWriter::new().hardlink("h", "not/yet").finish();
    let err = unpack_layer(&tar[..], &sb.dest).unwrap_err();
    assert!(
        matches!(&err, UnpackError::InvalidEntry { entry, .. } if entry == "h"),
        "{err:?}"
    );
    assert!(listing(&sb.dest).is_empty());
}

/// A tar header alone (no content), declaring `size` bytes of content.
fn bare_header(kind: EntryType, path: &[u8], size: u64) -> Vec<u8> {
    let mut header = TarWriter::header(kind, path, 0o644);
    header.set_size(size);
    header.set_cksum();
    header.as_bytes().to_vec()
}

fn limits(max_bytes: u64, max_entries: u64) -> UnpackLimits {
    UnpackLimits {
        max_bytes,
        max_entries,
    }
}

#[test]
fn a_file_declaring_more_than_the_limit_is_refused_before_a_byte_is_written() {
    let sb = sandbox();
    // 4 GiB of zeros behind one header, produced lazily: the unpacker must not read it.
    let bomb = io::Cursor::new(bare_header(EntryType::Regular, b"zeros", 4 << 30))
        .chain(io::repeat(0).take(4 << 30));
    let err = unpack_layer_limited(bomb, &sb.dest, &limits(1 << 20, 100)).unwrap_err();
    assert!(
        matches!(&err, UnpackError::EntryTooLarge { entry, size, limit, .. }
            if entry == "zeros" && *size == 4 << 30 && *limit == 1 << 20),
        "{err:?}"
    );
    assert!(err.is_limit());
    assert!(
        err.to_string().contains("1048576"),
        "names the limit: {err}"
    );
    assert!(listing(&sb.dest).is_empty());
}

#[test]
fn files_that_add_up_past_the_limit_are_refused() {
    let sb = sandbox();
    let chunk = vec![1u8; 300 * 1024];
    let tar = TarWriter::new()
        .file("a", 0o644, &chunk)
        .file("b", 0o644, &chunk)
        .file("c", 0o644, &chunk)
        .file("d", 0o644, &chunk)
        .finish();
    let err = unpack_layer_limited(&tar[..], &sb.dest, &limits(1 << 20, 100)).unwrap_err();
    // Three files and their headers fit; the fourth is refused before it is written.
    let used = 3 * (512 + chunk.len() as u64);
    assert!(
        matches!(&err, UnpackError::EntryTooLarge { entry, left, .. }
            if entry == "d" && *left == (1 << 20) - used - 512),
        "{err:?}"
    );
    assert_eq!(listing(&sb.dest), ["a", "b", "c"]);
    // The same layer within a limit that fits it exactly unpacks.
    let sb = sandbox();
    let layer = unpack_layer_limited(&tar[..], &sb.dest, &limits(tar.len() as u64, 4)).unwrap();
    assert_eq!(layer.size, 4 * chunk.len() as u64);
}

#[test]
fn a_gzip_bomb_after_the_archive_end_is_not_decompressed_past_the_limit() {
    let sb = sandbox();
    let mut tar = TarWriter::new().file("small", 0o644, b"hi").finish();
    // The tar is over, but the stream goes on with 64 MiB of zeros (a few KiB compressed).
    tar.resize(tar.len() + (64 << 20), 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 1 << 20, "compressed to {} bytes", blob.len());
    let err = unpack_layer_limited(&blob[..], &sb.dest, &limits(8 << 20, 100)).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { limit } if limit == 8 << 20),
        "{err:?}"
    );
    assert!(err.is_limit());
}

#[test]
fn a_huge_long_name_record_is_refused_without_buffering_it() {
    let sb = sandbox();
    // A GNU long-name record claiming 1 GiB: the tar crate would read it all into memory.
    let bomb = io::Cursor::new(bare_header(
        EntryType::GNULongName,
        b"././@LongLink",
        1 << 30,
    ))
    .chain(io::repeat(b'a').take(1 << 30));
    let err = unpack_layer_limited(bomb, &sb.dest, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HeaderTooLarge { limit } if limit == MAX_METADATA_BYTES),
        "{err:?}"
    );
    assert!(listing(&sb.dest).is_empty());
}

#[test]
fn too_many_entries_are_refused() {
    let sb = sandbox();
    let mut writer = TarWriter::new();
    for i in 0..6 {
        writer.file(&format!("f{i}"), 0o644, b"");
    }
    let tar = writer.finish();
    let err = unpack_layer_limited(&tar[..], &sb.dest, &limits(1 << 20, 5)).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { limit: 5 }),
        "{err:?}"
    );
    let sb = sandbox();
    unpack_layer_limited(&tar[..], &sb.dest, &limits(1 << 20, 6)).unwrap();
}

#[test]
fn a_file_whose_content_ends_early_is_a_read_error_not_a_limit() {
    let sb = sandbox();
    let mut tar = bare_header(EntryType::Regular, b"short", 1 << 30);
    tar.extend_from_slice(&[7u8; 1000]);
    let err = unpack_layer(&tar[..], &sb.dest).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err:?}");
    assert!(!err.is_limit());
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn unread_content_of_a_whiteout_counts_as_content_not_header() {
    let sb = sandbox();
    // A whiteout carrying 2 MiB of data: skipped, within the byte limit, and not mistaken for
    // an oversized header.
    let mut header = TarWriter::header(EntryType::Regular, b".wh.gone", 0o644);
    header.set_size(0);
    let data = vec![0u8; 2 << 20];
    let tar = TarWriter::new()
        .add(header, &data)
        .file("kept", 0o644, b"x")
        .finish();
    unpack_layer_limited(&tar[..], &sb.dest, &limits(4 << 20, 10)).unwrap();
    assert_eq!(listing(&sb.dest), ["gone", "kept"]);
}
