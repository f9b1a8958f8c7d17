//! Durable shards for bookbroker's purchases: idempotency records, purchase records,
//! their step journal, the set of unfinished purchases and the expiry index.
//!
//! A data directory holds a fixed number of shards, chosen when the directory is
//! created and recorded in it ([`DataDir`]), so an engine restarted with another core
//! count still finds every key: a purchase lives in shard
//! [`shard_for`]`(customer, idempotency key, shards)` forever. Each shard is one RocksDB
//! instance owned by exactly one engine core; this crate does no locking of its own and
//! never blocks on anything but RocksDB.
//!
//! Writes are atomic [`Batch`]es. [`Shard::write`] never waits for the disk: the batch
//! reaches the write-ahead log with one `write(2)`, which survives a crash of the
//! process. [`Shard::sync`] makes every earlier write survive a crash of the machine;
//! callers share one `sync` among many writes (group commit) and call it off their
//! reactor thread, because it blocks for an fsync.
//!
//! ```
//! use bookbroker_storage::{Batch, DataDir, IdempotencyRecord};
//!
//! let tmp = tempfile::tempdir().unwrap();
//! let dir = DataDir::open_or_create(tmp.path(), 4).unwrap();
//! let shard = dir.open_shard(bookbroker_storage::shard_for("alice", "key-1", dir.shards())).unwrap();
//!
//! let mut batch = Batch::default();
//! let record = IdempotencyRecord { purchase_id: "pur_1".into(), fingerprint: "ab".into(), created_ms: 1 };
//! batch.put_idempotency("alice", "key-1", &record).unwrap();
//! batch.put_purchase("pur_1", b"{}", true);
//! shard.write(batch).unwrap();
//! shard.sync().unwrap();
//!
//! assert_eq!(shard.idempotency("alice", "key-1").unwrap(), Some(record));
//! assert_eq!(shard.unfinished().unwrap(), vec!["pur_1".to_string()]);
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};

/// The file in a data directory that records its format and shard count.
pub const META_FILE: &str = "bookbroker-data.json";
const FORMAT: u32 = 1;

const CF_IDEMPOTENCY: &str = "idempotency";
const CF_PURCHASES: &str = "purchases";
const CF_JOURNAL: &str = "journal";
const CF_OPEN: &str = "open";
const CF_EXPIRY: &str = "expiry";
const FAMILIES: [&str; 5] = [CF_IDEMPOTENCY, CF_PURCHASES, CF_JOURNAL, CF_OPEN, CF_EXPIRY];

/// What went wrong in storage. Every variant is internal to the engine (never the
/// client's fault); `Io` and `Db` may succeed on retry, `Corrupt` and `Layout` will not.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory or its meta file could not be read or written.
    #[error("data directory {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The data directory exists but does not look like ours, or its layout is unusable.
    #[error("data directory {path}: {detail}")]
    Layout {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// RocksDB refused an operation.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// A stored value could not be decoded.
    #[error("corrupt record {key}: {detail}")]
    Corrupt {
        /// The key whose value is bad.
        key: String,
        /// The decoder's complaint.
        detail: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    shards: u32,
}

/// A data directory: its shard count is fixed at creation.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    shards: u32,
}

