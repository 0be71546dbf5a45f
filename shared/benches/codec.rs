//! Codec micro-benchmarks: a chunk's result frame encoded and decoded (the hot path, which moves
//! output bytes without copying them into a message), and a small control message.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use powerpool_shared::codec::{self, Incoming};
use powerpool_shared::{FromWorker, RunChunk, ToWorker};
use std::hint::black_box;

fn done_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("done_frame");
    for items in [1_024u64, 65_536] {
        let payload = vec![7u8; items as usize * 16];
        group.throughput(Throughput::Bytes(payload.len() as u64));
        let mut buf = BytesMut::with_capacity(payload.len() + 64);
        group.bench_with_input(BenchmarkId::new("encode", items), &payload, |b, p| {
            b.iter(|| {
                buf.clear();
                codec::write_done_frame(black_box(3), items, p, &mut buf).expect("encodes");
            })
        });
        buf.clear();
        codec::write_done_frame(3, items, &payload, &mut buf).expect("encodes");
        let body = buf.split_off(4);
        group.bench_with_input(BenchmarkId::new("decode", items), &body, |b, body| {
            b.iter(|| match codec::decode_from_worker(body.clone()).expect("decodes") {
                Incoming::Done { payload, .. } => black_box(payload.len()),
                Incoming::Other(_) => unreachable!(),
            })
        });
    }
    group.finish();
}

fn control_messages(c: &mut Criterion) {
    let run = ToWorker::Run(RunChunk { chunk: 9, start: -5, end: 65_531 });
    let mut buf = BytesMut::with_capacity(64);
    c.bench_function("run_chunk/encode", |b| {
        b.iter(|| {
            buf.clear();
            codec::write_frame(black_box(&run), &mut buf).expect("encodes");
        })
    });
    buf.clear();
    codec::write_frame(&run, &mut buf).expect("encodes");
    let body = buf.split_off(4);
    c.bench_function("run_chunk/decode", |b| {
        b.iter(|| codec::decode::<ToWorker>(black_box(&body)).expect("decodes"))
    });
    let ready = FromWorker::Ready;
    c.bench_function("ready/encode", |b| {
        b.iter(|| {
            buf.clear();
            codec::write_frame(black_box(&ready), &mut buf).expect("encodes");
        })
    });
}

criterion_group!(benches, done_frames, control_messages);
criterion_main!(benches);
