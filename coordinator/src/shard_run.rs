//! `run --shard K/N`'s shard file: a kind of its own beside `map`'s ([`crate::shard`]), which
//! `powerpool merge` recognises by its magic and joins in order.
//!
//! # The run shard file, version 1
//!
//! A 128-byte header, every integer little-endian, then the payload: the shard's jobs' stdout,
//! in job order, exactly as `run` would have printed it.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PPRUNSH` and a zero byte |
//! | 8 | 4 | version, 1 |
//! | 12 | 4 | zero |
//! | 16 | 8 | K, this shard's index (0-based) |
//! | 24 | 8 | N, the number of shards |
//! | 32 | 8 | jobs in the whole input |
//! | 40 | 8 | the index (from 0) of this shard's first job |
//! | 48 | 8 | jobs in this shard |
//! | 56 | 8 | payload length in bytes |
//! | 64 | 8 | XXH3-64 of the payload |
//! | 72 | 8 | XXH3-64 of the command template: shards of different commands never merge |
//! | 80 | 1 | length of the command text kept, at most 47 |
//! | 81 | 47 | the command template's first bytes (UTF-8), zero-padded, for messages |
//!
//! Slice K of J jobs is jobs `floor(J·K/N) .. floor(J·(K+1)/N)`, contiguous by line number.
//! Only a run whose every job succeeded writes its shard (complete, fsynced, renamed into place,
//! its directory fsynced), so a merged output is always the whole run's.

use crate::shard::Shard;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

pub const HEADER_LEN: usize = 128;
pub const MAGIC: &[u8; 8] = b"PPRUNSH\0";
const VERSION: u32 = 1;
const MAX_TEXT: usize = 47;

/// Everything a run shard's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunHeader {
    pub shard: Shard,
    pub total_jobs: u64,
    pub first_job: u64,
    pub jobs: u64,
    pub payload_len: u64,
    pub checksum: u64,
    pub command_hash: u64,
    pub command: String,
}

impl RunHeader {
    /// The header of shard `shard` of `total_jobs` jobs running `command` (length and checksum
    /// to be filled in).
    pub fn new(shard: Shard, total_jobs: u64, command: &str) -> RunHeader {
        let (a, b) = shard.slice(u128::from(total_jobs));
        let mut text = command.to_owned();
        if text.len() > MAX_TEXT {
            let cut = (0..=MAX_TEXT).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text.truncate(cut);
        }
        RunHeader {
            shard,
            total_jobs,
            first_job: a as u64,
            jobs: (b - a) as u64,
            payload_len: 0,
            checksum: 0,
            command_hash: xxh3_64(command.as_bytes()),
            command: text,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let fields = [
            self.shard.index,
            self.shard.count,
            self.total_jobs,
            self.first_job,
            self.jobs,
            self.payload_len,
            self.checksum,
            self.command_hash,
        ];
        for (i, v) in fields.iter().enumerate() {
            h[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let text = self.command.as_bytes();
        let n = text.len().min(MAX_TEXT);
        h[80] = n as u8;
        h[81..81 + n].copy_from_slice(&text[..n]);
        h
    }

    pub fn decode(h: &[u8]) -> Result<RunHeader, String> {
        if h.len() < HEADER_LEN || &h[0..8] != MAGIC {
            return Err("not a powerpool run shard".into());
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("run shard version {version}, this powerpool reads {VERSION}"));
        }
        let at = |i: usize| u64::from_le_bytes(h[16 + 8 * i..24 + 8 * i].try_into().expect("8"));
        let shard = Shard { index: at(0), count: at(1) };
        if shard.count == 0 || shard.index >= shard.count {
            return Err(format!("shard {}/{} is not a valid K/N", shard.index, shard.count));
        }
        let n = usize::from(h[80]);
        let command = std::str::from_utf8(h.get(81..81 + n).ok_or("corrupt command text")?)
            .map_err(|_| "corrupt command text")?;
        let header = RunHeader {
            shard,
            total_jobs: at(2),
            first_job: at(3),
            jobs: at(4),
            payload_len: at(5),
            checksum: at(6),
            command_hash: at(7),
            command: command.to_owned(),
        };
        let (a, b) = shard.slice(u128::from(header.total_jobs));
        if (header.first_job as u128, (header.first_job + header.jobs) as u128) != (a, b) {
            return Err("its jobs are not slice K of N of the input".into());
        }
        Ok(header)
    }
}

/// Writes a run shard: the header, the payload through a running checksum, then the header
/// again with the payload's length and checksum.
pub struct RunShardWriter {
    file: io::BufWriter<File>,
    header: RunHeader,
    hasher: Xxh3,
    len: u64,
}

impl std::fmt::Debug for RunShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunShardWriter").field("header", &self.header).finish()
    }
}

