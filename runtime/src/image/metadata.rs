//! Image metadata in redb: one record per image ID, written only when an image is complete.

use super::ImageError;
use crate::db::ReopeningDb;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// image ID (config digest) → JSON-encoded [`ImageRecord`].
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// Everything skiff knows about one local image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image ID: the digest of the config blob.
    pub id: String,
    /// `name:tag` references pointing at this image.
    pub repo_tags: Vec<String>,
    /// `name@digest` references pointing at this image.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest that was pulled.
    pub manifest_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// Bytes of content: config plus compressed layers, as the registry serves them.
    pub size: u64,
    /// When the image was first pulled, Unix seconds.
    pub pulled_at: u64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the compressed blob.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Chain ID: names the unpacked directory in the layer store.
    pub chain_id: String,
    /// Compressed size.
    pub size: u64,
}

/// The metadata database.
#[derive(Debug)]
pub struct MetadataDb {
    db: ReopeningDb,
}

fn db_err(e: impl Into<redb::Error>) -> ImageError {
    ImageError::Database(e.into().to_string())
}

fn decode(bytes: &[u8]) -> Result<ImageRecord, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Database(format!("bad record: {e}")))
}

fn encode(record: &ImageRecord) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(record).map_err(|e| ImageError::Database(format!("encoding record: {e}")))
}

impl MetadataDb {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let db = MetadataDb {
            db: ReopeningDb::create(path).map_err(db_err)?,
        };
        // Create the table up front so read transactions never see it missing.
        let handle = db.db.get().map_err(db_err)?;
        let txn = handle.begin_write().map_err(|e| db.err(e))?;
        txn.open_table(IMAGES).map_err(|e| db.err(e))?;
        txn.commit().map_err(|e| db.err(e))?;
        drop(handle);
        Ok(db)
    }

    /// A database error, noting whether the database must be reopened.
    fn err(&self, e: impl Into<redb::Error>) -> ImageError {
        db_err(self.db.note(e))
    }

    /// All images.
    pub fn all(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (_, value) = entry.map_err(|e| self.err(e))?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    /// Records a pulled image: merges its names into an existing record with the same ID and
    /// takes its tags away from any other image (a tag names one image at a time), in one
    /// transaction. Returns the stored record.
    pub fn add(&self, mut record: ImageRecord) -> Result<ImageRecord, ImageError> {
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
            let mut others = Vec::new();
            for entry in table.iter().map_err(|e| self.err(e))? {
                let (_, value) = entry.map_err(|e| self.err(e))?;
                others.push(decode(value.value())?);
            }
            for mut other in others {
                if other.id == record.id {
                    union_into(&mut record.repo_tags, &other.repo_tags);
                    union_into(&mut record.repo_digests, &other.repo_digests);
                    record.pulled_at = other.pulled_at;
                    continue;
                }
                let before = other.repo_tags.len();
                other.repo_tags.retain(|t| !record.repo_tags.contains(t));
                if other.repo_tags.len() != before {
                    table
                        .insert(other.id.as_str(), encode(&other)?.as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
            record.repo_tags.sort();
            record.repo_digests.sort();
            table
                .insert(record.id.as_str(), encode(&record)?.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(record)
    }

    /// Deletes an image record; returns whether it existed.
    pub fn remove(&self, id: &str) -> Result<bool, ImageError> {
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_write().map_err(|e| self.err(e))?;
        let existed = {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
            let removed = table.remove(id).map_err(|e| self.err(e))?;
            removed.is_some()
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(existed)
    }
}

fn union_into(into: &mut Vec<String>, from: &[String]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![format!("x@{id}")],
            manifest_digest: String::new(),
            layers: vec![],
            size: 1,
            pulled_at: 7,
        }
    }

    #[test]
    fn tags_move_and_names_merge() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(&dir.path().join("meta.redb")).unwrap();
        db.add(record("a", &["x:1", "x:2"])).unwrap();
        db.add(record("b", &["x:2"])).unwrap();
        let merged = db.add(record("a", &["x:3"])).unwrap();
        assert_eq!(merged.repo_tags, vec!["x:1", "x:3"]);
        let all = db.all().unwrap();
        let b = all.iter().find(|r| r.id == "b").unwrap();
        assert_eq!(b.repo_tags, vec!["x:2"]);
        assert!(db.remove("a").unwrap());
        assert!(!db.remove("a").unwrap());

        // Records survive reopening.
        drop(db);
        let db = MetadataDb::open(&dir.path().join("meta.redb")).unwrap();
        assert_eq!(db.all().unwrap().len(), 1);
    }
}
