//! One scheduling pass in the hard cases (issue 19): empty, half-busy
//! (running jobs with end times, so reservations and backfill work) and
//! full clusters of 1k and 10k nodes, with 10k and 100k waiting jobs of the
//! mix in `matrix.rs` (1/2/4/8-GPU jobs and 2–16-node gangs). Targets:
//! under 100 ms per pass at 1k nodes, under 1 s at 10k.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kiln_sched::schedule;

mod matrix;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pass");
    g.sample_size(10);
    for case in matrix::cases() {
        g.bench_with_input(BenchmarkId::from_parameter(&case.name), &case, |b, case| {
            b.iter(|| {
                schedule(
                    black_box(&case.nodes),
                    black_box(&case.running),
                    black_box(&case.waiting),
                    10,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