impl DataDir {
    /// Opens `path`, or creates it with `shards_if_new` shards (at least 1). An existing
    /// directory keeps the shard count it was created with, whatever is asked now.
    pub fn open_or_create(path: &Path, shards_if_new: u32) -> Result<DataDir> {
        let io = |source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let meta_path = path.join(META_FILE);
        match std::fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: Meta =
                    serde_json::from_slice(&bytes).map_err(|e| StorageError::Layout {
                        path: meta_path.clone(),
                        detail: format!("unreadable meta file: {e}"),
                    })?;
                if meta.format != FORMAT || meta.shards == 0 {
                    return Err(StorageError::Layout {
                        path: meta_path,
                        detail: format!(
                            "format {} with {} shards is not supported (expected format {FORMAT})",
                            meta.format, meta.shards
                        ),
                    });
                }
                Ok(DataDir {
                    path: path.to_path_buf(),
                    shards: meta.shards,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let shards = shards_if_new.max(1);
                let text = serde_json::to_vec(&Meta {
                    format: FORMAT,
                    shards,
                })
                .map_err(|e| StorageError::Layout {
                    path: meta_path.clone(),
                    detail: e.to_string(),
                })?;
                // Write aside, sync, rename, sync the directory: a crash leaves either
                // no meta file or a complete one.
                let tmp = path.join(format!("{META_FILE}.tmp"));
                write_synced(&tmp, &text).map_err(io)?;
                std::fs::rename(&tmp, &meta_path).map_err(io)?;
                std::fs::File::open(path)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
                Ok(DataDir {
                    path: path.to_path_buf(),
                    shards,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// How many shards the directory holds.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating if needed) shard `index`.
    pub fn open_shard(&self, index: u32) -> Result<Shard> {
        if index >= self.shards {
            return Err(StorageError::Layout {
                path: self.path.clone(),
                detail: format!("shard {index} does not exist ({} shards)", self.shards),
            });
        }
        let path = self.path.join(format!("shard-{index:03}"));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(2);
        // Memory and disk stay bounded whatever the write rate. Every column family gets
        // the small write buffer (they once got RocksDB's 64 MiB default, so five
        // families per shard held up to 640 MiB of memtables, and the families written
        // rarely never flushed). All memtables of a shard together are capped, and so is
        // its write-ahead log: a family whose old data keeps a log file alive is flushed
        // instead of letting the logs pile up (`bench/soak` found both).
        opts.set_db_write_buffer_size(SHARD_MEMTABLES_BYTES);
        opts.set_max_total_wal_size(SHARD_WAL_BYTES);
        let family_opts = || {
            let mut o = Options::default();
            o.set_write_buffer_size(FAMILY_WRITE_BUFFER_BYTES);
            o.set_max_write_buffer_number(2);
            o
        };
        let families = FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_opts()));
        let db = DB::open_cf_descriptors(&opts, &path, families)?;
        Ok(Shard {
            db: Arc::new(db),
            index,
        })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Write buffer of one column family of a shard (one memtable; at most two per family).
pub const FAMILY_WRITE_BUFFER_BYTES: usize = 8 << 20;
/// All memtables of one shard together; past this RocksDB flushes the largest.
pub const SHARD_MEMTABLES_BYTES: usize = 32 << 20;
/// The write-ahead log of one shard; past this RocksDB flushes the families that keep
/// the oldest log file alive.
pub const SHARD_WAL_BYTES: u64 = 64 << 20;

/// The shard that owns `(customer, key)`: FNV-1a over both, separated by a NUL so
/// `("ab", "c")` and `("a", "bc")` differ. Stable across versions and platforms, since
/// data on disk depends on it.
pub fn shard_for(customer: &str, key: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in customer
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(key.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// What an idempotency key points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The purchase the key created.
    pub purchase_id: String,
    /// A digest of the request body, so a reuse with another body is detected.
    pub fingerprint: String,
    /// When the key was first seen (milliseconds since the Unix epoch).
    pub created_ms: u64,
}

fn idempotency_key(customer: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(customer.len() + key.len() + 1);
    k.extend_from_slice(customer.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn journal_key(purchase_id: &str, seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(purchase_id.len() + 5);
    k.extend_from_slice(purchase_id.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn expiry_key(at_ms: u64, purchase_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(purchase_id.len() + 8);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(purchase_id.as_bytes());
    k
}

/// What the expiry index remembers about a purchase, so expiring it needs no other read.
#[derive(Serialize, Deserialize)]
struct ExpiryEntry {
    customer: String,
    key: String,
}

enum Op {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
}

/// An atomic group of changes to one shard.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// Records that `(customer, key)` belongs to a purchase.
    pub fn put_idempotency(
        &mut self,
        customer: &str,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<()> {
        let value = serde_json::to_vec(record).map_err(|e| StorageError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })?;
        self.ops.push(Op::Put(
            CF_IDEMPOTENCY,
            idempotency_key(customer, key),
            value,
        ));
        Ok(())
    }

    /// Stores a purchase's record (opaque to storage). `unfinished` keeps it in the set
    /// [`Shard::unfinished`] returns, which recovery walks at start; `false` removes it.
    pub fn put_purchase(&mut self, id: &str, record: &[u8], unfinished: bool) {
        self.ops.push(Op::Put(
            CF_PURCHASES,
            id.as_bytes().to_vec(),
            record.to_vec(),
        ));
        if unfinished {
            self.ops
                .push(Op::Put(CF_OPEN, id.as_bytes().to_vec(), Vec::new()));
        } else {
            self.ops.push(Op::Delete(CF_OPEN, id.as_bytes().to_vec()));
        }
    }

    /// Appends step `seq` of a purchase's journal.
    pub fn append_journal(&mut self, id: &str, seq: u32, entry: &[u8]) {
        self.ops
            .push(Op::Put(CF_JOURNAL, journal_key(id, seq), entry.to_vec()));
    }

    /// Schedules the purchase, its journal and its idempotency key for removal at
    /// `at_ms` (milliseconds since the Unix epoch); see [`Shard::expire`].
    pub fn expire_at(&mut self, id: &str, customer: &str, key: &str, at_ms: u64) -> Result<()> {
        let value = serde_json::to_vec(&ExpiryEntry {
            customer: customer.to_string(),
            key: key.to_string(),
        })
        .map_err(|e| StorageError::Corrupt {
            key: id.to_string(),
            detail: e.to_string(),
        })?;
        self.ops
            .push(Op::Put(CF_EXPIRY, expiry_key(at_ms, id), value));
        Ok(())
    }

    /// Removes a purchase that never started: its record, its first journal entry, its
    /// place among the unfinished, and its idempotency key, so the key is free again.
    /// For an intent that could not be made durable (nothing was sent to any partner).
    pub fn forget_intent(&mut self, id: &str, customer: &str, key: &str) {
        self.ops
            .push(Op::Delete(CF_PURCHASES, id.as_bytes().to_vec()));
        self.ops.push(Op::Delete(CF_OPEN, id.as_bytes().to_vec()));
        self.ops.push(Op::Delete(CF_JOURNAL, journal_key(id, 0)));
        self.ops
            .push(Op::Delete(CF_IDEMPOTENCY, idempotency_key(customer, key)));
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// One RocksDB instance: a shard of the data directory.
///
/// Cloning is cheap and shares the database, so a clone can be moved to a blocking
/// thread for [`Shard::sync`].
#[derive(Clone)]
pub struct Shard {
    db: Arc<DB>,
    index: u32,
}

impl Shard {
    /// The shard's number in its data directory.
    pub fn index(&self) -> u32 {
        self.index
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| StorageError::Layout {
            path: self.db.path().to_path_buf(),
            detail: format!("column family {name} is missing"),
        })
    }

    /// Applies `batch` atomically. The batch is in the write-ahead log when this returns
    /// (it survives a crash of the process) but not necessarily on disk: call
    /// [`Shard::sync`] for that.
    pub fn write(&self, batch: Batch) -> Result<()> {
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put(cf, k, v) => wb.put_cf(self.cf(cf)?, k, v),
                Op::Delete(cf, k) => wb.delete_cf(self.cf(cf)?, k),
            }
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(false);
        self.db.write_opt(wb, &opts)?;
        Ok(())
    }

    /// Applies `batch` and syncs it before returning: one fsync per call. The slow path
    /// that group commit is measured against.
    pub fn write_synced(&self, batch: Batch) -> Result<()> {
        self.write(batch)?;
        self.sync()
    }

    /// Makes every write made so far durable (fsync of the write-ahead log). Blocks.
    pub fn sync(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// The record of `(customer, key)`, if the key is known.
    pub fn idempotency(&self, customer: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        let raw = self
            .db
            .get_cf(self.cf(CF_IDEMPOTENCY)?, idempotency_key(customer, key))?;
        raw.map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// A purchase's record, as stored by [`Batch::put_purchase`].
    pub fn purchase(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_PURCHASES)?, id.as_bytes())?)
    }

    /// Every entry of a purchase's journal, in step order.
    pub fn journal(&self, id: &str) -> Result<Vec<Vec<u8>>> {
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(b'/');
        let iter = self.db.iterator_cf(
            self.cf(CF_JOURNAL)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// The ids of every purchase stored as unfinished: what recovery must drive to an
    /// end.
    pub fn unfinished(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_OPEN)?, IteratorMode::Start) {
            let (k, _) = item?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    /// Removes at most `limit` purchases whose expiry time is at or before `now_ms`,
    /// with their journal and idempotency key, and returns how many it removed. Call it
    /// in small slices (it runs on the owning core), and [`Shard::compact`] after
    /// slices that removed something, so the data leaves the disk rather than lingering
    /// under tombstones.
    pub fn expire(&self, now_ms: u64, limit: usize) -> Result<usize> {
        let expiry = self.cf(CF_EXPIRY)?;
        let mut doomed = Vec::new();
        for item in self.db.iterator_cf(expiry, IteratorMode::Start) {
            let (k, v) = item?;
            if doomed.len() >= limit || k.len() < 8 {
                break;
            }
            let mut at = [0u8; 8];
            at.copy_from_slice(&k[..8]);
            if u64::from_be_bytes(at) > now_ms {
                break;
            }
            let id = String::from_utf8_lossy(&k[8..]).into_owned();
            let entry: ExpiryEntry =
                serde_json::from_slice(&v).map_err(|e| StorageError::Corrupt {
                    key: id.clone(),
                    detail: e.to_string(),
                })?;
            doomed.push((k.to_vec(), id, entry));
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut wb = WriteBatch::default();
        for (k, id, entry) in &doomed {
            wb.delete_cf(expiry, k);
            wb.delete_cf(self.cf(CF_PURCHASES)?, id.as_bytes());
            wb.delete_cf(self.cf(CF_OPEN)?, id.as_bytes());
            wb.delete_cf(
                self.cf(CF_IDEMPOTENCY)?,
                idempotency_key(&entry.customer, &entry.key),
            );
            let mut from = id.as_bytes().to_vec();
            from.push(b'/');
            let mut to = id.as_bytes().to_vec();
            to.push(b'/' + 1);
            wb.delete_range_cf(self.cf(CF_JOURNAL)?, from, to);
        }
        self.db.write(wb)?;
        Ok(doomed.len())
    }

    /// Compacts every column family, dropping deleted records from the files. Blocks
    /// for as long as the compaction takes: call it off the reactor thread.
    pub fn compact(&self) -> Result<()> {
        self.db.flush()?;
        for name in FAMILIES {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Total bytes of live data files, for tests that check expiry really frees disk.
    pub fn live_bytes(&self) -> u64 {
        FAMILIES
            .iter()
            .filter_map(|name| {
                let cf = self.db.cf_handle(name)?;
                self.db
                    .property_int_value_cf(cf, "rocksdb.estimate-live-data-size")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// Whether any record of `(customer, key)` or of `purchase_id` remains.
    pub fn holds(&self, customer: &str, key: &str, purchase_id: &str) -> Result<bool> {
        Ok(self.idempotency(customer, key)?.is_some()
            || self.purchase(purchase_id)?.is_some()
            || !self.journal(purchase_id)?.is_empty())
    }
}

#[cfg(test)]
mod tests;
