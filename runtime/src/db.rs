//! A redb database that survives its own I/O errors.
//!
//! After any I/O error (a full disk, typically) redb refuses every later operation with
//! "Previous I/O error occurred. Please close and re-open the database." A daemon holding the
//! database for its whole life would then fail every request until restarted, even once space
//! is freed. [`ReopeningDb`] notices such errors and reopens the file before the next use;
//! redb's recovery on open brings it back to its last committed transaction.

use redb::Database;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

/// A redb database file that is reopened after an I/O error.
#[derive(Debug)]
pub struct ReopeningDb {
    path: PathBuf,
    /// `None` only while a reopen has failed (the next use tries again).
    db: RwLock<Option<Database>>,
    /// Set by an I/O error: reopen before the next use.
    broken: AtomicBool,
}

/// The open database, borrowed for one operation.
#[derive(Debug)]
pub struct DbRef<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Deref for DbRef<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // `ReopeningDb::get` hands out a DbRef only when the database is open.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("DbRef of a closed database"))
    }
}

impl ReopeningDb {
    /// Opens or creates the database file.
    pub fn create(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        Ok(ReopeningDb {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
        })
    }

    /// The database for one operation, reopened first if an earlier one hit an I/O error.
    /// Do not hold two at once: a reopen waits for every one to be dropped.
    pub fn get(&self) -> Result<DbRef<'_>, redb::Error> {
        if self.broken.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            // A reopen failed between our check and now; report it as the I/O problem it is.
            return Err(redb::Error::PreviousIo);
        }
        Ok(DbRef(guard))
    }

    /// Passes an error through, noting whether it leaves the database unusable until reopened.
    pub fn note(&self, error: impl Into<redb::Error>) -> redb::Error {
        let error = error.into();
        if matches!(error, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.broken.store(true, Ordering::SeqCst);
        }
        error
    }

    fn reopen(&self) -> Result<(), redb::Error> {
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(()); // another thread reopened it meanwhile
        }
        // Close first: the file is locked while a handle is open.
        *guard = None;
        let db = Database::create(&self.path).map_err(|e| self.note(e))?;
        *guard = Some(db);
        self.broken.store(false, Ordering::SeqCst);
        tracing::info!(path = %self.path.display(), "database reopened after an I/O error");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn put(db: &ReopeningDb, key: &str, value: u64) -> Result<(), redb::Error> {
        let handle = db.get()?;
        let txn = handle.begin_write().map_err(|e| db.note(e))?;
        txn.open_table(T)
            .map_err(|e| db.note(e))?
            .insert(key, value)
            .map_err(|e| db.note(e))?;
        txn.commit().map_err(|e| db.note(e))
    }

    fn read(db: &ReopeningDb, key: &str) -> Option<u64> {
        let handle = db.get().unwrap();
        let txn = handle.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        table.get(key).unwrap().map(|v| v.value())
    }

    #[test]
    fn an_io_error_makes_the_next_use_reopen_with_committed_data_intact() {
        let dir = tempfile::tempdir().unwrap();
        let db = ReopeningDb::create(&dir.path().join("t.redb")).unwrap();
        put(&db, "a", 1).unwrap();
        // What redb reports once poisoned; any I/O error does the same.
        let noted = db.note(redb::Error::PreviousIo);
        assert!(matches!(noted, redb::Error::PreviousIo));
        assert!(db.broken.load(Ordering::SeqCst));
        put(&db, "b", 2).unwrap();
        assert!(!db.broken.load(Ordering::SeqCst), "reopened");
        assert_eq!(read(&db, "a"), Some(1));
        assert_eq!(read(&db, "b"), Some(2));
        // Other errors leave it alone.
        db.note(redb::Error::DatabaseAlreadyOpen);
        assert!(!db.broken.load(Ordering::SeqCst));
    }
}
