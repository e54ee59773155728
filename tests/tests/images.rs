//! ImageService end to end: a real docker-registry on loopback, images pushed with skopeo, and a
//! real skiffd answering through its unix socket.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::{busybox_layout, Variant};
use skiff_tests::cri::list_all_images;
use skiff_tests::daemon::Skiffd;
use skiff_tests::oci_layout::{raw_tar, Compression, ImageSpec, Layer, RawEntry};
use skiff_tests::registry::{push, push_index, Format, Registry};
use std::path::Path;
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(daemon: &Skiffd, image: &str) -> Result<String, tonic::Status> {
    let mut images = daemon.images().await.unwrap();
    let reply = images
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await?;
    Ok(reply.into_inner().image_ref)
}

async fn status(daemon: &Skiffd, image: &str) -> Result<Option<cri::Image>, tonic::Status> {
    let mut images = daemon.images().await.unwrap();
    let reply = images
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await?;
    Ok(reply.into_inner().image)
}

async fn remove(daemon: &Skiffd, image: &str) -> Result<(), tonic::Status> {
    let mut images = daemon.images().await.unwrap();
    images
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

/// Entries in a directory of the daemon's image store (blobs, unpacked layers).
fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn pull_by_tag_then_find_it_by_every_reference_and_remove_it() {
    let registry = Registry::start().unwrap();
    let digest = push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "tools/busybox:1.0",
        Format::Oci,
    )
    .unwrap();
    let daemon = Skiffd::start("").unwrap();
    let name = format!("{}/tools/busybox:1.0", registry.addr());
    let id = pull(&daemon, &name).await.unwrap();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "image_ref {id}"
    );

    let listed = list_all_images(&daemon).await.unwrap();
    assert_eq!(listed.len(), 1);
    let image = &listed[0];
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![name.clone()]);
    let repo_digest = format!("{}/tools/busybox@{digest}", registry.addr());
    assert_eq!(image.repo_digests, vec![repo_digest.clone()]);
    assert!(
        image.size > 500_000,
        "busybox is about 1 MB, got {}",
        image.size
    );
    assert_eq!(image.uid, None);
    assert_eq!(image.username, "");

    let short_id = id["sha256:".len().."sha256:".len() + 12].to_string();
    for reference in [
        &name,
        &id,
        &id["sha256:".len()..].to_string(),
        &short_id,
        &repo_digest,
    ] {
        let found = status(&daemon, reference).await.unwrap();
        assert_eq!(
            found.map(|i| i.id),
            Some(id.clone()),
            "lookup by {reference}"
        );
    }

    // Filtered list, ImageFsInfo and verbose status see real data.
    let mut images = daemon.images().await.unwrap();
    let filtered = images
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec(&short_id),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let verbose = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&name),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["architecture"], "amd64");
    let fs = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used > 500_000, "used bytes {used}");

    // The unpacked layer holds the real busybox binary.
    let layers = daemon.dir().join("root/images/layers");
    assert_eq!(count_entries(&layers), 1);
    let layer_dir = std::fs::read_dir(&layers)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(layer_dir.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );

    remove(&daemon, &name).await.unwrap();
    assert_eq!(status(&daemon, &id).await.unwrap(), None);
    assert!(list_all_images(&daemon).await.unwrap().is_empty());
    assert_eq!(count_entries(&layers), 0, "layers left after removal");
    assert_eq!(
        count_entries(&daemon.dir().join("root/images/content/blobs/sha256")),
        0
    );
    let after = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        after.image_filesystems[0]
            .used_bytes
            .as_ref()
            .unwrap()
            .value
            < used / 2
    );
    // Removing again is not an error (critest checks idempotence).
    remove(&daemon, &name).await.unwrap();
}

