//! B9 with rayon, 2 threads: the input in chunks of 64K, each mapped in parallel, printed in
//! order.
use rayon::prelude::*;
use std::io::Write;

fn main() {
    let (n, work) = powerpool_bench_anchors::args();
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().expect("a pool");
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut input = powerpool_bench_anchors::inputs(n).peekable();
    while input.peek().is_some() {
        let chunk: Vec<String> = input.by_ref().take(1 << 16).collect();
        let results: Vec<(u32, u64)> =
            chunk.par_iter().map(|s| powerpool_bench_anchors::compute(s, work)).collect();
        for (words, hash) in results {
            let _ = writeln!(out, "{words} {hash}");
        }
    }
    let _ = out.flush();
}
