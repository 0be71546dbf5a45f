//! `powerpool merge`: shard files back into one run's output.
//!
//! Two passes, so that nothing is written unless every shard is sound: the first reads every
//! header, checksums every payload and checks that it holds what its header says (a `lines`
//! payload: one canonical decimal result per input, each ending in a newline), so a missing,
//! duplicated, truncated, corrupt or foreign shard is a one-line error before any output; the
//! second streams the payloads in shard order, converting formats on the way, in buffers of
//! fixed size. Only regular files are read (a FIFO would block the first pass, and could not be
//! read twice), and a shard that changed between the passes stops the merge.

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
    if let Some(out) = &args.output {
        crate::plan::check_writable("--output", out)?;
        if let Some(same) = args.files.iter().find(|f| {
            let id = crate::outfile::identity(f);
            id.is_some() && id == crate::outfile::identity(out)
        }) {
            return Err(Error::Usage(format!(
                "--output '{}' is the shard '{}' being merged: write the merge elsewhere",
                out.display(),
                same.display()
            )));
        }
    }
    // Only a regular file is looked into: opening a FIFO would wait for a writer forever.
    let regular = |f: &std::path::PathBuf| std::fs::metadata(f).is_ok_and(|m| m.is_file());
    if args.files.first().is_some_and(|f| regular(f) && crate::shard_run::is_run_shard(f)) {
        return merge_runs(&args);
    }
    let shards = check(&args.files)?;
    let from = shards[0].header.format;
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
            let cannot = |e| crate::outfile::open_error("--output", path, e);
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

/// A shard as the first pass saw it.
struct Shard {
    path: PathBuf,
    header: Header,
    /// Device, inode, length and modification time, to notice a change before the second pass.
    stamp: Stamp,
}

type Stamp = (u64, u64, u64, Option<std::time::SystemTime>);

/// Opens a shard for reading: a regular file only, opened without blocking (a FIFO would
/// otherwise wait for a writer forever) and checked on the open descriptor itself.
fn open_shard(path: &Path) -> Result<(File, Stamp), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| bad(path, e))?;
    let meta = file.metadata().map_err(|e| bad(path, e))?;
    if meta.is_dir() {
        return Err(bad(path, "is a directory, not a shard file"));
    }
    if !meta.is_file() {
        return Err(bad(path, "is not a regular file (a FIFO or a device), not a shard file"));
    }
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Ok((file, (dev, ino, meta.len(), meta.modified().ok())))
}

