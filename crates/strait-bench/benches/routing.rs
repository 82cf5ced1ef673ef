//! Route lookup at 10, 1,000 and 100,000 proxies, path normalisation and target resolution.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use strait::routing::{BackendUrl, ProxyPath, RouteTable, normalize_path, target_uri};

fn table(size: usize) -> RouteTable<usize> {
    let mut table = RouteTable::default();
    for i in 0..size {
        let path = match i % 3 {
            0 => format!("/svc{i}/*"),
            1 => format!("/team{}/svc{i}/*", i % 50),
            _ => format!("/exact/svc{i}"),
        };
        let parsed = ProxyPath::parse(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        table
            .insert(&parsed, i)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    table
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for size in [10usize, 1_000, 100_000] {
        let table = table(size);
        // The last nested wildcard proxy (i % 3 == 1) in this table.
        let i = (0..size).rev().find(|i| i % 3 == 1).unwrap_or(1);
        let hit = format!("/team{}/svc{i}/orders/42", i % 50);
        assert!(table.lookup(&hit).is_some(), "{hit} must match");
        group.bench_with_input(BenchmarkId::new("hit", size), &hit, |b, path| {
            b.iter(|| black_box(table.lookup(black_box(path)).map(|m| m.remaining.len())))
        });
        group.bench_with_input(
            BenchmarkId::new("miss", size),
            "/nothing/here/at/all",
            |b, path| b.iter(|| black_box(table.lookup(black_box(path)).is_some())),
        );
    }
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let backend =
        BackendUrl::parse("http://chat-service:9090/websocket").unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("normalize/clean", |b| {
        b.iter(|| black_box(normalize_path(black_box("/chat/room/123/messages")).is_ok()))
    });
    c.bench_function("normalize/dot_segments", |b| {
        b.iter(|| black_box(normalize_path(black_box("/public/%2e%2e/admin/./users")).is_ok()))
    });
    c.bench_function("target_uri/websocket", |b| {
        b.iter(|| {
            black_box(target_uri(
                &backend,
                black_box("/room/123"),
                Some("token=a%20b&x"),
                true,
            ))
        })
    });
}

criterion_group!(benches, lookup, resolve);
criterion_main!(benches);
