//! Shards: slice K of N of a range (`map --shard K/N`), and the self-describing file that holds
//! one slice's results until `powerpool merge` puts the slices back together.
//!
//! # The shard file, version 1
//!
//! A 128-byte header, every integer little-endian, then the payload: the slice's results in the
//! run's format (decimal lines; 16-byte `i128` records; or, for `sum`, the slice's exact sum as a
//! 32-byte two's-complement integer).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PPSHARD` and a zero byte |
//! | 8 | 4 | version, 1 |
//! | 12 | 1 | format: 0 `lines`, 1 `bin`, 2 `sum` |
//! | 13 | 3 | zero |
//! | 16 | 8 | the whole range's start (`i64`) |
//! | 24 | 8 | the whole range's end (`i64`) |
//! | 32 | 8 | K, this shard's index (0-based) |
//! | 40 | 8 | N, the number of shards |
//! | 48 | 8 | inputs in this shard |
//! | 56 | 8 | payload length in bytes |
//! | 64 | 8 | XXH3-64 of the payload |
//! | 72 | 1 | task name length, at most 55 |
//! | 73 | 55 | task name (UTF-8), zero-padded |
//!
//! Slice K of a range of L inputs is offsets `floor(L·K/N) .. floor(L·(K+1)/N)`: every input in
//! exactly one shard, sizes differing by at most one, the same on every machine. The length and
//! checksum are written last (the file is seekable: `--shard` needs `--output`), and the file
//! appears under its name only when complete: it is fsynced, renamed into place, and then its
//! directory is fsynced too ([`sync_parent_dir`]), so a shard that a cluster job reported done
//! survives a crash of the node.

use powerpool_shared::Format;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// The header's size; the payload starts here.
pub const HEADER_LEN: usize = 128;
const MAGIC: &[u8; 8] = b"PPSHARD\0";
const VERSION: u32 = 1;
/// The longest task name a header holds.
pub const MAX_TASK_LEN: usize = 55;

/// `--shard K/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Offsets `first..end` of this shard in a range of `len` inputs.
    pub fn slice(&self, len: u128) -> (u128, u128) {
        let at = |k: u64| len * u128::from(k) / u128::from(self.count);
        (at(self.index), at(self.index + 1))
    }
}

/// Parses `K/N` with 0 <= K < N, N at most 2^32.
///
/// ```
/// use powerpool::shard::{parse_shard, Shard};
/// assert_eq!(parse_shard("3/8"), Ok(Shard { index: 3, count: 8 }));
/// assert!(parse_shard("8/8").is_err() && parse_shard("1/0").is_err());
/// ```
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let bad = || format!("'{text}' is not K/N (for example 0/4: the first of four shards)");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(k) || !digits(n) {
        return Err(bad());
    }
    let (index, count): (u64, u64) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if count == 0 || count > 1 << 32 {
        return Err(format!("'{text}': N must be from 1 to 4294967296"));
    }
    if index >= count {
        return Err(format!("'{text}': K must be below N (shards are numbered 0 to N-1)"));
    }
    Ok(Shard { index, count })
}

/// Everything a shard header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    pub range: (i64, i64),
    pub shard: Shard,
    pub items: u64,
    pub payload_len: u64,
    pub checksum: u64,
    pub task: String,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12] = format_code(self.format);
        h[16..24].copy_from_slice(&self.range.0.to_le_bytes());
        h[24..32].copy_from_slice(&self.range.1.to_le_bytes());
        h[32..40].copy_from_slice(&self.shard.index.to_le_bytes());
        h[40..48].copy_from_slice(&self.shard.count.to_le_bytes());
        h[48..56].copy_from_slice(&self.items.to_le_bytes());
        h[56..64].copy_from_slice(&self.payload_len.to_le_bytes());
        h[64..72].copy_from_slice(&self.checksum.to_le_bytes());
        let task = self.task.as_bytes();
        let n = task.len().min(MAX_TASK_LEN);
        h[72] = n as u8;
        h[73..73 + n].copy_from_slice(&task[..n]);
        h
    }

    /// Reads a header, or says why these bytes are not one.
    pub fn decode(h: &[u8]) -> Result<Header, String> {
        if h.len() < HEADER_LEN {
            return Err("too short for a shard header".into());
        }
        if &h[0..8] != MAGIC {
            return Err("not a powerpool shard file".into());
        }
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let i64_at = |i: usize| i64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("shard format version {version}, this powerpool reads {VERSION}"));
        }
        let format = match h[12] {
            0 => Format::Lines,
            1 => Format::Bin,
            2 => Format::Sum,
            other => return Err(format!("unknown format code {other}")),
        };
        let (index, count) = (u64_at(32), u64_at(40));
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count} is not a valid K/N"));
        }
        let n = usize::from(h[72]);
        if n > MAX_TASK_LEN {
            return Err("corrupt task name".into());
        }
        let task = std::str::from_utf8(&h[73..73 + n]).map_err(|_| "corrupt task name")?;
        Ok(Header {
            format,
            range: (i64_at(16), i64_at(24)),
            shard: Shard { index, count },
            items: u64_at(48),
            payload_len: u64_at(56),
            checksum: u64_at(64),
            task: task.to_owned(),
        })
    }
}

