//! Durable state under `state.dir`, in one redb database (`state.redb`).
//!
//! - `outbox`: scores not yet acknowledged by the broker, by sequence number.
//! - `windows`: each device's window tail, by `pipeline \0 device`.
//! - `meta`: the next outbox sequence number, the Sparkplug `bdSeq`.
//!
//! New scores get their sequence numbers from [`Store::reserve`] and go to
//! the sink at once, before anything is written: publishing never waits for
//! the disk. A pipeline's committer thread then writes them with the changed
//! window tails in one group commit, fsynced once (`Durability::Immediate`);
//! only after it returns is the telemetry that caused them acknowledged to
//! the broker. That is safe: until the commit is durable its telemetry is
//! unacknowledged, so a crash meanwhile means redelivery and the same windows
//! scored again (an identical duplicate, as after any crash). The sink
//! deletes an acknowledged score only once its commit is done
//! ([`Store::durable_below`]), so a late commit never brings a deleted score
//! back. Deleting acknowledged scores needs no fsync of its own: if it is
//! lost in a crash, those scores are published again (identical duplicates).
//!
//! What is read back is trusted only when it can be:
//! - Every open verifies the checksum of every page (redb's integrity check).
//!   A file that cannot be opened as a database (damaged, truncated, not
//!   redb's) is moved aside as `state.redb.corrupt-<time>` and a fresh one
//!   made: the daemon starts instead of failing at every restart.
//! - When that check had to fall back to the commit before the last one
//!   (the last one's pages do not verify), the stored windows may lack
//!   samples whose telemetry was acknowledged: [`Store::windows_trusted`]
//!   says so and they are all dropped.
//! - Every record carries its own format and checksum (window snapshots in
//!   [`Windows`](crate::pipeline::window::Windows), outbox entries here); one that fails is dropped.
//!
//! Faults at run time: after an I/O error (a full disk, say) redb refuses
//! every further operation on the same handle, so the handle is closed and
//! the file opened again on a later use, at most every `REOPEN_AFTER` (1 s)
//! (doubling up to `REOPEN_MAX` (10 s)). The committers keep their turns and
//! retry, so nothing is lost and scoring resumes by itself once the disk
//! takes writes again.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ops::events::durable::StoreEvents;

const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("windows");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
/// redb's page cache: enough for the B-tree's upper levels; leaves come from the OS page cache.
const CACHE_BYTES: usize = 1024 * 1024;
/// Outbox entry format 3: this magic, a CRC-32 of the rest, then the entry
/// (its data time after its creation time).
const ENTRY_MAGIC: [u8; 4] = *b"LGo3";
/// Format 2, without the data time: still read (its creation time stands in).
const ENTRY_MAGIC_V2: [u8; 4] = *b"LGo2";
const REOPEN_AFTER: Duration = Duration::from_secs(1);
const REOPEN_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// An I/O error (a full disk, a failing card): retried on a reopened handle.
    #[error("state store: {0}")]
    Io(String),
    /// The file no longer reads as the database it was: nothing in it can be trusted.
    #[error("state store is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Nothing the daemon holds can be made durable in this file any more.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt(_))
    }
}

/// A redb error, sorted by what it means for the daemon.
fn fault(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match &e {
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => StoreError::Corrupt(e.to_string()),
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Io(e.to_string()),
    }
}

/// A score waiting for the broker's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub created_ms: i64,
    /// The data time of what it says (a window's newest sample; 0 for a
    /// Sparkplug death), epoch ms: what a standby keeps it by.
    pub ts: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Published retained (alarm states).
    pub retain: bool,
    /// A Sparkplug record ([`sparkplug::node::Record`](crate::sparkplug::node::Record)) for the device
    /// `topic`, rendered by the Edge Node at publish time.
    pub sparkplug: bool,
}

