//! Durable state under `state.dir`, in one redb database (`state.redb`).
//!
//! - `outbox`: scores not yet acknowledged by the broker, by sequence number.
//! - `windows`: each device's window tail, by `pipeline \0 device`.
//! - `meta`: the next outbox sequence number.
//!
//! A group commit writes a pipeline's changed windows and its new scores in
//! one transaction, fsynced once (`Durability::Immediate`); only after it
//! returns is the telemetry that caused them acknowledged to the broker.
//! The new scores go to the sink before the transaction's pages are written
//! and fsynced, not after, so that disk work overlaps their publishing. That is safe: until the commit
//! is durable its telemetry is unacknowledged, so a crash meanwhile means
//! redelivery and the same windows scored again (a duplicate, as after any
//! crash); and the sink's deletes wait for the commit, since redb has one
//! writer at a time, so an acknowledged score never outlives its deletion.
//! Deleting acknowledged scores does not need an fsync of its own: if it is
//! lost in a crash, those scores are published again (identical duplicates).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

pub struct Store {
    db: Database,
    path: PathBuf,
    /// The next outbox sequence number; holding it serializes commits (and
    /// the hand-over of their entries to the sink) in sequence order. Kept
    /// here, not re-read from `meta`, so that a failed commit whose entries
    /// the sink already has never gives their numbers to other entries.
    next_seq: Mutex<u64>,
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
        let next_seq = {
            let txn = db.begin_read().map_err(|e| err(e.to_string()))?;
            let meta = txn.open_table(META).map_err(|e| err(e.to_string()))?;
            let outbox = txn.open_table(OUTBOX).map_err(|e| err(e.to_string()))?;
            let stored = meta.get(NEXT_SEQ).map_err(|e| err(e.to_string()))?.map_or(1, |v| v.value());
            let last = outbox.last().map_err(|e| err(e.to_string()))?.map_or(0, |(k, _)| k.value());
            stored.max(last + 1)
        };
        Ok(Store { db, path, next_seq: Mutex::new(next_seq) })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// One group commit for `pipeline`: window snapshots to write, devices to
    /// forget, and new scores (given sequence numbers here). `then` gets the
    /// entries once they are written, before the fsync, while commits are
    /// still serialized (entries reach the sink in sequence order); the
    /// caller acknowledges telemetry only when this returns Ok.
    pub fn commit<R>(
        &self,
        pipeline: &str,
        windows: &[(String, Vec<u8>)],
        forget: &[String],
        scores: Vec<NewEntry>,
        then: impl FnOnce(Vec<Entry>) -> R,
    ) -> Result<R, StoreError> {
        let mut next_seq = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::Immediate).map_err(io)?;
        let mut entries = Vec::with_capacity(scores.len());
        {
            let mut w = txn.open_table(WINDOWS).map_err(io)?;
            for (device, snap) in windows {
                w.insert(window_key(pipeline, device).as_str(), snap.as_slice()).map_err(io)?;
            }
            for device in forget {
                w.remove(window_key(pipeline, device).as_str()).map_err(io)?;
            }
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut seq = *next_seq;
            let mut outbox = txn.open_table(OUTBOX).map_err(io)?;
            for s in scores {
                let e = Entry {
                    seq,
                    created_ms: s.created_ms,
                    topic: s.topic,
                    payload: s.payload,
                    retain: s.retain,
                    sparkplug: s.sparkplug,
                };
                outbox.insert(seq, e.encode().as_slice()).map_err(io)?;
                entries.push(e);
                seq += 1;
            }
            meta.insert(NEXT_SEQ, seq).map_err(io)?;
            *next_seq = seq;
        }
        let handed = then(entries);
        txn.commit().map_err(io)?;
        Ok(handed)
    }

    /// Forget every stored window of `pipeline`.
    pub fn clear_windows(&self, pipeline: &str) -> Result<(), StoreError> {
        let devices: Vec<String> = self.windows(pipeline)?.into_iter().map(|(d, _)| d).collect();
        self.commit(pipeline, &[], &devices, Vec::new(), |_| ())
    }

    /// Remove acknowledged (or dropped) scores. `durable` forces an fsync.
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

    #[test]
    fn commits_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let seqs = s
                .commit("p", &[("d1".into(), vec![1, 2, 3])], &[], vec![score("a"), score("b")], |e| {
                    e.iter().map(|e| e.seq).collect::<Vec<_>>()
                })
                .unwrap();
            assert_eq!(seqs, [1, 2]);
            s.commit("q", &[("d1".into(), vec![9])], &[], vec![score("c")], |_| ()).unwrap();
            s.remove(&[1], false).unwrap();
            s.commit("p", &[], &[], vec![], |_| ()).unwrap(); // a later durable commit
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
        s.commit("p", &[], &["d1".into()], vec![score("d")], |_| ()).unwrap();
        assert!(s.windows("p").unwrap().is_empty());
        assert_eq!(s.outbox().unwrap().last().unwrap().seq, 4, "sequence numbers never go back");
        s.clear_windows("q").unwrap();
        assert_eq!(s.counter("bd").unwrap(), None);
        s.set_counter("bd", 3).unwrap();
        assert_eq!(s.counter("bd").unwrap(), Some(3));
        assert!(s.windows("q").unwrap().is_empty());
    }

    /// Scores reach the sink before the fsync, so the broker may acknowledge
    /// one before its commit is done: the sink's delete must then wait for
    /// the commit, not run first and leave the score to be published again.
    #[test]
    fn a_delete_during_the_hand_over_waits_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        std::thread::scope(|scope| {
            let mut deleter = None;
            s.commit("p", &[], &[], vec![score("a")], |entries| {
                let (seq, s) = (entries[0].seq, &s);
                deleter = Some(scope.spawn(move || s.remove(&[seq], false)));
                // Time for the deleter to reach redb's writer lock first.
                std::thread::sleep(std::time::Duration::from_millis(50));
            })
            .unwrap();
            deleter.expect("handed over").join().unwrap().unwrap();
        });
        s.commit("p", &[], &[], vec![], |_| ()).unwrap(); // the delete, made durable
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.outbox().unwrap().is_empty(), "the acknowledged score is gone, not orphaned");
        let next = s.commit("p", &[], &[], vec![score("b")], |e| e[0].seq).unwrap();
        assert_eq!(next, 2, "its sequence number is not given again");
    }
}
