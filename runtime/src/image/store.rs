//! The image store: opening the stores, finding images by any reference, removing them and
//! measuring what they use. Pulling lives in [`super::pull`].

use super::config::ImageConfigFile;
use super::content::ContentStore;
use super::layers::LayerStore;
use super::locks::KeyedLocks;
use super::metadata::{ImageRecord, MetadataDb};
use super::reference::{as_image_id, ImageRef};
use super::registry::{RegistryConfig, Scheme};
use super::{ImageError, RegistryAuth};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::Client;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Local images: content store, layer store and metadata under one root directory.
pub struct ImageStore {
    root: PathBuf,
    pub(super) content: ContentStore,
    pub(super) layers: LayerStore,
    pub(super) db: Arc<MetadataDb>,
    pub(super) registry: RegistryConfig,
    pub(super) locks: KeyedLocks,
    /// Pulls hold it shared; removal holds it exclusively, so garbage collection never deletes
    /// a blob that a pull in progress has just downloaded but not yet recorded.
    pub(super) gc_lock: tokio::sync::RwLock<()>,
    /// Clients keep the first credentials they see per registry, so each set of credentials
    /// gets its own (keyed by a hash, never the secret itself).
    clients: Mutex<HashMap<(Scheme, bool, String), Client>>,
}

/// A stable key for a set of credentials that does not keep the secret in memory as a key.
fn credentials_key(auth: &RegistryAuth) -> String {
    use sha2::{Digest, Sha256};
    let material = match auth {
        RegistryAuth::Anonymous => return String::new(),
        RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
        RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
    };
    hex::encode(Sha256::digest(material.as_bytes()))
}

