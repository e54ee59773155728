//! Fuzzes an image config blob as a pull reads it: [`ImageConfigFile::parse`] and
//! [`check_config`] against a two-layer manifest, then what the image service and
//! CreateContainer take from it (the USER, the chain IDs).
//!
//! Must hold: no panic on any input; an accepted config names exactly the manifest's layers
//! and its first chain ID is its first DiffID.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::config::ImageConfigFile;
use skiff_runtime::image::pull::{check_config, Descriptor, ImageManifest};
use skiff_runtime::image::reference::ImageRef;

fn descriptor(media_type: &str, digest_byte: u8, size: i64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: format!("sha256:{}", format!("{digest_byte:02x}").repeat(32)),
        size,
    }
}

fuzz_target!(|data: &[u8]| {
    let image_ref = ImageRef::parse("busybox:1.36").expect("a valid name");
    if let Ok(config) = ImageConfigFile::parse(data) {
        let _ = config.user();
    }
    let manifest = ImageManifest {
        config: descriptor("application/vnd.oci.image.config.v1+json", 0xc0, 1470),
        layers: vec![
            descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                0x01,
                2_152_262,
            ),
            descriptor("application/vnd.oci.image.layer.v1.tar+zstd", 0x02, 93),
        ],
    };
    if let Ok(checked) = check_config(&manifest, data, &image_ref) {
        let diff_ids = &checked.config.rootfs.diff_ids;
        assert_eq!(diff_ids.len(), 2);
        assert_eq!(checked.chain_ids.len(), 2);
        assert_eq!(checked.chain_ids[0], diff_ids[0]);
        assert_eq!(checked.size, 1470 + 2_152_262 + 93);
    }
});
