//! B9 with procspawn's pool of 2, fed chunks of 1024 items (one job per item would be far
//! slower), results joined and printed in order.
use std::io::Write;

fn main() {
    procspawn::init();
    let (n, work) = powerpool_bench_anchors::args();
    let pool = procspawn::Pool::new(2).expect("a pool");
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut input = powerpool_bench_anchors::inputs(n).peekable();
    let mut pending = std::collections::VecDeque::new();
    loop {
        while pending.len() < 8 && input.peek().is_some() {
            let chunk: Vec<String> = input.by_ref().take(1024).collect();
            let us = work.as_micros() as u64;
            pending.push_back(pool.spawn((chunk, us), |(chunk, us): (Vec<String>, u64)| {
                let work = std::time::Duration::from_micros(us);
                chunk.iter().map(|s| powerpool_bench_anchors::compute(s, work)).collect::<Vec<_>>()
            }));
        }
        let Some(handle) = pending.pop_front() else { break };
        for (words, hash) in handle.join().expect("a result") {
            let _ = writeln!(out, "{words} {hash}");
        }
    }
    let _ = out.flush();
}
