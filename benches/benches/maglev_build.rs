//! Table build time: `lb_hashing::maglev::build` vs the `maglev` crate
//! (0.2.1), same backends, same table sizes, equal weights.
//!
//! Run: `cargo bench -p lb-benches --bench maglev_build`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_benches::{baseline, baseline_feasible, identities, ours, BACKEND_COUNTS, TABLE_SIZES};

fn build_time(c: &mut Criterion) {
    for m in TABLE_SIZES {
        let mut group = c.benchmark_group(format!("maglev_build/m={m}"));
        // Modest sampling: the whole grid finishes in a few minutes on 2 cores.
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for n in BACKEND_COUNTS {
            let ids = identities(n);
            group.bench_with_input(BenchmarkId::new("lb_hashing", n), &ids, |b, ids| {
                b.iter(|| ours(black_box(ids), m))
            });
            if baseline_feasible(n, m) {
                group.bench_with_input(BenchmarkId::new("maglev_0.2.1", n), &ids, |b, ids| {
                    b.iter(|| baseline(black_box(ids), m))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, build_time);
criterion_main!(benches);