#[tokio::test]
async fn a_pull_by_digest_records_no_tag_and_two_tags_list_both() {
    let registry = Registry::start().unwrap();
    let layout = busybox_layout(Variant::Plain);
    let digest = push(&layout, "latest", &registry, "bb:one", Format::Oci).unwrap();
    push(&layout, "latest", &registry, "bb:two", Format::Oci).unwrap();
    let daemon = Skiffd::start("").unwrap();
    let addr = registry.addr();

    let by_digest = format!("{addr}/bb@{digest}");
    let id = pull(&daemon, &by_digest).await.unwrap();
    let image = status(&daemon, &id).await.unwrap().unwrap();
    assert!(image.repo_tags.is_empty(), "tags {:?}", image.repo_tags);
    assert_eq!(image.repo_digests, vec![by_digest.clone()]);

    assert_eq!(pull(&daemon, &format!("{addr}/bb:one")).await.unwrap(), id);
    assert_eq!(pull(&daemon, &format!("{addr}/bb:two")).await.unwrap(), id);
    let image = status(&daemon, &format!("{addr}/bb:two"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        image.repo_tags,
        vec![format!("{addr}/bb:one"), format!("{addr}/bb:two")]
    );
    assert_eq!(image.repo_digests, vec![by_digest]);
    assert_eq!(list_all_images(&daemon).await.unwrap().len(), 1);

    // A tag that moves to another image leaves the first image with its other names.
    push(
        &busybox_layout(Variant::Marker("moved")),
        "latest",
        &registry,
        "bb:two",
        Format::Oci,
    )
    .unwrap();
    let other = pull(&daemon, &format!("{addr}/bb:two")).await.unwrap();
    assert_ne!(other, id);
    let first = status(&daemon, &id).await.unwrap().unwrap();
    assert_eq!(first.repo_tags, vec![format!("{addr}/bb:one")]);
    assert_eq!(list_all_images(&daemon).await.unwrap().len(), 2);
}

#[tokio::test]
async fn docker_schema2_and_multi_platform_indexes_pull_the_amd64_image() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start("").unwrap();
    let addr = registry.addr();

    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "docker:v2",
        Format::DockerV2,
    )
    .unwrap();
    let id = pull(&daemon, &format!("{addr}/docker:v2")).await.unwrap();
    assert!(status(&daemon, &id).await.unwrap().is_some());

    // Two platforms under one index, with zstd and uncompressed layers: only amd64 is taken.
    let dir = tempfile::tempdir().unwrap();
    let amd64 = ImageSpec::new()
        .layer(
            Layer::new()
                .compression(Compression::Zstd)
                .file("which", "amd64\n", 0o644),
        )
        .layer(
            Layer::new()
                .compression(Compression::None)
                .file("second", "layer\n", 0o644),
        );
    let arm64 = ImageSpec::new()
        .architecture("arm64")
        .layer(Layer::new().file("which", "arm64\n", 0o644));
    let index = skiff_tests::oci_layout::write_index(dir.path(), "multi", &[arm64, amd64]).unwrap();
    let index_digest = push_index(dir.path(), "multi", &registry, "multi:1", Format::Oci).unwrap();
    assert_eq!(index_digest, index.index);
    let id = pull(&daemon, &format!("{addr}/multi:1")).await.unwrap();
    assert_eq!(
        id, index.images[1].config,
        "the amd64 config is the image ID"
    );
    let image = status(&daemon, &id).await.unwrap().unwrap();
    // The repo digest names what the tag points to: the index.
    assert_eq!(
        image.repo_digests,
        vec![format!("{addr}/multi@{}", index.index)]
    );
}

