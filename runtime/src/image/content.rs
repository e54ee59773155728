//! The content store: immutable blobs (manifests, configs, compressed layers) named by digest.
//!
//! Layout: `<root>/blobs/sha256/<hex>`; downloads land in `<root>/ingest/` first and are renamed
//! into place only after their digest and size check out, so a blob that exists is always whole.

use super::reference::is_hex;
use super::ImageError;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Blobs by digest on disk.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// Returns the hex part of a `sha256:<64 hex>` digest, or an error naming it.
pub fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && is_hex(hex) => Ok(hex),
        _ => Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            reason: "only sha256:<64 lower-case hex> digests are supported".into(),
        }),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl ContentStore {
    /// Opens (creating if needed) the store under `root` and drops leftovers of interrupted
    /// downloads.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let store = ContentStore {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(store.root.join("blobs/sha256"))
            .map_err(|e| ImageError::io(format!("creating {}", root.display()), e))?;
        let ingest = store.root.join("ingest");
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest)
                .map_err(|e| ImageError::io("clearing interrupted downloads", e))?;
        }
        std::fs::create_dir_all(&ingest).map_err(|e| ImageError::io("creating ingest dir", e))?;
        Ok(store)
    }

    /// Where the blob named `digest` lives.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    /// True when the blob is present (and therefore complete and verified).
    pub fn contains(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Reads a whole blob (manifests and configs are small).
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        std::fs::read(&path).map_err(|e| ImageError::io(format!("reading blob {digest}"), e))
    }

    /// Stores `bytes` under `digest` after checking that they hash to it.
    pub fn write_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                digest: digest.to_string(),
                reason: format!("content hashes to {actual}"),
            });
        }
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        let tmp = self.temp_path(digest)?;
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                ImageError::io(format!("writing blob {digest}"), e)
            })
    }

    /// Starts writing a blob whose digest and size are known in advance.
    pub async fn ingest(&self, digest: &str, size: Option<u64>) -> Result<Ingest, ImageError> {
        let path = self.temp_path(digest)?;
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ImageError::io(format!("creating download file for {digest}"), e))?;
        Ok(Ingest {
            file,
            temp: path,
            dest: self.blob_path(digest)?,
            digest: digest.to_string(),
            expected_size: size,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    /// Deletes a blob; a missing blob is not an error.
    pub fn remove(&self, digest: &str) -> Result<(), ImageError> {
        match std::fs::remove_file(self.blob_path(digest)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io(format!("removing blob {digest}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Digests of every blob present.
    pub fn list(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.root.join("blobs/sha256");
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("listing blobs", e))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|hex| format!("sha256:{hex}"))
            .collect())
    }

    fn temp_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        // Unique per writer so two concurrent writers of one digest never share a file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.root.join("ingest").join(format!(
            "{}-{}-{n}",
            sha256_hex(digest)?,
            std::process::id()
        )))
    }
}

/// A blob being downloaded: hashed as it is written, published by [`Ingest::commit`].
#[derive(Debug)]
pub struct Ingest {
    file: tokio::fs::File,
    temp: PathBuf,
    dest: PathBuf,
    digest: String,
    expected_size: Option<u64>,
    written: u64,
    hasher: Sha256,
}

impl Ingest {
    /// Appends a chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.written += chunk.len() as u64;
        if let Some(max) = self.expected_size {
            if self.written > max {
                return Err(ImageError::DigestMismatch {
                    digest: self.digest.clone(),
                    reason: format!("more than the {max} bytes its descriptor announces"),
                });
            }
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| ImageError::io(format!("writing blob {}", self.digest), e))
    }

    /// Verifies size and digest, then moves the blob into the store.
    pub async fn commit(mut self) -> Result<(), ImageError> {
        self.file
            .flush()
            .await
            .map_err(|e| ImageError::io(format!("writing blob {}", self.digest), e))?;
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                digest: self.digest.clone(),
                reason: format!("downloaded content hashes to {actual}"),
            });
        }
        if let Some(size) = self.expected_size.filter(|s| *s != self.written) {
            return Err(ImageError::DigestMismatch {
                digest: self.digest.clone(),
                reason: format!("{} bytes, descriptor says {size}", self.written),
            });
        }
        tokio::fs::rename(&self.temp, &self.dest)
            .await
            .map_err(|e| ImageError::io(format!("publishing blob {}", self.digest), e))
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // After a successful commit the temp file is gone; otherwise this drops the partial blob.
        let _ = std::fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_published_only_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = sha256_digest(b"hello");
        let mut ingest = store.ingest(&good, Some(5)).await.unwrap();
        ingest.write(b"hel").await.unwrap();
        ingest.write(b"lo").await.unwrap();
        ingest.commit().await.unwrap();
        assert_eq!(store.read(&good).unwrap(), b"hello");

        let other = sha256_digest(b"other");
        let mut ingest = store.ingest(&other, None).await.unwrap();
        ingest.write(b"tampered").await.unwrap();
        assert!(matches!(
            ingest.commit().await,
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(!store.contains(&other));
        // Nothing is left in the ingest area either.
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn write_bytes_refuses_wrong_content_and_bad_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(store.write_bytes(&sha256_digest(b"a"), b"b").is_err());
        assert!(store.write_bytes("sha256:../../etc", b"b").is_err());
        assert!(store.write_bytes("md5:abc", b"b").is_err());
        let d = sha256_digest(b"a");
        store.write_bytes(&d, b"a").unwrap();
        assert_eq!(store.list().unwrap(), vec![d.clone()]);
        store.remove(&d).unwrap();
        store.remove(&d).unwrap();
        assert!(!store.contains(&d));
    }
}
