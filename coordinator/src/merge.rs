//! `powerpool merge`: shard files back into one run's output.
//!
//! Two passes, so that nothing is written unless every shard is sound: the first reads every
//! header and checksums every payload (a missing, duplicated, truncated, corrupt or foreign shard
//! is a one-line error before any output); the second streams the payloads in shard order,
//! converting formats on the way, in buffers of fixed size.

use crate::cli::{MergeArgs, OutputFormat};
use crate::errors::Error;
use crate::output::PendingFile;
use crate::plan::format_name;
use crate::shard::{Header, HEADER_LEN};
use powerpool_shared::{Format, I256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// Size of every read and write buffer.
const BUF: usize = 256 << 10;

/// Runs `merge`.
pub fn run(args: MergeArgs) -> Result<(), Error> {
    if args.files.first().is_some_and(|f| crate::shard_run::is_run_shard(f)) {
        return merge_runs(&args);
    }
    let shards = check(&args.files)?;
    let from = shards[0].1.format;
    let to = match args.format {
        None => from,
        Some(OutputFormat::Lines) => Format::Lines,
        Some(OutputFormat::Bin) => Format::Bin,
        Some(OutputFormat::Sum) => Format::Sum,
    };
    if from == Format::Sum && to != Format::Sum {
        return Err(Error::Usage(format!(
            "sum shards hold only sums: they merge into --format sum, not {}",
            format_name(to)
        )));
    }
    match &args.output {
        Some(path) => {
            let cannot =
                |e| Error::Usage(format!("cannot write --output '{}': {e}", path.display()));
            let (pending, file) = PendingFile::create(path).map_err(cannot)?;
            let mut out = io::BufWriter::with_capacity(BUF, file);
            emit(&shards, from, to, &mut out)?;
            out.flush().map_err(Error::Output)?;
            pending.commit().map_err(Error::Output)
        }
        None => {
            let mut out = io::BufWriter::with_capacity(BUF, io::stdout().lock());
            emit(&shards, from, to, &mut out)?;
            out.flush().map_err(Error::Output)
        }
    }
}

/// `run --shard` files: their outputs joined in shard order (no formats to convert).
fn merge_runs(args: &MergeArgs) -> Result<(), Error> {
    if args.format.is_some() {
        return Err(Error::Usage("run shards hold command output: --format does not apply".into()));
    }
    match &args.output {
        Some(path) => {
            let cannot =
                |e| Error::Usage(format!("cannot write --output '{}': {e}", path.display()));
            let (pending, file) = PendingFile::create(path).map_err(cannot)?;
            let mut out = io::BufWriter::with_capacity(BUF, file);
            crate::shard_run::merge(&args.files, &mut out)?;
            out.flush().map_err(Error::Output)?;
            pending.commit().map_err(Error::Output)
        }
        None => {
            let mut out = io::BufWriter::with_capacity(BUF, io::stdout().lock());
            crate::shard_run::merge(&args.files, &mut out)?;
            out.flush().map_err(Error::Output)
        }
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Merge(format!("{}: {why}", path.display()))
}

/// Reads and checks every shard; returns them in shard order.
fn check(files: &[PathBuf]) -> Result<Vec<(PathBuf, Header)>, Error> {
    let mut shards: Vec<(PathBuf, Header)> = Vec::with_capacity(files.len());
    for path in files {
        let mut file = File::open(path).map_err(|e| bad(path, e))?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).map_err(|_| bad(path, "too short for a shard header"))?;
        let header = Header::decode(&head).map_err(|e| bad(path, e))?;
        let size = file.metadata().map_err(|e| bad(path, e))?.len();
        let expected = HEADER_LEN as u64 + header.payload_len;
        if size != expected {
            return Err(bad(
                path,
                format!("truncated or padded: {size} bytes, expected {expected}"),
            ));
        }
        let mut hasher = Xxh3::new();
        let mut reader = BufReader::with_capacity(BUF, file);
        loop {
            let buf = reader.fill_buf().map_err(|e| bad(path, e))?;
            if buf.is_empty() {
                break;
            }
            hasher.update(buf);
            let n = buf.len();
            reader.consume(n);
        }
        if hasher.digest() != header.checksum {
            return Err(bad(path, "corrupt: the payload does not match its checksum"));
        }
        let payload_ok = match header.format {
            Format::Bin => header.payload_len == header.items * 16,
            Format::Sum => header.payload_len == 32,
            Format::Lines => header.payload_len >= header.items * 2,
        };
        if !payload_ok {
            return Err(bad(path, "the payload does not fit the header's item count"));
        }
        if let Some((first, h0)) = shards.first() {
            let same = h0.task == header.task
                && h0.range == header.range
                && h0.shard.count == header.shard.count
                && h0.format == header.format;
            if !same {
                return Err(Error::Merge(format!(
                    "{} and {} belong to different jobs ({} vs {})",
                    first.display(),
                    path.display(),
                    describe(h0),
                    describe(&header)
                )));
            }
        }
        shards.push((path.clone(), header));
    }
    shards.sort_by_key(|(_, h)| h.shard.index);
    for pair in shards.windows(2) {
        if pair[0].1.shard.index == pair[1].1.shard.index {
            return Err(Error::Merge(format!(
                "shard {} given twice: {} and {}",
                pair[0].1.shard.index,
                pair[0].0.display(),
                pair[1].0.display()
            )));
        }
    }
    let count = shards[0].1.shard.count;
    if shards.len() as u64 != count {
        let have: Vec<u64> = shards.iter().map(|(_, h)| h.shard.index).collect();
        let missing: Vec<String> =
            (0..count).filter(|k| !have.contains(k)).take(10).map(|k| k.to_string()).collect();
        return Err(Error::Merge(format!(
            "{} of {count} shards given; missing: {}{}",
            shards.len(),
            missing.join(", "),
            if count - shards.len() as u64 > 10 { ", ..." } else { "" }
        )));
    }
    for (path, h) in &shards {
        let len = crate::chunk::Chunks::new(h.range.0, h.range.1, 1).items();
        let (a, b) = h.shard.slice(len);
        if u128::from(h.items) != b - a {
            return Err(bad(path, format!("holds {} inputs; its slice has {}", h.items, b - a)));
        }
    }
    Ok(shards)
}

fn describe(h: &Header) -> String {
    format!(
        "task {} range {}..{} in {} shards, {}",
        h.task,
        h.range.0,
        h.range.1,
        h.shard.count,
        format_name(h.format)
    )
}

/// Streams every shard's payload in order, converted from `from` to `to`.
fn emit(
    shards: &[(PathBuf, Header)],
    from: Format,
    to: Format,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut sum = I256::ZERO;
    for (path, _) in shards {
        let mut file = File::open(path).map_err(|e| bad(path, e))?;
        let mut skip = [0u8; HEADER_LEN];
        file.read_exact(&mut skip).map_err(|e| bad(path, e))?;
        let mut reader = BufReader::with_capacity(BUF, file);
        let copied = match (from, to) {
            (a, b) if a == b && a != Format::Sum => io::copy(&mut reader, out).map(|_| ()),
            (Format::Sum, _) => {
                let mut part = [0u8; 32];
                reader.read_exact(&mut part).map(|()| {
                    sum.add(I256::from_le_bytes(&part).expect("32 bytes"));
                })
            }
            (Format::Bin, _) => bin_records(&mut reader, |v| convert(v, to, out, &mut sum)),
            (Format::Lines, _) => line_values(&mut reader, |v| convert(v, to, out, &mut sum)),
        };
        copied.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => bad(path, e),
            _ => Error::Output(e),
        })?;
    }
    if to == Format::Sum {
        writeln!(out, "{sum}").map_err(Error::Output)?;
    }
    Ok(())
}

fn convert(v: i128, to: Format, out: &mut dyn Write, sum: &mut I256) -> io::Result<()> {
    match to {
        Format::Lines => {
            let mut digits = itoa::Buffer::new();
            out.write_all(digits.format(v).as_bytes())?;
            out.write_all(b"\n")
        }
        Format::Bin => out.write_all(&v.to_le_bytes()),
        Format::Sum => {
            sum.add_i128(v);
            Ok(())
        }
    }
}

fn bin_records(
    reader: &mut impl Read,
    mut each: impl FnMut(i128) -> io::Result<()>,
) -> io::Result<()> {
    let mut record = [0u8; 16];
    loop {
        match reader.read_exact(&mut record) {
            Ok(()) => each(i128::from_le_bytes(record))?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn line_values(
    reader: &mut impl BufRead,
    mut each: impl FnMut(i128) -> io::Result<()>,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = std::str::from_utf8(line.strip_suffix(b"\n").unwrap_or(&line))
            .ok()
            .and_then(|t| t.parse::<i128>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a line is not a result"))?;
        each(text)?;
    }
}
