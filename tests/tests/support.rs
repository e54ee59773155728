//! Checks of the test-support library itself against a real registry, skopeo and umoci.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use skiff_tests::busybox::{busybox_layout, test_images_dir, Variant, BUSYBOX_TAG};
use skiff_tests::oci_layout::{
    raw_tar, read_blob, resolve_tag, sha256_digest, write_index, Compression, ImageSpec, Layer,
    RawEntry, MEDIA_TYPE_CONFIG, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use skiff_tests::registry::{push, push_index, Format, HttpResponse, Registry};

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// GETs `repo`'s manifest `reference` and checks the registry serves exactly `digest`.
fn get_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    accept: &str,
    digest: &str,
) -> Value {
    let resp = registry
        .get(&format!("/v2/{repo}/manifests/{reference}"), &[accept])
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("Docker-Content-Digest"), Some(digest));
    assert_eq!(sha256_digest(&resp.body), digest);
    assert_eq!(resp.header("Content-Type"), Some(accept));
    let manifest: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(manifest["mediaType"], accept);
    manifest
}

/// GETs a blob and checks its content matches its digest.
fn get_blob(registry: &Registry, repo: &str, digest: &str) -> HttpResponse {
    let resp = registry
        .get(&format!("/v2/{repo}/blobs/{digest}"), &[])
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(sha256_digest(&resp.body), digest);
    resp
}

/// Whether any process still mentions `dir` (the registry's tempdir) on its command line.
fn process_mentions(dir: &Path) -> bool {
    let needle = dir.to_str().unwrap().as_bytes();
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .map(|c| c.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

#[test]
fn registry_answers_v2() {
    let registry = Registry::start().unwrap();
    assert!(registry.addr().starts_with("127.0.0.1:"));
    let resp = registry.get("/v2/", &[]).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );
}

#[test]
fn push_busybox_as_oci() {
    let registry = Registry::start().unwrap();
    let layout = busybox_layout(Variant::Plain);
    let digest = push(
        &layout,
        BUSYBOX_TAG,
        &registry,
        "library/busybox:oci",
        Format::Oci,
    )
    .unwrap();
    // Without conversion skopeo keeps the manifest bytes, so the digest is the layout's.
    assert_eq!(digest, resolve_tag(&layout, BUSYBOX_TAG).unwrap());

    let manifest = get_manifest(
        &registry,
        "library/busybox",
        "oci",
        MEDIA_TYPE_MANIFEST,
        &digest,
    );
    get_manifest(
        &registry,
        "library/busybox",
        &digest,
        MEDIA_TYPE_MANIFEST,
        &digest,
    );
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);

    // Pushing only HEADs blobs; each completed GET is counted, a failed one is not.
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(registry.blob_fetches(config_digest), 0);
    let config: Value =
        serde_json::from_slice(&get_blob(&registry, "library/busybox", config_digest).body)
            .unwrap();
    assert_eq!(registry.blob_fetches(config_digest), 1);
    get_blob(&registry, "library/busybox", config_digest);
    assert_eq!(registry.blob_fetches(config_digest), 2);
    let missing = format!("sha256:{}", "0".repeat(64));
    assert_eq!(
        registry
            .get(&format!("/v2/library/busybox/blobs/{missing}"), &[])
            .unwrap()
            .status,
        404
    );
    assert_eq!(registry.blob_fetches(&missing), 0);

    assert_eq!(config["config"]["Cmd"], json!(["sh"]));
    assert_eq!(config["config"]["User"], Value::Null);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);

    // The big layer: what a concurrent-pull test would count.
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    get_blob(&registry, "library/busybox", layer);
    assert_eq!(registry.blob_fetches(layer), 1);
}

