//! Fuzzes the layer unpacker: the input is a layer blob (a tar, or a gzip or zstd compressed
//! one, told apart by its magic bytes as a pull does) given to [`unpack_layer_limited`] with an
//! empty directory as the layer root and small limits, so each run stays cheap and the limit
//! checks are exercised too.
//!
//! Must hold: no panic on any input; an accepted layer wrote no more than the byte limit; and
//! nothing is created outside the layer root. The root sits at `<run>/x/a/root`; after the
//! unpack, `x` must hold only `a`, `a` only `root`, and once `x` is removed `<run>` must be
//! empty, so a `..` climbing up to three levels out of the root is seen. (Absolute paths and
//! symlinks are never followed by the unpacker, so an escape that way would also go through a
//! `..` or a symlink in the tar, which the seeds exercise.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::unpack::{unpack_layer_limited, UnpackLimits};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A layer may expand to 1 MiB and 256 entries here: a few KiB of zstd can expand to hundreds
/// of MiB, which would tell nothing more than a small layer and make each run slow.
const LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 1 << 20,
    max_entries: 256,
};

/// This process's scratch directory (under `$TMPDIR`), set up once.
fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("skiff-fuzz-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    })
}
/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let run = run_dir();
    let x = run.join("x");
    let a = x.join("a");
    let root = a.join("root");
    std::fs::create_dir_all(&root).expect("creating the layer root");

    if let Ok(layer) = unpack_layer_limited(data, &root, &LIMITS) {
        assert!(
            layer.size <= LIMITS.max_bytes,
            "{} bytes written",
            layer.size
        );
    }

    assert_eq!(
        names(&x),
        ["a"],
        "something was written next to the layer root's grandparent"
    );
    assert_eq!(
        names(&a),
        ["root"],
        "something was written next to the layer root"
    );
    std::fs::remove_dir_all(&x).expect("removing what the layer unpacked");
    assert!(
        names(run).is_empty(),
        "something was written three levels above the layer root"
    );
});
