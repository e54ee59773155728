//! PullImage: manifest → config → layers → unpack → record, from the first endpoint that works.

use super::config::ImageConfigFile;
use super::content::sha256_digest;
use super::layers::chain_ids;
use super::metadata::{ImageRecord, LayerRecord};
use super::reference::ImageRef;
use super::registry::Scheme;
use super::{ImageError, ImageStore};
use futures::StreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

/// Manifest media types we ask registries for, most specific first.
const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Layer media types we can unpack (compression is detected from the bytes).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// The platform skiff runs images for.
const OS: &str = "linux";
const ARCH: &str = "amd64";

/// A manifest or an index: which one is decided by the fields present.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

/// A blob named by a manifest: the config or a layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type (empty when the manifest leaves it out).
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// The blob's size in bytes, as the manifest states it.
    pub size: i64,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<PlatformSpec>,
}

#[derive(Debug, Deserialize)]
struct PlatformSpec {
    architecture: String,
    os: String,
}

/// What a manifest document from a registry tells a pull to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestTarget {
    /// An image index: fetch the linux/amd64 manifest with this digest.
    Platform(String),
    /// An image manifest: fetch its config and layers.
    Image(ImageManifest),
}

/// An image manifest: the blobs of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image whose config agrees with its manifest: what a pull needs before fetching layers.
#[derive(Debug, Clone)]
pub struct CheckedImage {
    /// The parsed config.
    pub config: ImageConfigFile,
    /// The chain ID of each layer, bottom first.
    pub chain_ids: Vec<String>,
    /// Config plus layers, in bytes, as the manifest states them.
    pub size: u64,
}

impl Descriptor {
    fn to_oci(&self) -> OciDescriptor {
        OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            ..Default::default()
        }
    }

    /// Size as u64; a negative size in a manifest is a broken manifest.
    fn size(&self, reference: &ImageRef) -> Result<u64, ImageError> {
        u64::try_from(self.size).map_err(|_| ImageError::BadImage {
            reference: reference.to_string(),
            reason: format!("descriptor {} has negative size", self.digest),
        })
    }
}

/// Where a pull is happening: one endpoint, one scheme.
struct Source<'a> {
    client: &'a Client,
    remote: Reference,
    auth: &'a RegistryAuth,
    host: String,
}

