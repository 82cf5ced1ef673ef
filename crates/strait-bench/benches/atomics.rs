//! What an atomic read-modify-write costs on this machine beside the plain operation: the
//! `lock`-prefixed instructions that `scripts/callgrind.sh` counts with `STRAIT_CG_LOCKS=1`
//! (an `Arc` clone and drop, a counter's increment, a waker's reference count). Each is a
//! full barrier, uncontended here: what a request pays per instruction, not per contention.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};

fn atomics(c: &mut Criterion) {
    let mut group = c.benchmark_group("atomic_rmw");
    let counter = AtomicU64::new(0);
    group.bench_function("plain_add", |b| {
        let mut value = 0u64;
        b.iter(|| value = black_box(value.wrapping_add(black_box(1))));
    });
    group.bench_function("relaxed_load_store", |b| {
        // What a counter with one writer could do instead: no read-modify-write.
        b.iter(|| {
            let next = counter.load(Ordering::Relaxed).wrapping_add(black_box(1));
            counter.store(next, Ordering::Relaxed);
        });
    });
    group.bench_function("relaxed_fetch_add", |b| {
        b.iter(|| counter.fetch_add(black_box(1), Ordering::Relaxed));
    });
    let shared = Arc::new(0u64);
    group.bench_function("arc_clone_drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(&shared))));
    });
    group.finish();
}

criterion_group!(benches, atomics);
criterion_main!(benches);
