//! Writing one captured stream of a job: from memory or from its spill file (removed once
//! read), with `--tag`'s prefix at the start of every line.

use super::output::Settings;
use powerpool_shared::jobs::Captured;
use std::fs::File;
use std::io::{self, Read, Write};

/// Copies one captured stream to `out`, tagging each line, and removes its spill file.
pub fn emit(s: &Settings, c: &Captured, tag: Option<&[u8]>, out: &mut dyn Write) -> io::Result<()> {
    let mut tagger = Tagger { tag, at_line_start: true };
    match c {
        Captured::Inline(bytes) => tagger.write(out, bytes),
        Captured::Spilled { name, .. } => {
            if !powerpool_shared::jobs::is_spill_name(name) {
                return Err(io::Error::other(format!("a worker named a bad spill file {name:?}")));
            }
            let path = s.spill_dir.join(name);
            let mut file = File::open(&path)?;
            let _ = std::fs::remove_file(&path);
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                tagger.write(out, &buf[..n])?;
            }
        }
    }
}

/// Writes bytes with `tag` at the start of every line (a last line without a newline too).
struct Tagger<'a> {
    tag: Option<&'a [u8]>,
    at_line_start: bool,
}

impl Tagger<'_> {
    fn write(&mut self, out: &mut dyn Write, mut bytes: &[u8]) -> io::Result<()> {
        let Some(tag) = self.tag else { return out.write_all(bytes) };
        while !bytes.is_empty() {
            if self.at_line_start {
                out.write_all(tag)?;
            }
            let line = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
            out.write_all(&bytes[..line])?;
            self.at_line_start = bytes[line - 1] == b'\n';
            bytes = &bytes[line..];
        }
        Ok(())
    }
}
