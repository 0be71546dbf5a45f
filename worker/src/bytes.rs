//! Byte tasks: a body in, one line of text out (`fetch --process`). A body arrives in pieces of
//! at most 1 MiB, so each task is a streaming state: `update` per piece, `finish` at the end;
//! no body is ever held whole in a worker.

use sha2::{Digest, Sha256};

/// A byte task as the worker loop sees it: a factory of per-body states.
pub trait ByteTask: Send + Sync {
    fn start(&self) -> Box<dyn ByteState>;
}

/// The running state of one body.
pub trait ByteState: Send {
    fn update(&mut self, piece: &[u8]);
    /// The result line (without a newline).
    fn finish(self: Box<Self>) -> String;
}

impl<F> ByteTask for F
where
    F: Fn() -> Box<dyn ByteState> + Send + Sync,
{
    fn start(&self) -> Box<dyn ByteState> {
        self()
    }
}

/// `sha256`: the body's SHA-256 digest in lowercase hex, as `sha256sum` prints it.
#[derive(Debug, Default)]
pub struct Sha256State(Sha256);

impl ByteState for Sha256State {
    fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    fn finish(self: Box<Self>) -> String {
        let digest = self.0.finalize();
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        hex
    }
}

/// `wc`: `lines words bytes`, as `wc` counts them in the C locale: lines are newlines, words
/// are maximal runs of bytes other than space, `\t`, `\n`, `\v`, `\f` and `\r`.
#[derive(Debug, Default)]
pub struct WcState {
    lines: u64,
    words: u64,
    bytes: u64,
    in_word: bool,
}

impl ByteState for WcState {
    fn update(&mut self, piece: &[u8]) {
        self.bytes += piece.len() as u64;
        for &b in piece {
            let space = matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
            self.lines += u64::from(b == b'\n');
            self.words += u64::from(!space && !self.in_word);
            self.in_word = !space;
        }
    }

    fn finish(self: Box<Self>) -> String {
        format!("{} {} {}", self.lines, self.words, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut state: Box<dyn ByteState>, pieces: &[&[u8]]) -> String {
        for p in pieces {
            state.update(p);
        }
        state.finish()
    }

    #[test]
    fn sha256_matches_known_digests_across_pieces() {
        let empty = run(Box::<Sha256State>::default(), &[]);
        assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let abc = run(Box::<Sha256State>::default(), &[b"a", b"", b"bc"]);
        assert_eq!(abc, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn wc_counts_like_wc_even_when_words_straddle_pieces() {
        assert_eq!(run(Box::<WcState>::default(), &[b"hello wor", b"ld\n\tfoo  bar\n"]), "2 4 22");
        assert_eq!(run(Box::<WcState>::default(), &[b"no newline"]), "0 2 10");
        assert_eq!(run(Box::<WcState>::default(), &[]), "0 0 0");
        assert_eq!(run(Box::<WcState>::default(), &[b" \r\x0b\x0c "]), "0 0 5");
    }
}
