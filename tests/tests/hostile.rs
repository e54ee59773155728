//! Hostile input from both sides of skiffd: layers that expand without bound or lie about their
//! size, and gRPC requests no client would send. Each is refused with a clear status, nothing
//! is left on disk, and the daemon keeps serving.

use bytes::Bytes;
use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::Variant;
use skiff_tests::cri::{list_all_images, pull_busybox, pull_image};
use skiff_tests::daemon::Skiffd;
use skiff_tests::oci_layout::{
    file_header, gzip_with_zeros, raw_tar, sha256_digest, Compression, ImageSpec, Layer, RawEntry,
};
use skiff_tests::registry::{push, Format, Registry};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

/// The layer limit the bomb test configures: far above busybox, far below the bombs.
const LIMIT: u64 = 64 << 20;

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Bytes of disk allocated below `dir`.
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Asserts the image store holds nothing: no image, blob, download or (half-)unpacked layer.
async fn assert_store_empty(daemon: &Skiffd, what: &str) {
    assert_eq!(
        list_all_images(daemon).await.unwrap().len(),
        0,
        "{what}: an image is listed"
    );
    let images = daemon.root_dir().join("images");
    for dir in ["layers", "content/ingest", "content/blobs/sha256"] {
        let left = count_entries(&images.join(dir));
        assert_eq!(left, 0, "{what}: {left} entries left in {dir}");
    }
}

/// Pushes an image whose only layer is the gzip `blob` (its DiffID as given) as `repo:1`.
fn push_layer(registry: &Registry, repo: &str, blob: Vec<u8>, diff_id: String) -> String {
    let dir = tempfile::tempdir().unwrap();
    ImageSpec::new()
        .layer(Layer::precompressed(blob, diff_id, Compression::Gzip))
        .write(dir.path(), "hostile")
        .unwrap();
    push(
        dir.path(),
        "hostile",
        registry,
        &format!("{repo}:1"),
        Format::Oci,
    )
    .unwrap();
    format!("{}/{repo}:1", registry.addr())
}

#[tokio::test]
async fn gzip_bombs_stop_at_the_layer_limit_and_leave_nothing() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start_bare(&format!("[images]\nmax_layer_bytes = {LIMIT}\n")).unwrap();
    // Hashing gigabytes for a true DiffID would take minutes in a debug build; the unpacker
    // must give up long before it could compare one anyway.
    let placeholder = sha256_digest(b"never compared");

    // 1. One file of 4 GiB of zeros, declared in its header.
    let declared = 4u64 << 30;
    let bomb = gzip_with_zeros(&file_header("zeros", declared), declared + 1024, b"").unwrap();
    let bomb_size = bomb.len();
    let image = push_layer(&registry, "bomb/file", bomb, placeholder.clone());
    let started = Instant::now();
    let err = pull_image(&daemon, &image).await.unwrap_err();
    let refused_in = started.elapsed();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    for needle in [&LIMIT.to_string(), "zeros", "max_layer_bytes"] {
        assert!(err.message().contains(needle), "names {needle}: {err}");
    }
    assert_store_empty(&daemon, "file bomb").await;
    eprintln!(
        "gzip bomb: {bomb_size} bytes of gzip declaring a {declared}-byte file, refused in \
         {refused_in:?}: {}",
        err.message()
    );

    // 2. A small valid layer followed by 1 GiB of zeros: nothing declares the size, so only
    // counting the decompressed stream stops it.
    let tail = 1u64 << 30;
    let bomb = gzip_with_zeros(&raw_tar(&[RawEntry::file("small", "hi")]), tail, b"").unwrap();
    let bomb_size = bomb.len();
    let image = push_layer(&registry, "bomb/tail", bomb, placeholder);
    let started = Instant::now();
    let err = pull_image(&daemon, &image).await.unwrap_err();
    let refused_in = started.elapsed();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains(&LIMIT.to_string()), "{err}");
    assert_store_empty(&daemon, "tail bomb").await;
    eprintln!(
        "gzip bomb: {bomb_size} bytes of gzip expanding to {tail} bytes past the archive end, \
         refused in {refused_in:?}: {}",
        err.message()
    );

    // The host is untouched: the daemon's whole directory holds a few MB of databases, not
    // the limit's worth of zeros.
    let used = disk_use(daemon.dir());
    eprintln!("daemon directory after both bombs: {used} bytes on disk");
    assert!(used < LIMIT / 4, "{used} bytes left on disk");

    // An ordinary image still pulls under the same limit.
    pull_busybox(&daemon, &registry, Variant::Plain)
        .await
        .unwrap();
    assert_eq!(list_all_images(&daemon).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_layer_shorter_than_its_header_claims_is_refused_and_leaves_nothing() {
    let registry = Registry::start().unwrap();
    // Default limits: the claim (8 GiB) is within them, so the stream itself must end short.
    let daemon = Skiffd::start_bare("").unwrap();
    let claimed = (8u64 << 30) - 1;
    let mut tar = file_header("liar", claimed);
    tar.extend(std::iter::repeat_n(b'x', 1 << 20));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let image = push_layer(&registry, "liar", gz.finish().unwrap(), sha256_digest(&tar));
    let err = pull_image(&daemon, &image).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("liar") && err.message().contains("truncated"),
        "{err}"
    );
    assert_store_empty(&daemon, "truncated layer").await;
}