#[tokio::test]
async fn the_image_user_is_reported_as_uid_or_username() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start("").unwrap();
    let addr = registry.addr();
    push(
        &busybox_layout(Variant::User),
        "latest",
        &registry,
        "named:1",
        Format::Oci,
    )
    .unwrap();
    let named = status(
        &daemon,
        &pull(&daemon, &format!("{addr}/named:1")).await.unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(named.username, "skiff");
    assert_eq!(named.uid, None);

    let dir = tempfile::tempdir().unwrap();
    ImageSpec::new()
        .user("1000:1000")
        .layer(Layer::new().file("f", "x", 0o644))
        .write(dir.path(), "numeric")
        .unwrap();
    push(dir.path(), "numeric", &registry, "numeric:1", Format::Oci).unwrap();
    let numeric = status(
        &daemon,
        &pull(&daemon, &format!("{addr}/numeric:1")).await.unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(numeric.uid, Some(cri::Int64Value { value: 1000 }));
    assert_eq!(numeric.username, "");
}

#[tokio::test]
async fn images_survive_a_daemon_crash() {
    let registry = Registry::start().unwrap();
    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "keep:1",
        Format::Oci,
    )
    .unwrap();
    let mut daemon = Skiffd::start("").unwrap();
    let name = format!("{}/keep:1", registry.addr());
    let id = pull(&daemon, &name).await.unwrap();
    daemon.restart().unwrap();
    let image = status(&daemon, &name)
        .await
        .unwrap()
        .expect("image after restart");
    assert_eq!(image.id, id);
    assert_eq!(list_all_images(&daemon).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_download_each_blob_once() {
    let registry = Registry::start().unwrap();
    let layout = busybox_layout(Variant::Marker("concurrent"));
    push(&layout, "latest", &registry, "same:1", Format::Oci).unwrap();
    let daemon = Skiffd::start("").unwrap();
    let name = format!("{}/same:1", registry.addr());
    let pulls = (0..8).map(|_| pull(&daemon, &name));
    let ids: Vec<String> = futures::future::join_all(pulls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let image = status(&daemon, &name).await.unwrap().unwrap();
    let layers = skiff_tests::oci_layout::resolve_tag(&layout, "latest").unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&skiff_tests::oci_layout::read_blob(&layout, &layers).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        assert_eq!(
            registry.blob_fetches(digest),
            1,
            "layer {digest} fetched more than once"
        );
    }
    assert_eq!(
        registry.blob_fetches(&image.id),
        1,
        "config fetched more than once"
    );
}

#[tokio::test]
async fn a_mirror_serves_registry_k8s_io_names() {
    let registry = Registry::start().unwrap();
    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "e2e-test-images/busybox:1.29-2",
        Format::Oci,
    )
    .unwrap();
    let config = format!(
        "[registry.hosts.\"registry.k8s.io\"]\nmirrors = [\"http://{}\"]\n",
        registry.addr()
    );
    let daemon = Skiffd::start(&config).unwrap();
    let name = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
    let id = pull(&daemon, name).await.unwrap();
    let image = status(&daemon, name).await.unwrap().unwrap();
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![name.to_string()]);
    assert!(image.repo_digests[0].starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:"));
}

#[tokio::test]
async fn bad_requests_get_the_right_codes_and_leave_nothing() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start("").unwrap();
    let addr = registry.addr();

    for bad in ["", "Upper/Case", "busybox:", "a@sha256:123"] {
        let err = pull(&daemon, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "pull {bad:?}: {err}");
    }
    let err = status(&daemon, "Bad Name").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = pull(&daemon, &format!("{addr}/missing:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains(&addr), "names the registry: {err}");

    // Nothing listens on port 1 of loopback: unreachable, and the message says where.
    let err = pull(&daemon, "127.0.0.1:1/nothing:1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("127.0.0.1:1"), "{err}");

    assert_eq!(
        status(&daemon, &format!("{addr}/missing:1")).await.unwrap(),
        None
    );
    remove(&daemon, "never/pulled:1").await.unwrap();
    // An image ID that names nothing is not found either, with or without its `sha256:`
    // (critest removes `0` × 64 to check idempotence).
    let unknown_id = "0".repeat(64);
    for id in [unknown_id.clone(), format!("sha256:{unknown_id}")] {
        assert_eq!(status(&daemon, &id).await.unwrap(), None, "{id}");
        remove(&daemon, &id).await.unwrap();
    }
    assert!(list_all_images(&daemon).await.unwrap().is_empty());
}

/// Builds an image whose only layer is `tar`, pushes it and pulls it through skiffd.
async fn pull_hostile(
    registry: &Registry,
    daemon: &Skiffd,
    name: &str,
    tar: Vec<u8>,
) -> tonic::Status {
    let dir = tempfile::tempdir().unwrap();
    ImageSpec::new()
        .layer(Layer::raw(tar).compression(Compression::Gzip))
        .write(dir.path(), "evil")
        .unwrap();
    push(
        dir.path(),
        "evil",
        registry,
        &format!("{name}:1"),
        Format::Oci,
    )
    .unwrap();
    pull(daemon, &format!("{}/{name}:1", registry.addr()))
        .await
        .expect_err("a hostile layer must be refused")
}

#[tokio::test]
async fn hostile_layers_are_rejected_and_the_host_is_untouched() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start("").unwrap();
    let victim = tempfile::Builder::new()
        .prefix("skiff-victim-")
        .tempdir()
        .unwrap();
    let victim_path = victim
        .path()
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let depth = "../".repeat(20);

    // 1. Path traversal with `..`.
    let err = pull_hostile(
        &registry,
        &daemon,
        "traversal",
        raw_tar(&[RawEntry::file(
            format!("{depth}{victim_path}/dotdot"),
            "pwned",
        )]),
    )
    .await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("dotdot"), "names the entry: {err}");

    // 2. An absolute symlink, then a file written through it.
    let err = pull_hostile(
        &registry,
        &daemon,
        "symlink",
        raw_tar(&[
            RawEntry::symlink("escape", victim.path().to_str().unwrap()),
            RawEntry::file("escape/through-symlink", "pwned"),
        ]),
    )
    .await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // 3. A hardlink to a host file.
    let err = pull_hostile(
        &registry,
        &daemon,
        "hardlink",
        raw_tar(&[RawEntry::hardlink("passwd", format!("{depth}etc/passwd"))]),
    )
    .await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    assert_eq!(
        count_entries(victim.path()),
        0,
        "something was written outside the layer"
    );
    assert!(
        list_all_images(&daemon).await.unwrap().is_empty(),
        "a rejected image is not listed"
    );
    let layers = daemon.dir().join("root/images/layers");
    assert_eq!(count_entries(&layers), 0, "no half-unpacked layer is kept");
}

#[tokio::test]
async fn credentials_from_the_cri_auth_config_open_a_protected_registry() {
    let mut registry = Registry::start().unwrap();
    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "private/bb:1",
        Format::Oci,
    )
    .unwrap();
    registry
        .secure(&skiff_tests::registry::Security {
            basic_auth: Some(("skiff".into(), "s3cret".into())),
            tls: false,
        })
        .unwrap();
    let daemon = Skiffd::start("").unwrap();
    let name = format!("{}/private/bb:1", registry.addr());

    let err = pull(&daemon, &name).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(
        err.message().contains(&registry.addr()),
        "names the registry: {err}"
    );

    let mut images = daemon.images().await.unwrap();
    let wrong = images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            auth: Some(cri::AuthConfig {
                username: "skiff".into(),
                password: "wrong".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied, "{wrong}");

    // Docker's `auth` form: base64 of user:password.
    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            auth: Some(cri::AuthConfig {
                auth: "c2tpZmY6czNjcmV0".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status(&daemon, &name).await.unwrap().unwrap().id,
        pulled.image_ref
    );
}

#[tokio::test]
async fn a_self_signed_registry_needs_skip_verify() {
    let mut registry = Registry::start().unwrap();
    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "tls/bb:1",
        Format::Oci,
    )
    .unwrap();
    registry
        .secure(&skiff_tests::registry::Security {
            basic_auth: None,
            tls: true,
        })
        .unwrap();
    let name = format!("{}/tls/bb:1", registry.addr());

    let strict = Skiffd::start("").unwrap();
    let err = pull(&strict, &name).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "an untrusted certificate is refused: {err}"
    );
    assert!(list_all_images(&strict).await.unwrap().is_empty());

    let config = format!(
        "[registry.hosts.\"{}\"]\nskip_verify = true\n",
        registry.addr()
    );
    let trusting = Skiffd::start(&config).unwrap();
    let id = pull(&trusting, &name).await.unwrap();
    assert_eq!(status(&trusting, &name).await.unwrap().unwrap().id, id);
}
