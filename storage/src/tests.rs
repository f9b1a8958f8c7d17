use super::*;

fn record(id: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        purchase_id: id.to_string(),
        fingerprint: "f".repeat(64),
        created_ms: 7,
    }
}

#[test]
fn shard_count_is_fixed_at_creation() {
    let tmp = tempfile::tempdir().unwrap();
    let first = DataDir::open_or_create(tmp.path(), 3).unwrap();
    assert_eq!(first.shards(), 3);
    let again = DataDir::open_or_create(tmp.path(), 8).unwrap();
    assert_eq!(
        again.shards(),
        3,
        "a restart with more cores keeps the layout"
    );
    assert!(again.open_shard(3).is_err());
}

#[test]
fn a_foreign_meta_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(META_FILE), b"not json").unwrap();
    let err = DataDir::open_or_create(tmp.path(), 2).unwrap_err();
    assert!(err.to_string().contains("unreadable meta file"), "{err}");
}

#[test]
fn shard_for_is_stable_and_spreads() {
    // Pinned values: data on disk depends on them.
    assert_eq!(shard_for("alice", "k1", 1), 0);
    let a = shard_for("alice", "k1", 16);
    assert_eq!(a, shard_for("alice", "k1", 16));
    assert_ne!(
        shard_for("ab", "c", 1 << 20),
        shard_for("a", "bc", 1 << 20),
        "the separator keeps customer and key apart"
    );
    let mut seen = [0u32; 4];
    for i in 0..4000 {
        seen[shard_for("c", &format!("key-{i}"), 4) as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n > 800), "{seen:?}");
}

#[test]
fn records_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let dir = DataDir::open_or_create(tmp.path(), 2).unwrap();
        let shard = dir.open_shard(1).unwrap();
        let mut b = Batch::default();
        b.put_idempotency("alice", "k", &record("pur_a")).unwrap();
        b.put_purchase("pur_a", b"intent", true);
        b.append_journal("pur_a", 0, b"intent");
        b.append_journal("pur_a", 1, b"authorized");
        shard.write(b).unwrap();
        shard.sync().unwrap();
    }
    let dir = DataDir::open_or_create(tmp.path(), 2).unwrap();
    let shard = dir.open_shard(1).unwrap();
    assert_eq!(
        shard.idempotency("alice", "k").unwrap(),
        Some(record("pur_a"))
    );
    assert_eq!(shard.idempotency("bob", "k").unwrap(), None);
    assert_eq!(
        shard.purchase("pur_a").unwrap().as_deref(),
        Some(&b"intent"[..])
    );
    assert_eq!(
        shard.journal("pur_a").unwrap(),
        vec![b"intent".to_vec(), b"authorized".to_vec()]
    );
    assert_eq!(shard.unfinished().unwrap(), vec!["pur_a".to_string()]);
}

#[test]
fn finishing_a_purchase_removes_it_from_the_unfinished_set() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = DataDir::open_or_create(tmp.path(), 1)
        .unwrap()
        .open_shard(0)
        .unwrap();
    let mut b = Batch::default();
    b.put_purchase("pur_a", b"1", true);
    b.put_purchase("pur_b", b"1", true);
    shard.write(b).unwrap();
    let mut b = Batch::default();
    b.put_purchase("pur_a", b"done", false);
    shard.write_synced(b).unwrap();
    assert_eq!(shard.unfinished().unwrap(), vec!["pur_b".to_string()]);
}

#[test]
fn expiry_removes_key_purchase_and_journal_and_frees_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = DataDir::open_or_create(tmp.path(), 1)
        .unwrap()
        .open_shard(0)
        .unwrap();
    let big = vec![b'x'; 4096];
    for i in 0..500u64 {
        let id = format!("pur_{i}");
        let key = format!("k{i}");
        let mut b = Batch::default();
        b.put_idempotency("alice", &key, &record(&id)).unwrap();
        b.put_purchase(&id, &big, false);
        b.append_journal(&id, 0, &big);
        // Half expire at 1000, half at 5000.
        b.expire_at(&id, "alice", &key, if i % 2 == 0 { 1000 } else { 5000 })
            .unwrap();
        shard.write(b).unwrap();
    }
    shard.compact().unwrap();
    let before = shard.live_bytes();
    assert_eq!(shard.expire(999, 1000).unwrap(), 0, "nothing is due yet");
    let mut removed = 0;
    loop {
        let n = shard.expire(1000, 64).unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 64, "slices are bounded");
        removed += n;
    }
    assert_eq!(removed, 250);
    shard.compact().unwrap();
    assert!(!shard.holds("alice", "k0", "pur_0").unwrap());
    assert!(shard.holds("alice", "k1", "pur_1").unwrap());
    let after = shard.live_bytes();
    assert!(
        after < before * 7 / 10,
        "expired data leaves the disk: {before} -> {after} bytes"
    );
}

#[test]
fn a_forgotten_intent_frees_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open_or_create(tmp.path(), 1).unwrap();
    let shard = dir.open_shard(0).unwrap();
    let mut b = Batch::default();
    b.put_idempotency("alice", "k", &record("pur_a")).unwrap();
    b.put_purchase("pur_a", b"intent", true);
    b.append_journal("pur_a", 0, b"intent");
    shard.write(b).unwrap();
    assert_eq!(shard.unfinished().unwrap(), vec!["pur_a".to_string()]);

    let mut forget = Batch::default();
    forget.forget_intent("pur_a", "alice", "k");
    shard.write(forget).unwrap();
    assert!(shard.idempotency("alice", "k").unwrap().is_none());
    assert!(shard.purchase("pur_a").unwrap().is_none());
    assert!(shard.journal("pur_a").unwrap().is_empty());
    assert!(shard.unfinished().unwrap().is_empty());
}

/// A shard written to for a long time keeps its write-ahead log bounded: a family that
/// is written rarely (here `open`, as in the engine where it is written once per
/// purchase) must not keep every old log file alive. Before the families had their own
/// small write buffers and the shard a WAL cap, this shard kept every log file.
#[test]
fn the_write_ahead_log_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open_or_create(tmp.path(), 1).unwrap();
    let shard = dir.open_shard(0).unwrap();
    let record = vec![b'x'; 2048];
    // 150 MiB of purchase records, more than twice the WAL cap; one `open` entry early on.
    for i in 0..75_000u32 {
        let mut batch = Batch::default();
        batch.put_purchase(&format!("pur_{i:08}"), &record, i == 0);
        shard.write(batch).unwrap();
    }
    let wal: u64 = std::fs::read_dir(tmp.path().join("shard-000"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        wal <= 2 * SHARD_WAL_BYTES,
        "{wal} bytes of write-ahead log, cap {SHARD_WAL_BYTES}"
    );
}
