//! The state store against a damaged file, as a flash card that rots or a
//! power cut leaves it: every 4 KiB page of a store written as the daemon
//! writes it is damaged in turn, and each time the store must either open
//! with exactly what was last committed, or say it cannot trust it (moved
//! aside, or windows dropped after a roll-back) — never hand back anything
//! else.

use lineguard::durable::store::{NewEntry, Part, Store};
use lineguard::pipeline::window::Windows;

const PAGE: usize = 4096;

fn entry(i: u64) -> NewEntry {
    NewEntry {
        created_ms: 1_700_000_000_000 + i as i64,
        ts: 7,
        topic: format!("plant/l1/m{}/lineguard/scores", i % 7),
        payload: format!("{{\"ts\":{i},\"scores\":{{\"anomaly\":0.{i}}}}}").into_bytes(),
        retain: false,
        sparkplug: false,
    }
}

/// Write a store as the daemon would: windows of 40 devices and outbox
/// entries over 30 commits, some entries acknowledged and deleted.
fn build(dir: &std::path::Path) -> (Vec<(String, Vec<u8>)>, Vec<u64>) {
    let store = Store::open(dir).unwrap();
    let mut windows = Windows::new(16, 8, 1).identified_by(42);
    let mut evicted = Vec::new();
    let mut outbox = Vec::new();
    for commit in 0..30u64 {
        // Acknowledged scores go before the next commit, which makes their
        // (unsynced) delete durable with it.
        if commit % 3 == 2 {
            let acked: Vec<u64> = outbox.drain(..8).collect();
            store.remove(&acked, false).unwrap();
        }
        for d in 0..40 {
            let ts = (commit * 40 + d) as i64;
            let values: Vec<f64> = (0..8).map(|k| (ts * 8 + k) as f64 * 0.25).collect();
            windows.push(&format!("l1/m{d}"), Some(ts), ts, &values, &mut evicted).unwrap();
        }
        let (scores, seqs) = store.reserve((0..5).map(|i| entry(commit * 5 + i)).collect(), |e| {
            e.iter().map(|e| e.seq).collect::<Vec<_>>()
        });
        store.commit("p", &[Part { windows: windows.take_dirty(), forget: vec![], scores }]).unwrap();
        outbox.extend(seqs);
    }
    let stored = store.windows("p").unwrap();
    // Like kill -9: no clean close.
    std::mem::forget(store);
    (stored, outbox)
}

#[test]
fn every_damaged_page_is_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let (windows, outbox) = build(&original);
    let bytes = std::fs::read(original.join("state.redb")).unwrap();
    let pages = bytes.len().div_ceil(PAGE);
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for page in 0..pages {
        for (pattern, damage) in [("flip", 0u8), ("zero", 1), ("noise", 2)] {
            let case = dir.path().join(format!("p{page}-{pattern}"));
            std::fs::create_dir_all(&case).unwrap();
            let mut b = bytes.clone();
            let range = page * PAGE..((page + 1) * PAGE).min(b.len());
            match damage {
                0 => b[range.start + 1000.min(range.len() - 1)] ^= 0x55,
                1 => b[range].fill(0),
                _ => b[range].iter_mut().enumerate().for_each(|(i, x)| *x = (i * 131 % 251) as u8),
            }
            std::fs::write(case.join("state.redb"), &b).unwrap();
            let store = match Store::open(&case) {
                Ok(s) => s,
                Err(e) => panic!("page {page} {pattern}: the store must open (fresh if need be): {e}"),
            };
            let r = store.recovery().clone();
            let outcome = if r.moved_aside.is_some() {
                assert!(store.windows("p").unwrap().is_empty() && store.outbox().unwrap().is_empty());
                "moved aside"
            } else if r.rolled_back {
                assert!(!store.windows_trusted());
                "rolled back"
            } else {
                let got = store.windows("p").unwrap();
                let mut restored = Windows::new(16, 8, 1).identified_by(42);
                let mut bad = 0;
                for (d, snap) in &got {
                    let want = windows.iter().find(|(w, _)| w == d).map(|(_, s)| s);
                    match restored.restore(d, snap, i64::MAX) {
                        Ok(()) => assert_eq!(
                            Some(snap),
                            want,
                            "page {page} {pattern}: window {d} restored but not the one written"
                        ),
                        Err(_) => bad += 1,
                    }
                }
                let seqs: Vec<u64> = store.outbox().unwrap().iter().map(|e| e.seq).collect();
                for s in &seqs {
                    assert!(
                        outbox.contains(s) || r.outbox_dropped > 0,
                        "page {page} {pattern}: outbox row {s} was deleted"
                    );
                }
                if got.len() == windows.len() && bad == 0 && seqs == outbox {
                    "intact"
                } else {
                    "records dropped"
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
            drop(store);
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
    eprintln!("{pages} pages x 3 patterns: {outcomes:?}");
    // The sweep reaches each way of refusing (so it tests them), and
    // leaves most damage to free pages harmless.
    for outcome in ["moved aside", "rolled back", "intact"] {
        assert!(outcomes.get(outcome).is_some_and(|n| *n > 0), "no case {outcome}: {outcomes:?}");
    }
}