/// What a raw HTTP/2 gRPC call got back.
#[derive(Debug)]
struct RawReply {
    http_status: u16,
    /// `grpc-status`, from the headers (trailers-only reply) or the trailers.
    grpc_status: Option<i32>,
    grpc_message: String,
}

/// POSTs `body` to `path` on skiffd's socket over a fresh HTTP/2 connection, leaving the
/// request stream open after the body unless `end`. Bounded: a hang fails the test.
async fn raw_grpc(
    daemon: &Skiffd,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    end: bool,
) -> RawReply {
    let call = async {
        let io = tokio::net::UnixStream::connect(&daemon.socket)
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(io).await.unwrap();
        let driver = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://skiffd.invalid{path}"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut stream) = client.send_request(request, false).unwrap();
        stream.send_data(Bytes::from(body), end).unwrap();
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let header = |map: &http::HeaderMap, name: &str| {
            map.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut grpc_status = header(response.headers(), "grpc-status");
        let mut grpc_message = header(response.headers(), "grpc-message");
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            if chunk.is_err() {
                break;
            }
        }
        if grpc_status.is_none() {
            if let Ok(Some(trailers)) = body.trailers().await {
                grpc_status = header(&trailers, "grpc-status");
                grpc_message = header(&trailers, "grpc-message");
            }
        }
        driver.abort();
        RawReply {
            http_status: status,
            grpc_status: grpc_status.and_then(|s| s.parse().ok()),
            grpc_message: percent_decode(&grpc_message.unwrap_or_default()),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{path}: no reply within 20 s (skiffd hangs)"))
}

/// One malformed request and the status it must get.
struct Case {
    what: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// End the request stream after the body.
    end: bool,
    code: Code,
    /// Part of the (decoded) grpc-message.
    says: &'static str,
}

/// Undoes the percent-encoding of a grpc-message header.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC length-prefixed message: compression flag, declared length, then `payload`.
fn frame(compressed: bool, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const GRPC: &str = "application/grpc";
const VERSION: &str = "/runtime.v1.RuntimeService/Version";
const PULL: &str = "/runtime.v1.ImageService/PullImage";

#[tokio::test]
async fn malformed_grpc_gets_an_error_status_and_the_daemon_keeps_serving() {
    let daemon = Skiffd::start_bare("").unwrap();
    let pid = daemon.pid().unwrap();
    // tonic reports what it cannot decode as INTERNAL, as the gRPC spec asks of a server; a
    // declared length over the limit is refused from the frame header alone, without waiting
    // for (or buffering) a body that never comes: that stream is left open.
    let cases = [
        Case {
            what: "not protobuf (an invalid tag)",
            path: VERSION,
            content_type: GRPC,
            body: frame(false, 4, &[0xff; 4]),
            end: true,
            code: Code::Internal,
            says: "failed to decode Protobuf message",
        },
        Case {
            what: "a message field sent as a varint",
            path: PULL,
            content_type: GRPC,
            body: frame(false, 2, &[0x08, 0x01]),
            end: true,
            code: Code::Internal,
            says: "invalid wire type",
        },
        Case {
            what: "a string length past the end of the message",
            path: PULL,
            content_type: GRPC,
            body: frame(false, 5, &[0x0a, 0x64, b'a', b'b', b'c']),
            end: true,
            code: Code::Internal,
            says: "buffer underflow",
        },
        Case {
            what: "a frame declaring 2 GiB, stream left open",
            path: VERSION,
            content_type: GRPC,
            body: frame(false, 0x7fff_ffff, b"abc"),
            end: false,
            code: Code::OutOfRange,
            says: "too large",
        },
        Case {
            what: "a frame cut short (100 bytes declared, 10 sent)",
            path: VERSION,
            content_type: GRPC,
            body: frame(false, 100, &[0; 10]),
            end: true,
            code: Code::Internal,
            says: "EOF",
        },
        Case {
            what: "the compressed flag without grpc-encoding",
            path: VERSION,
            content_type: GRPC,
            body: frame(true, 4, &[1, 2, 3, 4]),
            end: true,
            code: Code::Internal,
            says: "compressed-flag",
        },
        Case {
            what: "no message for a unary call",
            path: VERSION,
            content_type: GRPC,
            body: Vec::new(),
            end: true,
            code: Code::Internal,
            says: "Missing request message",
        },
        Case {
            what: "an unknown method",
            path: "/runtime.v1.RuntimeService/Nope",
            content_type: GRPC,
            body: frame(false, 0, &[]),
            end: true,
            code: Code::Unimplemented,
            says: "",
        },
        Case {
            what: "not gRPC at all",
            path: VERSION,
            content_type: "text/plain",
            body: b"hello".to_vec(),
            end: true,
            code: Code::Internal,
            says: "compression flag",
        },
    ];
    for case in cases {
        let reply = raw_grpc(&daemon, case.path, case.content_type, case.body, case.end).await;
        eprintln!("{}: {reply:?}", case.what);
        assert_eq!(reply.http_status, 200, "{}: {reply:?}", case.what);
        assert_eq!(
            reply.grpc_status.map(Code::from),
            Some(case.code),
            "{}: {reply:?}",
            case.what
        );
        assert!(
            reply.grpc_message.contains(case.says),
            "{}: {reply:?}",
            case.what
        );
    }

    // The same daemon (not a restarted one) answers normal calls.
    assert_eq!(daemon.pid(), Some(pid));
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "skiffd is still running"
    );
    let version = daemon
        .runtime()
        .await
        .unwrap()
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "skiff");
}

#[tokio::test]
async fn device_nodes_in_a_layer_are_created_but_cannot_be_opened() {
    // A layer carrying the host's root disk and /dev/mem as device nodes: Docker images may
    // carry device nodes, so they are unpacked, and the container's device cgroup (deny all
    // but the standard devices) is what keeps them closed.
    let root = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (libc::major(root), libc::minor(root));
    let layer = Layer::raw(raw_tar(&[
        RawEntry::device(tar::EntryType::Block, "hostdisk", major, minor),
        RawEntry::device(tar::EntryType::Char, "hostmem", 1, 1),
    ]));
    let image_spec = skiff_tests::busybox::busybox_spec(Variant::Plain)
        .unwrap()
        .layer(layer);
    let layout = tempfile::tempdir().unwrap();
    image_spec.write(layout.path(), "devices").unwrap();
    let registry = Registry::start().unwrap();
    push(
        layout.path(),
        "devices",
        &registry,
        "devices:1",
        Format::Oci,
    )
    .unwrap();
    let daemon = Skiffd::start("").unwrap();
    let image = format!("{}/devices:1", registry.addr());
    pull_image(&daemon, &image).await.unwrap();

    let logs = tempfile::tempdir().unwrap();
    let pod = skiff_tests::cri::pod_config("devices", "devices", logs.path());
    let pod_id = skiff_tests::cri::run_pod(&daemon, &pod).await.unwrap();
    let config = skiff_tests::cri::container_config("prober", &image, &["sleep", "3600"]);
    let id = skiff_tests::cri::start_container(&daemon, &pod_id, &pod, config)
        .await
        .unwrap();
    let listing = skiff_tests::cri::exec(&daemon, &id, &["ls", "-l", "/hostdisk", "/hostmem"], 5)
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.starts_with('b') || listing.contains("\nb"),
        "{listing}"
    );
    for node in ["/hostdisk", "/hostmem"] {
        let reply = skiff_tests::cri::exec(&daemon, &id, &["head", "-c", "16", node], 5)
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&reply.stderr);
        assert_ne!(reply.exit_code, 0, "{node} could be read");
        assert!(
            stderr.contains("Operation not permitted"),
            "{node}: {stderr}"
        );
        assert!(reply.stdout.is_empty());
    }
    skiff_tests::cri::remove_pod(&daemon, &pod_id)
        .await
        .unwrap();
}