impl ImageStore {
    /// Pulls `reference` (any form a user types) and returns the recorded image. Mirrors are
    /// tried in order, then the upstream registry. Concurrent pulls of the same content download
    /// each blob once.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &RegistryAuth,
    ) -> Result<ImageRecord, ImageError> {
        let image_ref = ImageRef::parse(reference)?;
        let _shared = self.gc_lock.read().await;
        let endpoints = self
            .registry
            .endpoints(&image_ref.registry, image_ref.upstream_host());
        let mut failures: Vec<ImageError> = Vec::new();
        for endpoint in &endpoints {
            for scheme in &endpoint.schemes {
                let client = self.client(*scheme, endpoint.skip_verify, auth);
                let source = Source {
                    client: &client,
                    remote: image_ref.at_host(&endpoint.host),
                    auth,
                    host: format!(
                        "{}://{}",
                        if *scheme == Scheme::Http {
                            "http"
                        } else {
                            "https"
                        },
                        endpoint.host
                    ),
                };
                match self.pull_from(&source, &image_ref).await {
                    Ok(record) => return Ok(record),
                    // Endpoint-level failures: the next endpoint may well work.
                    Err(
                        e @ (ImageError::Registry { .. }
                        | ImageError::RemoteNotFound { .. }
                        | ImageError::Unauthorized { .. }),
                    ) => {
                        tracing::debug!(endpoint = %source.host, error = %e, "endpoint failed");
                        failures.push(e);
                    }
                    // The content itself is bad: another endpoint would serve the same bytes.
                    Err(e) => return Err(e),
                }
            }
        }
        Err(combine_failures(&image_ref, failures))
    }

    async fn pull_from(
        &self,
        source: &Source<'_>,
        image_ref: &ImageRef,
    ) -> Result<ImageRecord, ImageError> {
        // 1. The manifest named by the reference; if it is an index, the linux/amd64 manifest.
        let (top_bytes, top_digest) = self
            .fetch_manifest(source, &source.remote, image_ref)
            .await?;
        if let Some(wanted) = &image_ref.digest {
            if *wanted != top_digest {
                return Err(ImageError::DigestMismatch {
                    digest: wanted.clone(),
                    reason: format!("registry served a manifest hashing to {top_digest}"),
                });
            }
        }
        let (manifest, manifest_digest) = match read_manifest(&top_bytes, image_ref)? {
            ManifestTarget::Platform(wanted) => {
                let remote = source.remote.clone_with_digest(wanted.clone());
                let (bytes, digest) = self.fetch_manifest(source, &remote, image_ref).await?;
                if digest != wanted {
                    return Err(ImageError::DigestMismatch {
                        digest: wanted,
                        reason: format!("registry served a manifest hashing to {digest}"),
                    });
                }
                let ManifestTarget::Image(manifest) = read_manifest(&bytes, image_ref)? else {
                    return Err(ImageError::BadImage {
                        reference: image_ref.to_string(),
                        reason: "manifest has no config".into(),
                    });
                };
                self.content.write_bytes(&digest, &bytes)?;
                (manifest, digest)
            }
            ManifestTarget::Image(manifest) => (manifest, top_digest.clone()),
        };
        self.content.write_bytes(&top_digest, &top_bytes)?;

        // 2. The config: it names the uncompressed layers and must match the manifest.
        let config_desc = &manifest.config;
        let layers = &manifest.layers;
        self.fetch_blob(source, config_desc, image_ref).await?;
        let config_bytes = self.content.read(&config_desc.digest)?;
        let checked = check_config(&manifest, &config_bytes, image_ref)?;
        let config = &checked.config;

        // 3. Layers: download all (concurrently), then unpack each by chain ID.
        let downloads = layers
            .iter()
            .map(|layer| self.fetch_blob(source, layer, image_ref));
        for result in futures::future::join_all(downloads).await {
            result?;
        }
        let mut records = Vec::with_capacity(layers.len());
        for ((layer, diff_id), chain_id) in layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .zip(&checked.chain_ids)
        {
            self.ensure_unpacked(layer, diff_id, chain_id).await?;
            records.push(LayerRecord {
                digest: layer.digest.clone(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                size: layer.size(image_ref)?,
            });
        }

        // 4. Only now does the image become visible.
        let record = ImageRecord {
            id: config_desc.digest.clone(),
            repo_tags: image_ref.tagged().into_iter().collect(),
            repo_digests: vec![image_ref.with_digest(&top_digest)],
            manifest_digest,
            layers: records,
            size: checked.size,
            pulled_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.add(record))
            .await
            .map_err(|e| ImageError::Database(format!("metadata task failed: {e}")))?
    }

    /// Fetches a manifest and returns its bytes and their sha256 digest.
    async fn fetch_manifest(
        &self,
        source: &Source<'_>,
        remote: &Reference,
        image_ref: &ImageRef,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let (bytes, _) = source
            .client
            .pull_manifest_raw(remote, source.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| remote_error(e, &source.host, image_ref))?;
        let digest = sha256_digest(&bytes);
        Ok((bytes.to_vec(), digest))
    }

    /// Downloads one blob into the content store unless it is there already.
    async fn fetch_blob(
        &self,
        source: &Source<'_>,
        desc: &Descriptor,
        image_ref: &ImageRef,
    ) -> Result<(), ImageError> {
        let _guard = self.locks.lock(&desc.digest).await;
        if self.content.contains(&desc.digest) {
            return Ok(());
        }
        let mut ingest = self
            .content
            .ingest(&desc.digest, Some(desc.size(image_ref)?))
            .await?;
        let mut stream = source
            .client
            .pull_blob_stream(&source.remote, &desc.to_oci())
            .await
            .map_err(|e| remote_error(e, &source.host, image_ref))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Registry {
                registry: source.host.clone(),
                reference: image_ref.to_string(),
                message: format!("downloading {}: {e}", desc.digest),
            })?;
            ingest.write(&chunk).await?;
        }
        ingest.commit().await
    }

    /// Unpacks a downloaded layer into the layer store unless it is there already.
    async fn ensure_unpacked(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        chain_id: &str,
    ) -> Result<(), ImageError> {
        let _guard = self.locks.lock(chain_id).await;
        if self.layers.contains(chain_id) {
            return Ok(());
        }
        let (layers, blob_digest) = (self.layers.clone(), layer.digest.clone());
        let blob = self.content.blob_path(&blob_digest)?;
        let (diff_id, chain_id) = (diff_id.to_string(), chain_id.to_string());
        tokio::task::spawn_blocking(move || {
            layers.unpack(&chain_id, &blob_digest, &blob, &diff_id)
        })
        .await
        .map_err(|e| ImageError::Database(format!("unpack task failed: {e}")))??;
        Ok(())
    }
}