impl RunShardWriter {
    pub fn new(file: File, header: RunHeader) -> io::Result<RunShardWriter> {
        let mut file = io::BufWriter::with_capacity(256 << 10, file);
        file.write_all(&header.encode())?;
        Ok(RunShardWriter { file, header, hasher: Xxh3::new(), len: 0 })
    }

    /// Completes the header and syncs the file: it is then whole.
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

impl Write for RunShardWriter {
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

/// `merge` of run shards: every header read and every payload checksummed first (a missing,
/// duplicated, truncated, corrupt or foreign shard is refused before anything is written), then
/// the payloads copied in shard order to `out`.
pub fn merge(files: &[std::path::PathBuf], out: &mut dyn Write) -> Result<(), crate::Error> {
    use std::io::Read;
    let bad = |p: &std::path::Path, why: &dyn std::fmt::Display| {
        crate::Error::Merge(format!("{}: {why}", p.display()))
    };
    let mut shards: Vec<(std::path::PathBuf, RunHeader)> = Vec::new();
    for path in files {
        let mut file = File::open(path).map_err(|e| bad(path, &e))?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).map_err(|_| bad(path, &"too short for a shard header"))?;
        let h = RunHeader::decode(&head).map_err(|e| bad(path, &e))?;
        let size = file.metadata().map_err(|e| bad(path, &e))?.len();
        if size != HEADER_LEN as u64 + h.payload_len {
            return Err(bad(path, &format!("truncated or padded: {size} bytes")));
        }
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = file.read(&mut buf).map_err(|e| bad(path, &e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.digest() != h.checksum {
            return Err(bad(path, &"corrupt: the payload does not match its checksum"));
        }
        if let Some((first, h0)) = shards.first() {
            if (h0.command_hash, h0.total_jobs, h0.shard.count)
                != (h.command_hash, h.total_jobs, h.shard.count)
            {
                return Err(crate::Error::Merge(format!(
                    "{} and {} belong to different runs",
                    first.display(),
                    path.display()
                )));
            }
        }
        shards.push((path.clone(), h));
    }
    shards.sort_by_key(|(_, h)| h.shard.index);
    for pair in shards.windows(2) {
        if pair[0].1.shard.index == pair[1].1.shard.index {
            return Err(crate::Error::Merge(format!(
                "shard {} given twice",
                pair[0].1.shard.index
            )));
        }
    }
    let count = shards.first().map_or(0, |(_, h)| h.shard.count);
    if shards.len() as u64 != count {
        return Err(crate::Error::Merge(format!("{} of {count} run shards given", shards.len())));
    }
    for (path, _) in &shards {
        let mut file = File::open(path).map_err(|e| bad(path, &e))?;
        file.seek(SeekFrom::Start(HEADER_LEN as u64)).map_err(|e| bad(path, &e))?;
        io::copy(&mut file, out).map_err(crate::Error::Output)?;
    }
    Ok(())
}

/// Whether the file at `path` starts like a run shard.
pub fn is_run_shard(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_must_be_their_slice() {
        let mut h = RunHeader::new(
            Shard { index: 1, count: 3 },
            10,
            "echo {} and a long tail ...........................",
        );
        assert_eq!((h.first_job, h.jobs), (3, 3));
        assert!(h.command.len() <= MAX_TEXT);
        h.payload_len = 9;
        h.checksum = 7;
        assert_eq!(RunHeader::decode(&h.encode()), Ok(h.clone()));
        let mut bad = h.clone();
        bad.jobs = 4;
        assert!(RunHeader::decode(&bad.encode()).is_err());
        assert!(RunHeader::decode(&[0u8; 128]).is_err());
        let mut wrong_version = h.encode();
        wrong_version[8] = 2;
        assert!(RunHeader::decode(&wrong_version).unwrap_err().contains("version 2"));
    }
}