#[test]
fn push_busybox_as_docker_v2() {
    let registry = Registry::start().unwrap();
    let layout = busybox_layout(Variant::User);
    let digest = push(
        &layout,
        BUSYBOX_TAG,
        &registry,
        "busybox:v2s2",
        Format::DockerV2,
    )
    .unwrap();
    assert_ne!(digest, resolve_tag(&layout, BUSYBOX_TAG).unwrap());

    let manifest = get_manifest(
        &registry,
        "busybox",
        "v2s2",
        MEDIA_TYPE_DOCKER_MANIFEST,
        &digest,
    );
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value =
        serde_json::from_slice(&get_blob(&registry, "busybox", config_digest).body).unwrap();
    assert_eq!(config["config"]["User"], "skiff");
    assert_eq!(registry.blob_fetches(config_digest), 1);
}

fn platform_image(arch: &str) -> ImageSpec {
    ImageSpec::new()
        .architecture(arch)
        .layer(Layer::new().file("/platform", arch, 0o644))
        .cmd(&["/bin/true"])
}

#[test]
fn push_two_platform_index() {
    let registry = Registry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let written = write_index(
        &layout,
        "multi",
        &[platform_image("amd64"), platform_image("arm64")],
    )
    .unwrap();
    assert_eq!(resolve_tag(&layout, "multi").unwrap(), written.index);

    let digest = push_index(&layout, "multi", &registry, "multi:oci", Format::Oci).unwrap();
    assert_eq!(digest, written.index);
    let index = get_manifest(&registry, "multi", "oci", MEDIA_TYPE_INDEX, &digest);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for (entry, (image, arch)) in manifests
        .iter()
        .zip(written.images.iter().zip(["amd64", "arm64"]))
    {
        assert_eq!(entry["digest"], image.manifest.as_str());
        assert_eq!(entry["platform"]["architecture"], arch);
        assert_eq!(entry["platform"]["os"], "linux");
        get_manifest(
            &registry,
            "multi",
            &image.manifest,
            MEDIA_TYPE_MANIFEST,
            &image.manifest,
        );
        let config: Value =
            serde_json::from_slice(&get_blob(&registry, "multi", &image.config).body).unwrap();
        assert_eq!(config["architecture"], arch);
    }

    // The same index as a Docker manifest list.
    let list = push_index(&layout, "multi", &registry, "multi:v2s2", Format::DockerV2).unwrap();
    let manifest_list = get_manifest(&registry, "multi", "v2s2", MEDIA_TYPE_DOCKER_LIST, &list);
    assert_eq!(manifest_list["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn push_mixed_compression_and_hostile_layers() {
    let registry = Registry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let hostile = raw_tar(&[
        RawEntry::file("../../escape", "x"),
        RawEntry::symlink("evil", "/../../etc/shadow"),
    ]);
    let spec = ImageSpec::new()
        .layer(Layer::new().dir("/d", 0o755).file("/d/gz", "gzip", 0o600))
        .layer(
            Layer::new()
                .file("/zst", "zstd", 0o644)
                .compression(Compression::Zstd),
        )
        .layer(
            Layer::new()
                .hardlink("/d/hard", "/d/gz")
                .compression(Compression::None),
        )
        .layer(Layer::raw(hostile.clone()))
        .entrypoint(&["/bin/sh", "-c"])
        .cmd(&["echo hi"])
        .env("A", "1")
        .working_dir("/d")
        .label("org.example", "yes");
    let written = spec.write(&layout, "mixed").unwrap();
    let digest = push(&layout, "mixed", &registry, "mixed:1", Format::Oci).unwrap();
    assert_eq!(digest, written.manifest);

    let manifest = get_manifest(&registry, "mixed", "1", MEDIA_TYPE_MANIFEST, &digest);
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    let expected = [
        Compression::Gzip,
        Compression::Zstd,
        Compression::None,
        Compression::Gzip,
    ];
    assert_eq!(types, expected.map(Compression::media_type));

    // The hostile tar arrives byte for byte.
    let blob = get_blob(&registry, "mixed", &written.layers[3]);
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob.body[..]), &mut tar)
        .unwrap();
    assert_eq!(tar, hostile);
    assert_eq!(sha256_digest(&tar), written.diff_ids[3]);
    let zstd_tar =
        zstd::decode_all(&get_blob(&registry, "mixed", &written.layers[1]).body[..]).unwrap();
    assert_eq!(sha256_digest(&zstd_tar), written.diff_ids[1]);

    let config: Value =
        serde_json::from_slice(&read_blob(&layout, &written.config).unwrap()).unwrap();
    assert_eq!(config["config"]["Entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(config["config"]["WorkingDir"], "/d");
    assert_eq!(config["config"]["Env"], json!(["A=1"]));
    assert_eq!(config["config"]["Labels"]["org.example"], "yes");
}

#[test]
fn dropped_registry_leaves_no_process() {
    let registry = Registry::start().unwrap();
    let (pid, dir) = (registry.pid(), registry.dir().to_path_buf());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(process_mentions(&dir));
    drop(registry);
    assert!(!process_mentions(&dir));
    assert!(!dir.exists());
}

#[test]
fn registry_of_a_panicking_test_leaves_no_process() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let registry = Registry::start().unwrap();
        tx.send(registry.dir().to_path_buf()).unwrap();
        panic!("deliberate panic with a running registry");
    })
    .join();
    assert!(result.is_err());
    let dir = rx.recv().unwrap();
    assert!(!process_mentions(&dir));
    assert!(!dir.exists());
}

