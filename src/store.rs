//! Durable state under `state.dir`, in one redb database (`state.redb`).
//!
//! - `outbox`: scores not yet acknowledged by the broker, by sequence number.
//! - `windows`: each device's window tail, by `pipeline \0 device`.
//! - `meta`: the next outbox sequence number.
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("windows");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
/// redb's page cache: enough for the B-tree's upper levels; leaves come from the OS page cache.
const CACHE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("state store: {0}")]
    Io(String),
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// A score waiting for the broker's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub created_ms: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Published retained (alarm states).
    pub retain: bool,
    /// A Sparkplug record ([`crate::sparkplug::node::Record`]) for the device
    /// `topic`, rendered by the Edge Node at publish time.
    pub sparkplug: bool,
}

impl Entry {
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + self.topic.len() + self.payload.len());
        v.extend_from_slice(&self.created_ms.to_le_bytes());
        v.push(u8::from(self.retain) | (u8::from(self.sparkplug) << 1));
        v.extend_from_slice(&(self.topic.len() as u32).to_le_bytes());
        v.extend_from_slice(self.topic.as_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    fn decode(seq: u64, v: &[u8]) -> Option<Entry> {
        let created_ms = i64::from_le_bytes(v.get(0..8)?.try_into().ok()?);
        let flags = *v.get(8)?;
        let (retain, sparkplug) = (flags & 1 == 1, flags & 2 == 2);
        let len = u32::from_le_bytes(v.get(9..13)?.try_into().ok()?) as usize;
        let topic = std::str::from_utf8(v.get(13..13 + len)?).ok()?.to_string();
        Some(Entry { seq, created_ms, topic, payload: v.get(13 + len..)?.to_vec(), retain, sparkplug })
    }
}

/// A score to add to the outbox (its sequence number is given at commit).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub created_ms: i64,
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

pub struct Store {
    db: Database,
    path: PathBuf,
    seqs: Mutex<Seqs>,
}

fn window_key(pipeline: &str, device: &str) -> String {
    format!("{pipeline}\0{device}")
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("state.redb");
        let err = |message: String| StoreError::Open { path: path.clone(), message };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        // redb caches up to 1 GiB by default; the operating system's page
        // cache serves re-reads just as well without counting against our RSS
        // (the commit path mostly writes).
        let db =
            Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| err(e.to_string()))?;
        let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            txn.open_table(OUTBOX).map_err(|e| err(e.to_string()))?;
            txn.open_table(WINDOWS).map_err(|e| err(e.to_string()))?;
            txn.open_table(META).map_err(|e| err(e.to_string()))?;
        }
        txn.commit().map_err(|e| err(e.to_string()))?;
        let next = {
            let txn = db.begin_read().map_err(|e| err(e.to_string()))?;
            let meta = txn.open_table(META).map_err(|e| err(e.to_string()))?;
            let outbox = txn.open_table(OUTBOX).map_err(|e| err(e.to_string()))?;
            let stored = meta.get(NEXT_SEQ).map_err(|e| err(e.to_string()))?.map_or(1, |v| v.value());
            let last = outbox.last().map_err(|e| err(e.to_string()))?.map_or(0, |(k, _)| k.value());
            stored.max(last + 1)
        };
        Ok(Store { db, path, seqs: Mutex::new(Seqs { next, open: Default::default() }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, Seqs> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every unacknowledged score, oldest first.
    pub fn outbox(&self) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(OUTBOX).map_err(io)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            match Entry::decode(k.value(), v.value()) {
                Some(e) => out.push(e),
                None => tracing::error!(seq = k.value(), "unreadable outbox entry skipped"),
            }
        }
        Ok(out)
    }

    /// The stored windows of one pipeline: `(device, snapshot)`.
    pub fn windows(&self, pipeline: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(WINDOWS).map_err(io)?;
        let prefix = format!("{pipeline}\0");
        let mut out = Vec::new();
        for row in table.range(prefix.as_str()..).map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let Some(device) = k.value().strip_prefix(&prefix) else { break };
            out.push((device.to_string(), v.value().to_vec()));
        }
        Ok(out)
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
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::Immediate).map_err(io)?;
        {
            let mut w = txn.open_table(WINDOWS).map_err(io)?;
            let mut outbox = txn.open_table(OUTBOX).map_err(io)?;
            for part in parts {
                for (device, snap) in &part.windows {
                    w.insert(window_key(pipeline, device).as_str(), snap.as_slice()).map_err(io)?;
                }
                for device in &part.forget {
                    w.remove(window_key(pipeline, device).as_str()).map_err(io)?;
                }
                for (seq, row) in &part.scores.rows {
                    outbox.insert(*seq, row.as_slice()).map_err(io)?;
                }
            }
            let next = self.seqs().next;
            txn.open_table(META).map_err(io)?.insert(NEXT_SEQ, next).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        let mut seqs = self.seqs();
        for part in parts {
            if let Some((first, _)) = part.scores.rows.first() {
                seqs.open.remove(first);
            }
        }
        Ok(())
    }

    /// Remove acknowledged (or dropped) scores, all below
    /// [`Store::durable_below`]. `durable` forces an fsync.
    pub fn remove(&self, seqs: &[u64], durable: bool) -> Result<(), StoreError> {
        if seqs.is_empty() && !durable {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(io)?;
        {
            let mut t = txn.open_table(OUTBOX).map_err(io)?;
            for s in seqs {
                t.remove(*s).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }
}

impl Store {
    /// A small durable counter in `meta` (e.g. the Sparkplug `bdSeq`).
    pub fn counter(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(META).map_err(io)?;
        Ok(table.get(name).map_err(io)?.map(|v| v.value()))
    }

    pub fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut t = txn.open_table(META).map_err(io)?;
            t.insert(name, value).map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(topic: &str) -> NewEntry {
        NewEntry {
            created_ms: 7,
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
        let (lost, _) = s.reserve(vec![score("d")], |_| ()); // never committed
        drop(lost);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.outbox().unwrap().is_empty(), "the acknowledged scores are gone, not orphaned");
        let seqs = commit(&s, "p", &[], &[], &["e"]);
        assert_eq!(seqs, [4], "stored numbers are not given again");
    }
}