impl Entry {
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(29 + self.topic.len() + self.payload.len());
        v.extend_from_slice(&ENTRY_MAGIC);
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&self.created_ms.to_le_bytes());
        v.extend_from_slice(&self.ts.to_le_bytes());
        v.push(u8::from(self.retain) | (u8::from(self.sparkplug) << 1));
        v.extend_from_slice(&(self.topic.len() as u32).to_le_bytes());
        v.extend_from_slice(self.topic.as_bytes());
        v.extend_from_slice(&self.payload);
        let sum = crc32fast::hash(&v[8..]);
        v[4..8].copy_from_slice(&sum.to_le_bytes());
        v
    }

    /// `None` unless the row is of a format read here and passes its checksum.
    fn decode(seq: u64, v: &[u8]) -> Option<Entry> {
        let magic = v.get(0..4)?;
        if (magic != ENTRY_MAGIC && magic != ENTRY_MAGIC_V2)
            || v.get(4..8)? != crc32fast::hash(v.get(8..)?).to_le_bytes()
        {
            return None;
        }
        let created_ms = i64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
        let (ts, v) = match magic == ENTRY_MAGIC {
            true => (i64::from_le_bytes(v.get(16..24)?.try_into().ok()?), &v[16..]),
            false => (created_ms, &v[8..]),
        };
        let flags = *v.get(8)?;
        let (retain, sparkplug) = (flags & 1 == 1, flags & 2 == 2);
        let len = u32::from_le_bytes(v.get(9..13)?.try_into().ok()?) as usize;
        let topic = std::str::from_utf8(v.get(13..13usize.checked_add(len)?)?).ok()?.to_string();
        Some(Entry { seq, created_ms, ts, topic, payload: v.get(13 + len..)?.to_vec(), retain, sparkplug })
    }
}

/// A score to add to the outbox (its sequence number is given at commit).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub created_ms: i64,
    /// See [`Entry::ts`].
    pub ts: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub sparkplug: bool,
}

/// Scores given sequence numbers and handed to the sink, to be committed
/// (with their pipeline's window changes) by [`Store::commit`].
#[derive(Debug, Default)]
pub struct Reserved {
    rows: Vec<(u64, Vec<u8>)>,
}

impl Reserved {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes the rows hold.
    pub fn bytes(&self) -> usize {
        self.rows.iter().map(|(_, r)| r.len() + 8).sum()
    }
}

/// One pipeline turn's changes: window snapshots to write, devices to
/// forget, and the scores it reserved. Parts are applied in order.
#[derive(Debug, Default)]
pub struct Part {
    /// `(device, snapshot)`; the device's key is shared with the windows.
    pub windows: Vec<(Arc<str>, Vec<u8>)>,
    pub forget: Vec<String>,
    pub scores: Reserved,
}

impl Part {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.forget.is_empty() && self.scores.is_empty()
    }

    /// Bytes of snapshots, keys and score rows the part holds (what a
    /// queue of parts costs in memory).
    pub fn bytes(&self) -> usize {
        let windows: usize = self.windows.iter().map(|(k, s)| k.len() + s.len()).sum();
        windows + self.forget.iter().map(String::len).sum::<usize>() + self.scores.bytes()
    }
}

#[derive(Debug)]
struct Seqs {
    /// The next outbox sequence number. Kept here, not re-read from `meta`,
    /// so that numbers handed to the sink are never given again, whatever
    /// becomes of their commit.
    next: u64,
    /// Reserved ranges not committed yet: first -> end (exclusive).
    open: std::collections::BTreeMap<u64, u64>,
}

/// What opening the store found, for the start-up log and metrics.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// The old file could not be opened: where it was moved, and why.
    pub moved_aside: Option<(PathBuf, String)>,
    /// The integrity check fell back to the commit before the last one.
    pub rolled_back: bool,
    /// Outbox rows that failed their check (removed).
    pub outbox_dropped: usize,
}

#[derive(Debug)]
struct Reopen {
    earliest: Instant,
    delay: Duration,
    last_error: String,
}

pub struct Store {
    path: PathBuf,
    /// `None` after an I/O error: reopened on a later use.
    db: RwLock<Option<Database>>,
    reopen: Mutex<Reopen>,
    seqs: Mutex<Seqs>,
    recovery: Recovery,
    events: StoreEvents,
    /// Told after every successful commit (the Sparkplug sink waits on it).
    commits: tokio::sync::Notify,
    /// One more each time a reopen at run time fell back to an earlier
    /// commit: the stored windows were removed, so every worker writes all
    /// of its windows again ([`Store::windows_epoch`]).
    windows_epoch: AtomicU64,
}