/// Disk use of the image store, for ImageFsInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUsage {
    /// Bytes of disk used (allocated blocks).
    pub bytes: u64,
    /// Inodes used.
    pub inodes: u64,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Registry clients hold connection pools and tokens: nothing worth printing.
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens the store under `root`, creating it if needed, and drops content no image uses
    /// (left by a pull that was interrupted).
    pub fn open(root: &Path, registry: RegistryConfig) -> Result<Self, ImageError> {
        let content = ContentStore::open(&root.join("content"))?;
        let layers = LayerStore::open(&root.join("layers"))?;
        let db = Arc::new(MetadataDb::open(&root.join("images.redb"))?);
        let store = ImageStore {
            root: root.to_path_buf(),
            content,
            layers,
            db,
            registry,
            locks: KeyedLocks::default(),
            gc_lock: tokio::sync::RwLock::new(()),
            clients: Mutex::new(HashMap::new()),
        };
        store.collect_garbage()?;
        Ok(store)
    }

    /// Sets how much one layer may unpack to; layers beyond it are refused (gzip bombs).
    pub fn with_unpack_limits(mut self, limits: super::unpack::UnpackLimits) -> Self {
        self.layers = self.layers.with_limits(limits);
        self
    }

    /// The directory everything lives under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A registry client for one scheme, TLS setting and set of credentials, created once and
    /// reused (clients keep connection pools and tokens).
    pub(super) fn client(&self, scheme: Scheme, skip_verify: bool, auth: &RegistryAuth) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry((scheme, skip_verify, credentials_key(auth)))
            .or_insert_with(|| {
                Client::new(ClientConfig {
                    protocol: match scheme {
                        Scheme::Http => ClientProtocol::Http,
                        Scheme::Https => ClientProtocol::Https,
                    },
                    accept_invalid_certificates: skip_verify,
                    connect_timeout: Some(Duration::from_secs(10)),
                    read_timeout: Some(Duration::from_secs(60)),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// Every local image.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.db.all()
    }

    /// Finds the image a user means by `reference`: a full image ID, a unique ID prefix of at
    /// least 12 hex digits, `name:tag` or `name@digest` (names normalized, so `busybox` works).
    /// `Ok(None)` when nothing matches; an error when the reference cannot be parsed.
    pub fn find(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        let images = self.db.all()?;
        if let Some(hex) = as_image_id(reference) {
            let mut matches = images.iter().filter(|img| {
                img.id
                    .strip_prefix("sha256:")
                    .is_some_and(|id| id.starts_with(hex))
            });
            if let (Some(found), None) = (matches.next(), matches.next()) {
                return Ok(Some(found.clone()));
            }
            // A full ID names no image when it matches none: it cannot be a name either (a bare
            // 64-hex name is refused), and clients such as critest check that RemoveImage of
            // an unknown ID succeeds. A shorter prefix may still be a name.
            if reference.starts_with("sha256:") || hex.len() == 64 {
                return Ok(None);
            }
        }
        let wanted = ImageRef::parse(reference)?;
        let found = images.into_iter().find(|img| match &wanted.digest {
            Some(digest) => img.repo_digests.contains(&wanted.with_digest(digest)),
            None => wanted
                .tagged()
                .is_some_and(|tagged| img.repo_tags.contains(&tagged)),
        });
        Ok(found)
    }

    /// The typed image config of a recorded image.
    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfigFile, ImageError> {
        let bytes = self.content.read(&image.id)?;
        ImageConfigFile::parse(&bytes).map_err(|e| ImageError::BadImage {
            reference: image.id.clone(),
            reason: format!("stored config: {e}"),
        })
    }

    /// The raw image config JSON, for verbose status.
    pub fn config_json(&self, image: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let bytes = self.content.read(&image.id)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::BadImage {
            reference: image.id.clone(),
            reason: format!("stored config: {e}"),
        })
    }

    /// Unpacked layer directories of an image, bottom first (overlayfs wants them reversed).
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .map(|l| self.layers.path(&l.chain_id))
            .collect()
    }

    /// Removes the image `reference` points at, with all its tags and digests, and every blob
    /// and layer no other image uses. Returns `false` when no image matched.
    pub async fn remove(&self, reference: &str) -> Result<bool, ImageError> {
        let Some(image) = self.find(reference)? else {
            return Ok(false);
        };
        let _exclusive = self.gc_lock.write().await;
        let removed = self.db.remove(&image.id)?;
        self.collect_garbage()?;
        Ok(removed)
    }

    /// After a failed pull: deletes the blobs and layers it left that no image references,
    /// unless another pull is in progress (its downloads are not recorded yet; the next
    /// removal or restart collects them). Returns whether it ran. Blocking.
    pub fn discard_unused(&self) -> Result<bool, ImageError> {
        let Ok(_exclusive) = self.gc_lock.try_write() else {
            return Ok(false);
        };
        self.collect_garbage()?;
        Ok(true)
    }

    /// Deletes blobs and unpacked layers that no recorded image references.
    fn collect_garbage(&self) -> Result<(), ImageError> {
        let images = self.db.all()?;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut chains: HashSet<String> = HashSet::new();
        for image in &images {
            blobs.insert(image.id.clone());
            blobs.insert(image.manifest_digest.clone());
            for named in &image.repo_digests {
                if let Some((_, digest)) = named.split_once('@') {
                    blobs.insert(digest.to_string());
                }
            }
            for layer in &image.layers {
                blobs.insert(layer.digest.clone());
                chains.insert(layer.chain_id.clone());
            }
        }
        for digest in self.content.list()? {
            if !blobs.contains(&digest) {
                self.content.remove(&digest)?;
            }
        }
        for chain_id in self.layers.list()? {
            if !chains.contains(&chain_id) {
                self.layers.remove(&chain_id)?;
            }
        }
        Ok(())
    }

    /// Disk blocks and inodes used by the whole store (hard links counted once).
    pub fn usage(&self) -> Result<StoreUsage, ImageError> {
        let mut usage = StoreUsage {
            bytes: 0,
            inodes: 0,
        };
        let mut seen = HashSet::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Removed while we walked (a concurrent removal): nothing to count.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io(format!("reading {}", dir.display()), e)),
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if seen.insert((meta.dev(), meta.ino())) {
                    usage.bytes += meta.blocks() * 512;
                    usage.inodes += 1;
                }
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(usage)
    }
}
