//! The layer store: each layer unpacked once into its own directory, named by chain ID, shared by
//! every image that has it. Containers stack these directories with overlayfs.

use super::content::{sha256_digest, sha256_hex};
use super::unpack::{unpack_layer_limited, UnpackLimits};
use super::ImageError;
use std::path::{Path, PathBuf};

/// Unpacked layers on disk: `<root>/<chain-id hex>/`.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
    limits: UnpackLimits,
}

/// Chain IDs for a stack of DiffIDs, bottom first, as the OCI image spec defines them:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl LayerStore {
    /// Opens (creating if needed) the store and removes half-unpacked leftovers of a crash.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        std::fs::create_dir_all(root)
            .map_err(|e| ImageError::io(format!("creating {}", root.display()), e))?;
        let entries =
            std::fs::read_dir(root).map_err(|e| ImageError::io("listing layer store", e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| ImageError::io("removing a half-unpacked layer", e))?;
            }
        }
        Ok(LayerStore {
            root: root.to_path_buf(),
            limits: UnpackLimits::default(),
        })
    }

    /// Sets how much one layer may unpack to (default [`UnpackLimits::default`]).
    pub fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The directory holding the unpacked layer `chain_id`.
    pub fn path(&self, chain_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join(sha256_hex(chain_id)?))
    }

    /// True when the layer is unpacked (directories appear only once complete).
    pub fn contains(&self, chain_id: &str) -> bool {
        self.path(chain_id).is_ok_and(|p| p.is_dir())
    }

    /// Unpacks the compressed blob at `blob` as layer `chain_id`, checking its DiffID. Blocking:
    /// call it from a blocking thread. Returns the bytes of file content written.
    pub fn unpack(
        &self,
        chain_id: &str,
        blob_digest: &str,
        blob: &Path,
        diff_id: &str,
    ) -> Result<u64, ImageError> {
        let dest = self.path(chain_id)?;
        let temp = self.root.join(format!(
            ".tmp-{}-{}",
            sha256_hex(chain_id)?,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&temp);
        std::fs::create_dir(&temp).map_err(|e| ImageError::io("creating layer dir", e))?;
        let result = self.unpack_into(&temp, blob_digest, blob, diff_id);
        match result {
            Ok(size) => {
                std::fs::rename(&temp, &dest)
                    .map_err(|e| ImageError::io(format!("publishing layer {chain_id}"), e))?;
                Ok(size)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&temp);
                Err(e)
            }
        }
    }

    fn unpack_into(
        &self,
        temp: &Path,
        blob_digest: &str,
        blob: &Path,
        diff_id: &str,
    ) -> Result<u64, ImageError> {
        let file = std::fs::File::open(blob)
            .map_err(|e| ImageError::io(format!("opening blob {blob_digest}"), e))?;
        let unpacked = unpack_layer_limited(std::io::BufReader::new(file), temp, &self.limits)
            .map_err(|source| ImageError::LayerRejected {
                digest: blob_digest.to_string(),
                source,
            })?;
        if unpacked.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                digest: blob_digest.to_string(),
                reason: format!(
                    "uncompressed layer hashes to {}, image config says {diff_id}",
                    unpacked.diff_id
                ),
            });
        }
        Ok(unpacked.size)
    }

    /// Removes an unpacked layer; a missing one is not an error.
    pub fn remove(&self, chain_id: &str) -> Result<(), ImageError> {
        match std::fs::remove_dir_all(self.path(chain_id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io(format!("removing layer {chain_id}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Chain IDs of every unpacked layer.
    pub fn list(&self) -> Result<Vec<String>, ImageError> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| ImageError::io("listing layers", e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .map(|hex| format!("sha256:{hex}"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