fn window_key(pipeline: &str, device: &str) -> String {
    format!("{pipeline}\0{device}")
}

/// How a file failed to open.
enum OpenFailure {
    /// Not readable as our database: move it aside.
    Unreadable(String),
    /// Anything else (permissions, a full disk, another process holding it).
    Other(String),
}

/// Open (or create) the database at `path`, verifying every page. Returns
/// whether redb had to fall back to the commit before the last one.
fn open_db(path: &Path) -> Result<(Database, bool), OpenFailure> {
    let fell_back = Arc::new(AtomicBool::new(false));
    let seen = fell_back.clone();
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES).set_check_integrity_on_open(true).set_repair_callback(move |s| {
        // redb reports this stage (0.3) only after the last commit's pages
        // failed to verify and it is about to roll back to the one before.
        if (s.progress() - 0.3).abs() < 1e-9 {
            seen.store(true, Ordering::SeqCst);
        }
    });
    // The open's own checks may panic on a file damaged outside redb.
    let opened = catch_unwind(AssertUnwindSafe(|| builder.create(path)))
        .map_err(|_| OpenFailure::Unreadable("redb could not read it (it panicked)".into()))?;
    let db = opened.map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => OpenFailure::Unreadable(m),
        redb::DatabaseError::UpgradeRequired(v) => {
            OpenFailure::Unreadable(format!("redb file format {v}, not the one this version reads"))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof) =>
        {
            OpenFailure::Unreadable(io.to_string())
        }
        redb::DatabaseError::DatabaseAlreadyOpen => {
            OpenFailure::Other("already open (is another lineguard running with the same state.dir?)".into())
        }
        e => OpenFailure::Other(e.to_string()),
    })?;
    match catch_unwind(AssertUnwindSafe(|| create_tables(&db))) {
        Ok(Ok(())) => Ok((db, fell_back.load(Ordering::SeqCst))),
        Ok(Err(e)) => match fault(e) {
            StoreError::Io(m) => Err(OpenFailure::Other(m)),
            e => Err(OpenFailure::Unreadable(e.to_string())),
        },
        Err(_) => Err(OpenFailure::Unreadable("its tables cannot be read".into())),
    }
}

/// The tables, made where they are missing.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(OUTBOX)?;
    txn.open_table(WINDOWS)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(())
}

/// `state.redb` -> `state.redb.corrupt-20261201T101500Z` (the first free name).
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let t = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let base = format!("{}.corrupt-{stamp}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = PathBuf::from(format!("{base}.{n}"));
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// `dir` exists (or can be made) and takes a durable write, and its
/// `state.redb`, if there is one, can be written: what the daemon needs of
/// `state.dir` (`check-config` tests it, and `run` before it opens anything
/// there). The error names the path and what to change.
pub fn check_writable(dir: &Path) -> Result<(), StoreError> {
    let err = |message: String| StoreError::Open { path: dir.to_path_buf(), message };
    std::fs::create_dir_all(dir).map_err(|e| {
        err(format!("cannot create it: {e} (state.dir must be writable by the daemon's user: create it and give it to that user)"))
    })?;
    let probe = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = tempfile::Builder::new().prefix(".lineguard-probe").tempfile_in(dir)?;
        f.write_all(b"lineguard")?;
        f.as_file().sync_all()
    };
    probe().map_err(|e| {
        err(format!(
            "cannot write in it: {e} (state.dir must be writable by the daemon's user, who keeps its store and \
             the relay's socket there: chown it to that user, or chmod u+w)"
        ))
    })?;
    let path = dir.join("state.redb");
    match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Open {
            message: format!(
                "cannot open it for writing: {e} (the daemon's user must be able to write its state store: \
                 chown it to that user, or chmod u+w)"
            ),
            path,
        }),
        _ => Ok(()),
    }
}

