//! The skiff walkthrough: every step a CRI client takes, printed with what was observed.
//!
//! For now it covers the image side of the chain: a local registry stands in for
//! registry.k8s.io through a mirror entry, and skiffd pulls, lists, inspects and removes an image
//! over its CRI socket.

use anyhow::{Context, Result};
use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::{busybox_layout, Variant, BUSYBOX_TAG};
use skiff_tests::daemon::Skiffd;
use skiff_tests::registry::{push, Format, Registry};
use std::time::Instant;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

fn step(text: &str) {
    println!("\n==> {text}");
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    step("Build a busybox image from the host's static /bin/busybox (an OCI layout)");
    let layout = busybox_layout(Variant::Plain);
    println!("    layout: {}", layout.display());

    step("Start a real OCI registry (Debian's docker-registry) on loopback and push the image");
    let registry = Registry::start()?;
    let digest = push(
        &layout,
        BUSYBOX_TAG,
        &registry,
        "e2e-test-images/busybox:1.29-2",
        Format::Oci,
    )?;
    println!(
        "    registry: http://{}  manifest: {digest}",
        registry.addr()
    );

    step("Start skiffd with a mirror: registry.k8s.io -> the local registry");
    let mirror = format!(
        "[registry.hosts.\"registry.k8s.io\"]\nmirrors = [\"http://{}\"]\n",
        registry.addr()
    );
    let daemon = Skiffd::start(&mirror)?;
    println!("    CRI socket: {}", daemon.socket.display());
    let mut runtime = daemon.runtime().await?;
    let mut images = daemon.images().await?;

    step("CRI Version");
    let v = runtime
        .version(cri::VersionRequest::default())
        .await?
        .into_inner();
    println!(
        "    runtime {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );

    step("CRI Status");
    let status = runtime
        .status(cri::StatusRequest { verbose: false })
        .await?
        .into_inner();
    for c in status.status.context("no status")?.conditions {
        println!(
            "    {:<13} {:<5} {} {}",
            c.r#type, c.status, c.reason, c.message
        );
    }

    step(&format!("CRI PullImage {IMAGE}"));
    let started = Instant::now();
    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: spec(IMAGE),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "    image id {} in {:?}",
        pulled.image_ref,
        started.elapsed()
    );

    step("CRI ListImages");
    for image in images
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images
    {
        println!(
            "    {}  tags {:?}  digests {:?}  {} bytes",
            &image.id[..19],
            image.repo_tags,
            image.repo_digests,
            image.size
        );
    }

    step("CRI ImageStatus by image ID");
    let image = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&pulled.image_ref),
            verbose: false,
        })
        .await?
        .into_inner()
        .image
        .context("image not found by its ID")?;
    println!("    found {:?}", image.repo_tags);

    step("CRI ImageFsInfo");
    let fs = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await?
        .into_inner();
    for f in fs.image_filesystems {
        println!(
            "    {}: {} bytes, {} inodes",
            f.fs_id.map(|i| i.mountpoint).unwrap_or_default(),
            f.used_bytes.map(|u| u.value).unwrap_or_default(),
            f.inodes_used.map(|u| u.value).unwrap_or_default()
        );
    }

    step("CRI RemoveImage");
    images
        .remove_image(cri::RemoveImageRequest { image: spec(IMAGE) })
        .await?;
    let left = images
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    println!("    images left: {}", left.len());

    step("Done: skiffd and the registry stop and their temp directories are removed");
    Ok(())
}
