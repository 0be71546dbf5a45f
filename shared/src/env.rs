//! Names of the environment variables through which the coordinator tells a worker where and how
//! to connect. The environment, unlike the command line, is readable only by the same user.

/// Path of the coordinator's socket.
pub const SOCKET: &str = "POWERPOOL_SOCKET";
/// Instead of [`SOCKET`]: the descriptor number of a connection the worker already holds, one
/// end of a socket pair (a worker forked by the coordinator's zygote is born connected).
pub const CONNECTION_FD: &str = "POWERPOOL_CONNECTION_FD";
/// The per-run secret, as lowercase hex ([`crate::TOKEN_LEN`] bytes).
pub const TOKEN: &str = "POWERPOOL_TOKEN";
/// The slot id the coordinator gave this worker process.
pub const WORKER_ID: &str = "POWERPOOL_WORKER_ID";
/// The worker's slot number, 1 to the pool's worker count: a replacement takes the number of the
/// worker it replaces (`run`'s `{%}`).
pub const SLOT: &str = "POWERPOOL_SLOT";
/// The coordinator's pid; a worker whose parent is no longer this pid exits at once.
pub const COORDINATOR_PID: &str = "POWERPOOL_COORDINATOR_PID";

/// The typed pool's item arena, as `NONCE_HEX:PATH`: a memory file the coordinator writes
/// batches into (sent as [`crate::ToWorker::ItemsAt`]), which the worker opens read-only at
/// `PATH` (`/proc/<pid>/fd/<n>`) and checks to start with the nonce. Empty: no arena.
pub const ITEMS_ARENA: &str = "POWERPOOL_ITEMS_ARENA";

/// The soft open-file limit the coordinator started with, set when it raised its own: the
/// worker puts it back first thing, for itself and the jobs it starts.
pub const NOFILE_SOFT: &str = "POWERPOOL_NOFILE_SOFT";

/// Encodes bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Decodes lowercase or uppercase hex of exactly `N` bytes.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 4] = [0, 0x7f, 0x80, 0xff];
        assert_eq!(to_hex(&bytes), "007f80ff");
        assert_eq!(from_hex::<4>("007F80ff"), Some(bytes));
        assert_eq!(from_hex::<4>("007f80f"), None);
        assert_eq!(from_hex::<4>("007f80fg"), None);
    }
}