impl Store {
    /// Open the store in `dir`: a file that cannot be read is moved aside
    /// and replaced by a fresh one (see [`Store::recovery`]); any other
    /// failure (permissions, a full disk) is an error.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("state.redb");
        let err = |message: String| StoreError::Open { path: path.clone(), message };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let mut recovery = Recovery::default();
        let db = match open_db(&path) {
            Ok((db, rolled_back)) => {
                recovery.rolled_back = rolled_back;
                db
            }
            Err(OpenFailure::Other(m)) => return Err(err(m)),
            Err(OpenFailure::Unreadable(why)) => {
                let aside = move_aside(&path)
                    .map_err(|e| err(format!("unreadable ({why}) and cannot be moved aside: {e}")))?;
                recovery.moved_aside = Some((aside, why));
                match open_db(&path) {
                    Ok((db, _)) => db,
                    Err(OpenFailure::Other(m) | OpenFailure::Unreadable(m)) => return Err(err(m)),
                }
            }
        };
        Self::opened(path, db, recovery)
    }

    /// The store on `db`, opened from `path`: the next sequence number read,
    /// rows that fail their check removed.
    fn opened(path: PathBuf, db: Database, recovery: Recovery) -> Result<Store, StoreError> {
        let err = |message: String| StoreError::Open { path: path.clone(), message };
        let next = {
            let read = || -> Result<u64, redb::Error> {
                let txn = db.begin_read()?;
                let meta = txn.open_table(META)?;
                let outbox = txn.open_table(OUTBOX)?;
                let stored = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
                let last = outbox.last()?.map_or(0, |(k, _)| k.value());
                Ok(stored.max(last + 1))
            };
            read().map_err(|e| err(e.to_string()))?
        };
        let store = Store {
            events: StoreEvents::new(&path),
            path,
            db: RwLock::new(Some(db)),
            reopen: Mutex::new(Reopen {
                earliest: Instant::now(),
                delay: REOPEN_AFTER,
                last_error: String::new(),
            }),
            seqs: Mutex::new(Seqs { next, open: Default::default() }),
            recovery,
            commits: tokio::sync::Notify::new(),
            windows_epoch: AtomicU64::new(0),
        };
        let bad = store.unreadable_outbox_rows()?;
        if !bad.is_empty() {
            store.remove(&bad, true)?;
        }
        let mut store = store;
        store.recovery.outbox_dropped = bad.len();
        Ok(store)
    }

    /// Say what opening the store found and did (see [`Recovery`]): logged
    /// and counted, a line for each thing set aside.
    pub fn report_recovery(&self) {
        let r = &self.recovery;
        if let Some((aside, why)) = &r.moved_aside {
            self.events.moved_aside(aside, why);
        }
        if r.rolled_back {
            self.events.rolled_back();
        }
        if r.outbox_dropped > 0 {
            self.events.outbox_dropped(r.outbox_dropped);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the open found: a file moved aside, a rolled-back commit, dropped rows.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Whether the stored windows are the ones the acknowledged telemetry
    /// built (false after the open rolled back a commit).
    pub fn windows_trusted(&self) -> bool {
        !self.recovery.rolled_back
    }

    /// Changes when the store lost its windows at run time (see the module doc).
    pub fn windows_epoch(&self) -> u64 {
        self.windows_epoch.load(Ordering::SeqCst)
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, Seqs> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `op` on the database, opening it again first if an earlier I/O
    /// error closed it. An I/O error closes it (redb keeps failing on a
    /// handle that had one).
    fn with_db<R>(&self, op: impl FnOnce(&Database) -> Result<R, redb::Error>) -> Result<R, StoreError> {
        if self.db.read().unwrap_or_else(|p| p.into_inner()).is_none() {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = guard.as_ref() else {
            return Err(StoreError::Io("the state store is closed".into()));
        };
        let result = catch_unwind(AssertUnwindSafe(|| op(db)));
        drop(guard);
        let e = match result {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => fault(e),
            Err(_) => StoreError::Corrupt("redb panicked reading it".into()),
        };
        if matches!(e, StoreError::Io(_)) {
            // Not nested: `reopen` takes these two locks in the other order.
            *self.db.write().unwrap_or_else(|p| p.into_inner()) = None;
            self.reopen.lock().unwrap_or_else(|p| p.into_inner()).last_error = e.to_string();
        }
        Err(e)
    }

    /// Open the file again after an I/O error, at most every so often.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut r = self.reopen.lock().unwrap_or_else(|p| p.into_inner());
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        if db.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if now < r.earliest {
            return Err(StoreError::Io(format!("{} (reopening the state store shortly)", r.last_error)));
        }
        match open_db(&self.path) {
            Ok((opened, rolled_back)) => {
                *db = Some(opened);
                r.delay = REOPEN_AFTER;
                drop(db);
                drop(r);
                self.events.reopened();
                if rolled_back {
                    self.forget_stored_windows();
                }
                Ok(())
            }
            Err(OpenFailure::Unreadable(m)) => Err(StoreError::Corrupt(m)),
            Err(OpenFailure::Other(m)) => {
                r.earliest = now + r.delay;
                r.delay = (r.delay * 2).min(REOPEN_MAX);
                r.last_error = m.clone();
                Err(StoreError::Io(m))
            }
        }
    }

    /// A reopen rolled back a commit: remove every stored window (none can
    /// be trusted any more) and have the workers write theirs again.
    fn forget_stored_windows(&self) {
        let cleared = self.with_db(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.delete_table(WINDOWS)?;
            txn.open_table(WINDOWS)?;
            txn.commit()?;
            Ok(())
        });
        self.windows_epoch.fetch_add(1, Ordering::SeqCst);
        self.events.rolled_back_while_running(&cleared);
    }

    fn unreadable_outbox_rows(&self) -> Result<Vec<u64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(OUTBOX)?;
            let mut bad = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                if Entry::decode(k.value(), v.value()).is_none() {
                    bad.push(k.value());
                }
            }
            Ok(bad)
        })
    }

    /// Every unacknowledged score, oldest first (each passed its check).
    pub fn outbox(&self) -> Result<Vec<Entry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.extend(Entry::decode(k.value(), v.value()));
            }
            Ok(out)
        })
    }

    /// The stored windows of one pipeline: `(device, snapshot)`.
    pub fn windows(&self, pipeline: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = format!("{pipeline}\0");
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(WINDOWS)?;
            let mut out = Vec::new();
            for row in table.range(prefix.as_str()..)? {
                let (k, v) = row?;
                let Some(device) = k.value().strip_prefix(&prefix) else { break };
                out.push((device.to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Whether any window is stored: a daemon that had windows had a
    /// telemetry session, and expects the broker to have kept it.
    pub(crate) fn holds_windows(&self) -> bool {
        let any = self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(WINDOWS)?;
            let first = table.first()?.is_some();
            Ok(first)
        });
        any.unwrap_or(false)
    }

    /// Give new scores their sequence numbers and hand them to `then` at
    /// once (under the lock, so they reach the sink in sequence order, across
    /// pipelines). They must then be committed: until they are,
    /// [`Store::durable_below`] stays at or below their first number.
    pub fn reserve<R>(&self, scores: Vec<NewEntry>, then: impl FnOnce(Vec<Entry>) -> R) -> (Reserved, R) {
        let mut seqs = self.seqs();
        let first = seqs.next;
        let mut rows = Vec::with_capacity(scores.len());
        let mut entries = Vec::with_capacity(scores.len());
        for (i, s) in scores.into_iter().enumerate() {
            let e = Entry {
                seq: first + i as u64,
                created_ms: s.created_ms,
                ts: s.ts,
                topic: s.topic,
                payload: s.payload,
                retain: s.retain,
                sparkplug: s.sparkplug,
            };
            rows.push((e.seq, e.encode()));
            entries.push(e);
        }
        if !rows.is_empty() {
            seqs.next = first + rows.len() as u64;
            let end = seqs.next;
            seqs.open.insert(first, end);
        }
        let handed = then(entries);
        (Reserved { rows }, handed)
    }

    /// Every sequence number below this is committed (or acknowledged and
    /// deleted): deleting one cannot be undone by a later commit.
    pub fn durable_below(&self) -> u64 {
        let seqs = self.seqs();
        seqs.open.first_key_value().map_or(seqs.next, |(first, _)| *first)
    }

    /// One group commit for `pipeline`, fsynced: its parts in order. The
    /// caller acknowledges the telemetry behind them only when this returns
    /// Ok; on an error the same parts may be committed again.
    pub fn commit(&self, pipeline: &str, parts: &[Part]) -> Result<(), StoreError> {
        let next = self.seqs().next;
        self.with_db(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut w = txn.open_table(WINDOWS)?;
                let mut outbox = txn.open_table(OUTBOX)?;
                for part in parts {
                    for (device, snap) in &part.windows {
                        w.insert(window_key(pipeline, device).as_str(), snap.as_slice())?;
                    }
                    for device in &part.forget {
                        w.remove(window_key(pipeline, device).as_str())?;
                    }
                    for (seq, row) in &part.scores.rows {
                        outbox.insert(*seq, row.as_slice())?;
                    }
                }
                txn.open_table(META)?.insert(NEXT_SEQ, next)?;
            }
            txn.commit()?;
            Ok(())
        })?;
        let mut seqs = self.seqs();
        for part in parts {
            if let Some((first, _)) = part.scores.rows.first() {
                seqs.open.remove(first);
            }
        }
        drop(seqs);
        self.commits.notify_waiters();
        Ok(())
    }

    /// Notified after each commit: [`Store::durable_below`] may have moved.
    pub fn commits(&self) -> &tokio::sync::Notify {
        &self.commits
    }

    /// Remove acknowledged (or dropped) scores, all below
    /// [`Store::durable_below`]. `durable` forces an fsync.
    pub fn remove(&self, seqs: &[u64], durable: bool) -> Result<(), StoreError> {
        if seqs.is_empty() && !durable {
            return Ok(());
        }
        self.with_db(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
            {
                let mut t = txn.open_table(OUTBOX)?;
                for s in seqs {
                    t.remove(*s)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// A small durable counter in `meta` (e.g. the Sparkplug `bdSeq`).
    pub fn counter(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            Ok(table.get(name)?.map(|v| v.value()))
        })
    }

    pub fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(META)?;
                t.insert(name, value)?;
            }
            txn.commit()?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(topic: &str) -> NewEntry {
        NewEntry {
            created_ms: 7,
            ts: 7,
            topic: topic.into(),
            payload: b"{}".to_vec(),
            retain: topic == "b",
            sparkplug: topic == "c",
        }
    }

    /// Reserve and commit in one go: the sequence numbers handed over.
    fn commit(
        s: &Store,
        pipeline: &str,
        windows: &[(&str, &[u8])],
        forget: &[&str],
        scores: &[&str],
    ) -> Vec<u64> {
        let (reserved, seqs) =
            s.reserve(scores.iter().map(|t| score(t)).collect(), |e| e.iter().map(|e| e.seq).collect());
        let part = Part {
            windows: windows.iter().map(|(d, v)| (Arc::from(*d), v.to_vec())).collect(),
            forget: forget.iter().map(|d| d.to_string()).collect(),
            scores: reserved,
        };
        s.commit(pipeline, &[part]).unwrap();
        seqs
    }

    #[test]
    fn commits_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(commit(&s, "p", &[("d1", &[1, 2, 3])], &[], &["a", "b"]), [1, 2]);
            commit(&s, "q", &[("d1", &[9])], &[], &["c"]);
            s.remove(&[1], false).unwrap();
            commit(&s, "p", &[], &[], &[]); // a later durable commit
        }
        let s = Store::open(dir.path()).unwrap();
        assert!(s.recovery().moved_aside.is_none() && !s.recovery().rolled_back);
        let out = s.outbox().unwrap();
        assert_eq!(out.iter().map(|e| (e.seq, e.topic.as_str())).collect::<Vec<_>>(), [(2, "b"), (3, "c")]);
        assert_eq!(out[0].payload, b"{}");
        assert_eq!(out[0].created_ms, 7);
        assert!(out[0].retain && !out[1].retain);
        assert!(!out[0].sparkplug && out[1].sparkplug);
        assert_eq!(s.windows("p").unwrap(), [("d1".to_string(), vec![1, 2, 3])]);
        assert_eq!(s.windows("q").unwrap(), [("d1".to_string(), vec![9])]);
        commit(&s, "p", &[], &["d1"], &["d"]);
        assert!(s.windows("p").unwrap().is_empty());
        assert_eq!(s.outbox().unwrap().last().unwrap().seq, 4, "sequence numbers never go back");
        assert_eq!(s.counter("bd").unwrap(), None);
        s.set_counter("bd", 3).unwrap();
        assert_eq!(s.counter("bd").unwrap(), Some(3));
    }

    /// Parts of one commit apply in order: a device forgotten and back
    /// again keeps its new window; one written and then forgotten is gone.
    #[test]
    fn parts_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        commit(&s, "p", &[("a", &[1]), ("b", &[1])], &[], &[]);
        let part = |windows: &[(&str, u8)], forget: &[&str]| Part {
            windows: windows.iter().map(|(d, v)| (Arc::from(*d), vec![*v])).collect(),
            forget: forget.iter().map(|d| d.to_string()).collect(),
            scores: Reserved::default(),
        };
        s.commit("p", &[part(&[], &["a"]), part(&[("a", 2), ("b", 2)], &[]), part(&[], &["b"])]).unwrap();
        assert_eq!(s.windows("p").unwrap(), [("a".to_string(), vec![2])]);
    }

    /// Scores reach the sink before their commit, so the broker may
    /// acknowledge one first: it may be deleted only once committed, or the
    /// commit would bring it back. Numbers are never given twice, even when
    /// a commit fails or never happens.
    #[test]
    fn deletes_wait_for_the_commit_and_numbers_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.durable_below(), 1);
        let (first, seqs) =
            s.reserve(vec![score("a"), score("b")], |e| e.iter().map(|e| e.seq).collect::<Vec<_>>());
        let (second, _) = s.reserve(vec![score("c")], |_| ());
        assert_eq!(seqs, [1, 2]);
        assert_eq!(s.durable_below(), 1, "nothing reserved is committed yet");
        s.commit("p", &[Part { scores: second, ..Part::default() }]).unwrap();
        assert_eq!(s.durable_below(), 1, "the older reservation still holds the floor");
        s.commit("p", &[Part { scores: first, ..Part::default() }]).unwrap();
        assert_eq!(s.durable_below(), 4);
        s.remove(&[1, 2, 3], true).unwrap();
        let (lost, _) = s.reserve(vec![score("d")], |_| ());
        drop(lost);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.outbox().unwrap().is_empty(), "the acknowledged scores are gone, not orphaned");
        let seqs = commit(&s, "p", &[], &[], &["e"]);
        assert_eq!(seqs, [4], "stored numbers are not given again");
    }

    /// Every byte of an outbox row is covered: a damaged row is never
    /// published, and an older format is not taken for the current one.
    #[test]
    fn outbox_rows_carry_a_format_and_a_checksum() {
        let e = Entry {
            seq: 9,
            created_ms: 1,
            ts: 7,
            topic: "t/a".into(),
            payload: b"{\"x\":1}".to_vec(),
            retain: true,
            sparkplug: false,
        };
        let row = e.encode();
        assert_eq!(Entry::decode(9, &row), Some(e));
        for i in 0..row.len() {
            let mut bad = row.clone();
            bad[i] ^= 0x10;
            assert_eq!(Entry::decode(9, &bad), None, "byte {i}");
        }
        assert_eq!(Entry::decode(9, &row[..row.len() - 1]), None);
        assert_eq!(Entry::decode(9, &row[8..]), None, "the format before this one");
    }

    /// A file that is not a database (garbage, truncated) is moved aside
    /// with the reason, and a fresh store opens in its place.
    #[test]
    fn an_unreadable_file_is_moved_aside_and_a_fresh_store_made() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.redb"), vec![0x5a; 20_000]).unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (aside, why) = s.recovery().moved_aside.clone().expect("moved aside");
        assert!(aside.file_name().unwrap().to_str().unwrap().starts_with("state.redb.corrupt-"), "{aside:?}");
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 20_000], "kept as it was");
        assert!(!why.is_empty());
        assert!(s.outbox().unwrap().is_empty() && s.windows("p").unwrap().is_empty());
        commit(&s, "p", &[("d", &[1])], &[], &["a"]);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.recovery().moved_aside.is_none(), "the fresh file opens cleanly");
        assert_eq!(s.outbox().unwrap().len(), 1);
    }

    #[test]
    fn a_state_dir_that_cannot_be_written_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("a/b")).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = check_writable(&file.join("sub")).unwrap_err().to_string();
        assert!(e.contains("cannot create"), "{e}");
    }
}
