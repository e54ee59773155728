//! Persistent state of pods and containers (redb), so skiffd can restart and tell the truth.
//!
//! Records are written *before* the host work they describe starts (state `Creating`), so after
//! a crash skiffd knows what to finish or clean up; then updated as each step completes.
//!
//! Async code writes through the `save_*`/`forget_*` methods, which run on tokio's blocking
//! pool: a write transaction first waits for any other writer, then ends in an fdatasync, and
//! neither may stall a tokio worker. Reads are short and stay where they are called.

mod records;

pub use records::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use skiff_runtime::db::ReopeningDb;
use std::path::Path;
use std::sync::Arc;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// A failure of the state database.
#[derive(Debug, thiserror::Error)]
#[error("state database: {0}")]
pub struct StateError(String);

fn db_err(e: impl Into<redb::Error>) -> StateError {
    StateError(e.into().to_string())
}

/// The pod and container database. After an I/O error (a full disk) it is reopened before
/// the next use, so skiffd recovers once space is freed.
#[derive(Debug)]
pub struct StateStore {
    db: ReopeningDb,
}

impl StateStore {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let store = StateStore {
            db: ReopeningDb::create(path).map_err(db_err)?,
        };
        let handle = store.db.get().map_err(|e| store.err(e))?;
        let txn = handle.begin_write().map_err(|e| store.err(e))?;
        txn.open_table(SANDBOXES).map_err(|e| store.err(e))?;
        txn.open_table(CONTAINERS).map_err(|e| store.err(e))?;
        txn.commit().map_err(|e| store.err(e))?;
        drop(handle);
        Ok(store)
    }

    /// A database error, noting whether the database must be reopened.
    fn err(&self, e: impl Into<redb::Error>) -> StateError {
        db_err(self.db.note(e))
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError(e.to_string()))?;
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(table)
            .map_err(|e| self.err(e))?
            .insert(key, bytes.as_slice())
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(table).map_err(|e| self.err(e))?;
        let Some(value) = table.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| StateError(format!("record {key}: {e}")))
    }

    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StateError> {
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let record = serde_json::from_slice(value.value())
                .map_err(|e| StateError(format!("record {}: {e}", key.value())))?;
            out.push(record);
        }
        Ok(out)
    }

    fn delete(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StateError> {
        let handle = self.db.get().map_err(|e| self.err(e))?;
        let txn = handle.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(table)
            .map_err(|e| self.err(e))?
            .remove(key)
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Inserts or replaces a sandbox.
    pub fn put_sandbox(&self, record: &SandboxRecord) -> Result<(), StateError> {
        self.put(SANDBOXES, &record.id, record)
    }

    /// The sandbox with this exact ID.
    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StateError> {
        self.get(SANDBOXES, id)
    }

    /// Every sandbox.
    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, StateError> {
        self.all(SANDBOXES)
    }

    /// Forgets a sandbox.
    pub fn delete_sandbox(&self, id: &str) -> Result<(), StateError> {
        self.delete(SANDBOXES, id)
    }

    /// Inserts or replaces a container.
    pub fn put_container(&self, record: &ContainerRecord) -> Result<(), StateError> {
        self.put(CONTAINERS, &record.id, record)
    }

    /// The container with this exact ID.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StateError> {
        self.get(CONTAINERS, id)
    }

    /// Every container.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StateError> {
        self.all(CONTAINERS)
    }

    /// Forgets a container.
    pub fn delete_container(&self, id: &str) -> Result<(), StateError> {
        self.delete(CONTAINERS, id)
    }

    /// [`Self::put_sandbox`], off the tokio workers.
    pub async fn save_sandbox(self: &Arc<Self>, record: SandboxRecord) -> Result<(), StateError> {
        self.off_worker(move |store| store.put_sandbox(&record))
            .await
    }

    /// [`Self::delete_sandbox`], off the tokio workers.
    pub async fn forget_sandbox(self: &Arc<Self>, id: String) -> Result<(), StateError> {
        self.off_worker(move |store| store.delete_sandbox(&id))
            .await
    }

    /// [`Self::put_container`], off the tokio workers.
    pub async fn save_container(
        self: &Arc<Self>,
        record: ContainerRecord,
    ) -> Result<(), StateError> {
        self.off_worker(move |store| store.put_container(&record))
            .await
    }

    /// [`Self::delete_container`], off the tokio workers.
    pub async fn forget_container(self: &Arc<Self>, id: String) -> Result<(), StateError> {
        self.off_worker(move |store| store.delete_container(&id))
            .await
    }

    async fn off_worker(
        self: &Arc<Self>,
        write: impl FnOnce(&StateStore) -> Result<(), StateError> + Send + 'static,
    ) -> Result<(), StateError> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || write(&store))
            .await
            .map_err(|e| StateError(format!("state write task: {e}")))?
    }
}