fn format_code(format: Format) -> u8 {
    match format {
        Format::Lines => 0,
        Format::Bin => 1,
        Format::Sum => 2,
    }
}

/// Writes a shard file: the header first (length and checksum zero), the payload through a
/// running checksum, then the finished header over the first one.
pub struct ShardWriter {
    file: io::BufWriter<File>,
    header: Header,
    hasher: Xxh3,
    len: u64,
}

impl ShardWriter {
    /// Starts a shard file in `file`, which must be a regular file: its header is completed
    /// last, over the first one.
    pub fn new(file: File, header: Header) -> io::Result<ShardWriter> {
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shard file must be a regular file (its header is completed last)",
            ));
        }
        let mut file = io::BufWriter::with_capacity(256 << 10, file);
        file.write_all(&header.encode())?;
        Ok(ShardWriter { file, header, hasher: Xxh3::new(), len: 0 })
    }

    /// Completes the header; the file is then whole.
    pub fn finish(&mut self) -> io::Result<()> {
        self.header.payload_len = self.len;
        self.header.checksum = self.hasher.digest();
        self.file.flush()?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&self.header.encode())?;
        file.sync_all()
    }
}

/// Makes the rename of a finished shard file durable: fsyncs the directory that holds `path`
/// (the file's own data was fsynced by [`ShardWriter::finish`] before the rename). A filesystem
/// that cannot sync a directory (`EINVAL`) is taken at its word.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match File::open(dir)?.sync_all() {
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => Ok(()),
        synced => synced,
    }
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter").field("header", &self.header).field("len", &self.len).finish()
    }
}

impl Write for ShardWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_tile_the_range_evenly() {
        for len in [0u128, 1, 7, 100, 1 << 64] {
            for count in [1u64, 2, 3, 7, 200] {
                let mut next = 0;
                for index in 0..count {
                    let (a, b) = Shard { index, count }.slice(len);
                    assert_eq!(a, next);
                    assert!(b - a <= len / u128::from(count) + 1);
                    next = b;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn headers_round_trip_and_refuse_garbage() {
        let h = Header {
            format: Format::Bin,
            range: (-5, i64::MAX),
            shard: Shard { index: 2, count: 3 },
            items: 42,
            payload_len: 672,
            checksum: 0xdead_beef,
            task: "square".into(),
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h.clone()));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(Header::decode(&bad).is_err());
        assert!(Header::decode(&h.encode()[..100]).is_err());
        let mut bad = h.encode();
        bad[40..48].copy_from_slice(&2u64.to_le_bytes());
        assert!(Header::decode(&bad).is_err(), "K must be below N");
    }

    #[test]
    fn the_directory_of_a_shard_is_synced_wherever_it_is() {
        let dir = std::env::temp_dir().join(format!("powerpool-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        sync_parent_dir(&dir.join("shard-0.bin")).expect("an absolute path");
        sync_parent_dir(Path::new("shard-0.bin")).expect("a bare name: the current directory");
        assert!(sync_parent_dir(&dir.join("missing/shard-0.bin")).is_err());
        std::fs::remove_dir(&dir).expect("remove the temp dir");
    }

    #[test]
    fn shard_specs_parse_strictly() {
        assert_eq!(parse_shard("0/1"), Ok(Shard { index: 0, count: 1 }));
        for bad in ["", "1", "/2", "1/", "-1/2", "1/2/3", "a/b", "2/2", "0/0", " 0/2"] {
            assert!(parse_shard(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