#[test]
fn busybox_layout_unpacks_and_runs() {
    let layout = busybox_layout(Variant::User);
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    // umoci validates the layout and unpacks it as a runtime would, resolving User via /etc/passwd.
    let status = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{BUSYBOX_TAG}", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success());
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(fs::metadata(rootfs.join("home/skiff")).unwrap().uid(), 1000);
    assert!(fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .contains("skiff:x:1000:1000"));
    let config: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["user"]["uid"], 1000);
    assert_eq!(config["process"]["args"], json!(["sh"]));

    let out = Command::new("/usr/sbin/chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo hello from $(id -un)"])
        .env("PATH", "/bin")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from root\n");
}

#[test]
fn busybox_markers_differ_and_share_base_layers() {
    let a = busybox_layout(Variant::Marker("a"));
    let b = busybox_layout(Variant::Marker("b/with slash"));
    assert_ne!(a, b);
    let manifest = |layout: &Path| -> Value {
        let digest = resolve_tag(layout, BUSYBOX_TAG).unwrap();
        serde_json::from_slice(&read_blob(layout, &digest).unwrap()).unwrap()
    };
    let (ma, mb) = (manifest(&a), manifest(&b));
    assert_eq!(ma["layers"][0], mb["layers"][0]);
    assert_ne!(ma["layers"][1], mb["layers"][1]);
}

#[test]
fn busybox_cache_is_built_once_by_concurrent_callers() {
    const MARKER: &str = "support-concurrency";
    // Invalidate this test's own variant so the callers below race to build it.
    let name = Variant::Marker(MARKER).name();
    let _ = fs::remove_file(test_images_dir().join(format!("{name}.complete")));
    let paths: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| busybox_layout(Variant::Marker(MARKER))))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(paths.iter().all(|p| *p == paths[0]));
    let blobs = fs::read_dir(paths[0].join("blobs/sha256")).unwrap().count();
    // Two layers, config and manifest: no leftovers of a second, interleaved build.
    assert_eq!(blobs, 4);
    assert!(test_images_dir().join(format!("{name}.complete")).exists());
}

#[test]
fn testimage_cli_builds_and_pushes() {
    let registry = Registry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let cli = env!("CARGO_BIN_EXE_skiff-testimage");
    let out = Command::new(cli)
        .args(["busybox", "--variant", "user", "--out"])
        .arg(&layout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(built, resolve_tag(&layout, BUSYBOX_TAG).unwrap());

    let out = Command::new(cli)
        .args(["push", "--layout"])
        .arg(&layout)
        .args([
            "--tag",
            BUSYBOX_TAG,
            "--to",
            &format!("{}/cli/busybox:user", registry.addr()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(pushed, built);
    get_manifest(
        &registry,
        "cli/busybox",
        "user",
        MEDIA_TYPE_MANIFEST,
        &pushed,
    );
}
