//! Fuzzes a registry's manifest bytes through the pull path: [`read_manifest`] (an image index
//! → its linux/amd64 entry, or an image manifest), then [`check_config`] against a config that
//! names one DiffID per layer, as a well-formed image would.
//!
//! Must hold: no panic on any input; an accepted image has one chain ID per layer and a size
//! that is exactly the config's plus its layers'.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use skiff_runtime::image::pull::{check_config, read_manifest, ManifestTarget};
use skiff_runtime::image::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let image_ref = ImageRef::parse("registry.example:5000/team/app:1.0").expect("a valid name");
    let Ok(ManifestTarget::Image(manifest)) = read_manifest(data, &image_ref) else {
        return;
    };
    let diff_ids: Vec<String> = (0..manifest.layers.len())
        .map(|i| format!("sha256:{i:064x}"))
        .collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let Ok(checked) = check_config(&manifest, config.to_string().as_bytes(), &image_ref) else {
        return;
    };
    assert_eq!(checked.chain_ids.len(), manifest.layers.len());
    let stated: i128 = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .map(|d| i128::from(d.size))
        .sum();
    assert_eq!(i128::from(checked.size), stated, "image size is off");
});