/// Reads and checks every shard; returns them in shard order.
fn check(files: &[PathBuf]) -> Result<Vec<Shard>, Error> {
    let mut shards: Vec<Shard> = Vec::with_capacity(files.len());
    for path in files {
        let (mut file, stamp) = open_shard(path)?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).map_err(|_| bad(path, "too short for a shard header"))?;
        let header = Header::decode(&head).map_err(|e| bad(path, e))?;
        let size = stamp.2;
        let expected = HEADER_LEN as u64 + header.payload_len;
        if size != expected {
            return Err(bad(
                path,
                format!("truncated or padded: {size} bytes, expected {expected}"),
            ));
        }
        let mut hasher = Xxh3::new();
        let mut lines = (header.format == Format::Lines).then(LineCheck::default);
        let mut reader = BufReader::with_capacity(BUF, file);
        loop {
            let buf = reader.fill_buf().map_err(|e| bad(path, e))?;
            if buf.is_empty() {
                break;
            }
            hasher.update(buf);
            if let Some(lines) = &mut lines {
                lines.feed(buf).map_err(|e| bad(path, e))?;
            }
            let n = buf.len();
            reader.consume(n);
        }
        if hasher.digest() != header.checksum {
            return Err(bad(path, "corrupt: the payload does not match its checksum"));
        }
        if let Some(lines) = lines {
            lines.finish(header.items).map_err(|e| bad(path, e))?;
        }
        let payload_ok = match header.format {
            Format::Bin => header.payload_len == header.items * 16,
            Format::Sum => header.payload_len == 32,
            Format::Lines => header.payload_len >= header.items * 2,
        };
        if !payload_ok {
            return Err(bad(path, "the payload does not fit the header's item count"));
        }
        if let Some(Shard { path: first, header: h0, .. }) = shards.first() {
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
        shards.push(Shard { path: path.clone(), header, stamp });
    }
    shards.sort_by_key(|s| s.header.shard.index);
    for pair in shards.windows(2) {
        if pair[0].header.shard.index == pair[1].header.shard.index {
            return Err(Error::Merge(format!(
                "shard {} given twice: {} and {}",
                pair[0].header.shard.index,
                pair[0].path.display(),
                pair[1].path.display()
            )));
        }
    }
    let count = shards[0].header.shard.count;
    if shards.len() as u64 != count {
        let have: Vec<u64> = shards.iter().map(|s| s.header.shard.index).collect();
        let missing: Vec<String> =
            (0..count).filter(|k| !have.contains(k)).take(10).map(|k| k.to_string()).collect();
        return Err(Error::Merge(format!(
            "{} of {count} shards given; missing: {}{}",
            shards.len(),
            missing.join(", "),
            if count - shards.len() as u64 > 10 { ", ..." } else { "" }
        )));
    }
    for Shard { path, header: h, .. } in &shards {
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
fn emit(shards: &[Shard], from: Format, to: Format, out: &mut dyn Write) -> Result<(), Error> {
    let mut sum = I256::ZERO;
    for Shard { path, stamp, .. } in shards {
        let (mut file, now) = open_shard(path)?;
        if now != *stamp {
            return Err(bad(path, "changed while the merge was reading it"));
        }
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

/// The first pass's check of a `lines` payload, fed piece by piece: one canonical decimal
/// `i128` per line (no sign but `-`, no leading zero), every line ending in a newline.
#[derive(Debug, Default)]
struct LineCheck {
    lines: u64,
    /// The line so far, when it started in an earlier piece.
    partial: Vec<u8>,
}

/// The longest line a result can be: a sign and 39 digits.
const MAX_LINE: usize = 40;

impl LineCheck {
    fn feed(&mut self, mut buf: &[u8]) -> Result<(), String> {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = &buf[..end];
            if self.partial.is_empty() {
                self.check(line)?;
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.check(&joined)?;
            }
            buf = &buf[end + 1..];
        }
        if self.partial.len() + buf.len() > MAX_LINE {
            return Err(format!("line {} of the payload is not a result", self.lines + 1));
        }
        self.partial.extend_from_slice(buf);
        Ok(())
    }

    fn check(&mut self, line: &[u8]) -> Result<(), String> {
        self.lines += 1;
        if !is_result(line) {
            let shown: String = String::from_utf8_lossy(line).chars().take(MAX_LINE).collect();
            return Err(format!("line {} of the payload is not a result: {shown:?}", self.lines));
        }
        Ok(())
    }

    fn finish(self, items: u64) -> Result<(), String> {
        if !self.partial.is_empty() {
            return Err("the payload's last line has no newline".into());
        }
        if self.lines != items {
            return Err(format!("holds {} lines; its header says {items} inputs", self.lines));
        }
        Ok(())
    }
}

/// Whether `line` is a result as workers write it: an `i128` in canonical decimal.
fn is_result(line: &[u8]) -> bool {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || line == b"0");
    // Up to 38 digits always fits an i128; longer ones are parsed to be sure.
    canonical
        && (digits.len() <= 38
            || std::str::from_utf8(line).is_ok_and(|t| t.parse::<i128>().is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_checks_take_canonical_results_only() {
        for good in [
            "0",
            "-1",
            "170141183460469231731687303715884105727",
            "-170141183460469231731687303715884105728",
        ] {
            assert!(is_result(good.as_bytes()), "{good}");
        }
        for bad in
            ["", "-", "+1", "01", "-0", "1 ", "hello", "170141183460469231731687303715884105728"]
        {
            assert!(!is_result(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn line_checks_count_lines_across_pieces() {
        let mut check = LineCheck::default();
        for piece in [&b"1"[..], b"0\n-", b"4\n", b"9\n"] {
            check.feed(piece).expect("valid");
        }
        assert!(check.finish(3).is_ok());
        let mut short = LineCheck::default();
        short.feed(b"1\n2").expect("valid so far");
        assert!(short.finish(2).is_err(), "no final newline");
        let mut many = LineCheck::default();
        many.feed(b"1\n2\n3\n").expect("valid");
        assert!(many.finish(2).is_err(), "one line too many");
    }
}
