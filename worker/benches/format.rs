//! Output-formatter micro-benchmarks: one 65,536-item chunk of `square` formatted as decimal
//! lines, as 16-byte binary records and as a 256-bit sum, into a reused buffer, as a worker
//! does it. Items per second is the figure to watch.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use powerpool_shared::Format;
use powerpool_worker::{ChunkOutput, Registry};
use std::hint::black_box;

fn formats(c: &mut Criterion) {
    let registry = Registry::builtin();
    let square = registry.get("square").expect("built in");
    let mut group = c.benchmark_group("square_chunk_65536");
    group.throughput(Throughput::Elements(65_536));
    let mut out = ChunkOutput::default();
    for (name, format) in [("lines", Format::Lines), ("bin", Format::Bin), ("sum", Format::Sum)] {
        // Large inputs, so lines are long (up to 39 digits), as at the top of the i64 range.
        let start = black_box(3_000_000_000_000_000_000i64);
        group.bench_function(name, |b| {
            b.iter(|| {
                square.run(start, start + 65_536, format, &mut out);
                black_box(out.bytes().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, formats);
criterion_main!(benches);
