//! The benchmark images: busybox for the workloads and a pause image for containerd's
//! sandboxes (Debian packages none), built from the host's static busybox and pushed to a
//! registry over plain HTTP.

use anyhow::Result;
use skiff_tests::busybox::{busybox_spec, Variant};
use skiff_tests::registry::{push_to, Format};

/// Repository:tag of the workload image in the registry.
pub const BUSYBOX: &str = "busybox:bench";
/// Repository:tag of the pause image in the registry.
pub const PAUSE: &str = "pause:bench";

/// Builds both images and pushes them to `registry` (`host:port`).
pub fn push(registry: &str) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("skiff-bench-images-")
        .tempdir()?;
    let busybox = busybox_spec(Variant::Plain)?;
    // Anything that sleeps forever holds a sandbox's namespaces as well as the real pause.
    let pause = busybox_spec(Variant::Plain)?.cmd(&["sleep", "infinity"]);
    for (spec, name) in [(busybox, BUSYBOX), (pause, PAUSE)] {
        let layout = dir.path().join(name.replace(':', "-"));
        spec.write(&layout, "bench")?;
        let digest = push_to(
            &layout,
            "bench",
            &format!("{registry}/{name}"),
            Format::Oci,
            false,
        )?;
        eprintln!("pushed {registry}/{name} {digest}");
    }
    Ok(())
}
