//! Storage: what a purchase costs a shard. `put` is the intent batch (idempotency record,
//! purchase record, journal entry) written to the WAL without waiting for the disk; `get`
//! the idempotency lookup every purchase request starts with; `durable` compares one
//! fsync per write with one fsync shared by a group of 32 writes (group commit), per write.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

use bookbroker_storage::{Batch, DataDir, IdempotencyRecord, Shard};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// A purchase record about the size the engine stores.
const RECORD: &[u8] = &[b'r'; 900];

fn intent(shard: &Shard, i: u64) {
    let id = format!("pur_0000_{i:016x}");
    let key = format!("key-{i}");
    let mut b = Batch::default();
    let rec = IdempotencyRecord {
        purchase_id: id.clone(),
        fingerprint: "f".repeat(64),
        created_ms: i,
    };
    if b.put_idempotency("customer", &key, &rec).is_ok() {
        b.put_purchase(&id, RECORD, true);
        b.append_journal(&id, 0, b"{\"step\":\"quoting\"}");
        shard.write(b).expect("write");
    }
}

fn storage(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open_or_create(tmp.path(), 1).expect("data dir");
    let shard = dir.open_shard(0).expect("shard");
    let mut next = 0u64;
    c.bench_function("storage/put intent (WAL, no fsync)", |b| {
        b.iter(|| {
            next += 1;
            intent(&shard, next)
        })
    });
    let known = next.max(1);
    let mut i = 0u64;
    c.bench_function("storage/get idempotency record", |b| {
        b.iter(|| {
            i = i % known + 1;
            black_box(
                shard
                    .idempotency("customer", &format!("key-{i}"))
                    .expect("get"),
            )
        })
    });

    let mut g = c.benchmark_group("storage/durable write");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32));
    g.bench_function("fsync per write (32 writes)", |b| {
        b.iter_batched(
            || (),
            |()| {
                for _ in 0..32 {
                    next += 1;
                    intent(&shard, next);
                    shard.sync().expect("sync");
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("group commit (32 writes, one fsync)", |b| {
        b.iter_batched(
            || (),
            |()| {
                for _ in 0..32 {
                    next += 1;
                    intent(&shard, next);
                }
                shard.sync().expect("sync");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