/// Reads a manifest or an image index as served by a registry. For an index, picks the
/// linux/amd64 manifest.
pub fn read_manifest(bytes: &[u8], image_ref: &ImageRef) -> Result<ManifestTarget, ImageError> {
    let bad = |reason: String| ImageError::BadImage {
        reference: image_ref.to_string(),
        reason,
    };
    let doc: ManifestDoc = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("manifest is not valid JSON: {e}")))?;
    match doc {
        ManifestDoc {
            manifests: Some(entries),
            ..
        } => entries
            .into_iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.os == OS && p.architecture == ARCH)
            })
            .map(|e| ManifestTarget::Platform(e.digest))
            .ok_or_else(|| bad(format!("the image index has no {OS}/{ARCH} manifest"))),
        ManifestDoc {
            config: Some(config),
            layers,
            ..
        } => Ok(ManifestTarget::Image(ImageManifest {
            config,
            layers: layers.unwrap_or_default(),
        })),
        ManifestDoc { media_type, .. } => Err(bad(format!(
            "unsupported manifest (media type {:?}); schema 1 manifests are not supported",
            media_type.as_deref().unwrap_or("none")
        ))),
    }
}

/// Checks an image config blob against its manifest, as a pull does before fetching layers:
/// a linux image, one DiffID per layer, layer media types we can unpack, sizes that make sense.
pub fn check_config(
    manifest: &ImageManifest,
    config_bytes: &[u8],
    image_ref: &ImageRef,
) -> Result<CheckedImage, ImageError> {
    let bad = |reason: String| ImageError::BadImage {
        reference: image_ref.to_string(),
        reason,
    };
    let layers = &manifest.layers;
    let config = ImageConfigFile::parse(config_bytes)
        .map_err(|e| bad(format!("config {}: {e}", manifest.config.digest)))?;
    if !config.os.is_empty() && config.os != OS {
        return Err(bad(format!("image is for {}, not {OS}", config.os)));
    }
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(bad(format!(
            "manifest has {} layers but the config names {}",
            layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    if let Some(layer) = layers
        .iter()
        .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Err(bad(format!(
            "layer {} has unsupported media type {:?}",
            layer.digest, layer.media_type
        )));
    }
    // Each size fits in an i64, but three of them can overflow a u64 (blobs already in the
    // content store are not downloaded, so nothing else checks a manifest's sizes).
    let mut size = manifest.config.size(image_ref)?;
    for layer in layers {
        size = size
            .checked_add(layer.size(image_ref)?)
            .ok_or_else(|| bad("the blob sizes add up to more than 2^64 bytes".into()))?;
    }
    Ok(CheckedImage {
        chain_ids: chain_ids(&config.rootfs.diff_ids),
        config,
        size,
    })
}

/// Classifies an oci-client error so the caller can decide whether to try the next endpoint.
fn remote_error(e: OciDistributionError, host: &str, image_ref: &ImageRef) -> ImageError {
    let (registry, reference, message) = (host.to_string(), image_ref.to_string(), e.to_string());
    match &e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            registry,
            reference,
            message,
        },
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::RemoteNotFound {
            registry,
            reference,
            message,
        },
        OciDistributionError::ServerError { code: 404, .. } => ImageError::RemoteNotFound {
            registry,
            reference,
            message,
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|err| {
                matches!(
                    err.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }) =>
        {
            ImageError::RemoteNotFound {
                registry,
                reference,
                message,
            }
        }
        OciDistributionError::DigestError(_) => ImageError::DigestMismatch {
            digest: reference,
            reason: message,
        },
        _ => ImageError::Registry {
            registry,
            reference,
            message,
        },
    }
}

/// One error for a pull that failed everywhere: the most telling kind, naming every endpoint.
fn combine_failures(image_ref: &ImageRef, failures: Vec<ImageError>) -> ImageError {
    let registry = failures
        .iter()
        .filter_map(|f| match f {
            ImageError::Registry { registry, .. }
            | ImageError::RemoteNotFound { registry, .. }
            | ImageError::Unauthorized { registry, .. } => Some(registry.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ");
    let message = failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let (reference, registry) = (image_ref.to_string(), registry);
    if failures
        .iter()
        .any(|f| matches!(f, ImageError::Unauthorized { .. }))
    {
        ImageError::Unauthorized {
            registry,
            reference,
            message,
        }
    } else if failures
        .iter()
        .any(|f| matches!(f, ImageError::RemoteNotFound { .. }))
    {
        // Some endpoint answered and did not have it: more telling than another being down.
        ImageError::RemoteNotFound {
            registry,
            reference,
            message,
        }
    } else {
        ImageError::Registry {
            registry,
            reference,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn image_ref() -> ImageRef {
        ImageRef::parse("registry.example/app:1").unwrap()
    }

    fn manifest(sizes: &[i64]) -> String {
        let layers: Vec<String> = sizes[1..]
            .iter()
            .map(|size| format!(r#"{{"mediaType":"{GZIP}","digest":"sha256:11","size":{size}}}"#))
            .collect();
        format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:c0","size":{}}},"layers":[{}]}}"#,
            sizes[0],
            layers.join(",")
        )
    }

    fn config(layers: usize) -> Vec<u8> {
        let diff_ids: Vec<String> = (0..layers).map(|i| format!(r#""sha256:{i}""#)).collect();
        format!(
            r#"{{"os":"linux","rootfs":{{"diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        )
        .into_bytes()
    }

    fn image(sizes: &[i64]) -> ImageManifest {
        match read_manifest(manifest(sizes).as_bytes(), &image_ref()).unwrap() {
            ManifestTarget::Image(m) => m,
            other => panic!("not an image manifest: {other:?}"),
        }
    }

    #[test]
    fn an_index_points_at_its_linux_amd64_manifest() {
        let index = br#"{"manifests":[
            {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert_eq!(
            read_manifest(index, &image_ref()).unwrap(),
            ManifestTarget::Platform("sha256:amd".into())
        );
        let arm_only = br#"{"manifests":[{"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}}]}"#;
        assert!(read_manifest(arm_only, &image_ref()).is_err());
        let schema1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(read_manifest(schema1, &image_ref()).is_err());
    }

    #[test]
    fn a_config_must_match_its_manifest() {
        let checked = check_config(&image(&[100, 20, 3]), &config(2), &image_ref()).unwrap();
        assert_eq!(checked.size, 123);
        assert_eq!(checked.chain_ids.len(), 2);
        assert_eq!(checked.chain_ids[0], "sha256:0");
        assert!(check_config(&image(&[100, 20, 3]), &config(1), &image_ref()).is_err());
        assert!(check_config(&image(&[100, -1]), &config(1), &image_ref()).is_err());
    }

    /// Found with the `manifest` fuzz target's size check: sizes that overflow a u64 when
    /// added panicked in debug builds and gave a wrapped image size in release builds.
    #[test]
    fn blob_sizes_that_overflow_are_refused() {
        let max = i64::MAX;
        let err = check_config(&image(&[max, max, max]), &config(2), &image_ref()).unwrap_err();
        assert!(err.to_string().contains("2^64"), "{err}");
        let checked = check_config(&image(&[max, max]), &config(1), &image_ref()).unwrap();
        assert_eq!(checked.size, 2 * max as u64);
    }
}
