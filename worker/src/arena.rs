//! The typed pool's item arena, read where the coordinator wrote it: a batch sent as
//! [`powerpool_shared::ItemsAt`] is read from the arena's file (`pread`), not copied out of a
//! socket.
//!
//! The file is read, never mapped: a worker holds no shared pages (its resident memory, which
//! `max_worker_memory` measures, is its own), cannot fault on a file cut short, and never
//! looks at memory another process may be writing. The file is checked to be the pool's
//! before it is used: its size is sealed, and it starts with the nonce the worker was given.
//! A worker that cannot use it says so ([`powerpool_shared::FromWorker::NoArena`]) and is
//! sent its batches through its socket.

use powerpool_shared::env::{self, from_hex};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The length of the nonce an arena starts with.
pub const NONCE_LEN: usize = 16;

/// The arena this worker was given, taken from its environment at start (see
/// [`take_from_env`]).
static GIVEN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Takes [`env::ITEMS_ARENA`] out of the environment (what a task starts must not inherit
/// it); called while the worker has one thread.
pub fn take_from_env() {
    if let Some(value) = std::env::var_os(env::ITEMS_ARENA) {
        std::env::remove_var(env::ITEMS_ARENA);
        let value = value.to_string_lossy().into_owned();
        *GIVEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }
}

/// The arena's file, for the life of the worker.
#[derive(Debug)]
pub struct Arena {
    file: std::fs::File,
    size: u64,
}

impl Arena {
    /// The arena this worker was given: `Ok(None)` if none (the pool sends every batch
    /// through the socket), an error saying why if it cannot be used.
    pub fn given() -> Result<Option<Arena>, String> {
        let given = GIVEN.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        if given.is_empty() {
            return Ok(None);
        }
        Arena::open(&given).map(Some)
    }

    /// Opens the arena named by `given`: `NONCE_HEX:PATH`.
    fn open(given: &str) -> Result<Arena, String> {
        let (nonce, path) = given.split_once(':').ok_or("the item arena is malformed")?;
        let nonce = from_hex::<NONCE_LEN>(nonce).ok_or("the item arena's nonce is malformed")?;
        let fail = |e: std::io::Error| format!("cannot open the item arena {path:?}: {e}");
        let file = std::fs::File::open(path).map_err(fail)?;
        // SAFETY: fcntl(F_GET_SEALS) reads the descriptor's seals and touches no memory.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) == 0 {
            return Err(format!("the item arena {path:?} is not a sealed memory file"));
        }
        let size = file.metadata().map_err(fail)?.len();
        let mut head = [0u8; NONCE_LEN];
        file.read_exact_at(&mut head, 0).map_err(fail)?;
        if head != nonce {
            return Err(format!("{path:?} is not this pool's item arena"));
        }
        Ok(Arena { file, size })
    }

    /// Appends the bytes at `offset..offset + len` to `out`; `None` if they are not inside the
    /// arena (or cannot be read).
    pub fn read(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Option<()> {
        if offset.checked_add(len)? > self.size || offset < NONCE_LEN as u64 {
            return None;
        }
        let start = out.len();
        out.resize(start.checked_add(usize::try_from(len).ok()?)?, 0);
        self.file.read_exact_at(&mut out[start..], offset).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerpool_shared::codec;
    use powerpool_shared::env::to_hex;

    /// A sealed memory file holding `nonce` then `bytes`, and how a worker is told of it.
    fn arena(nonce: [u8; NONCE_LEN], bytes: &[u8]) -> (std::fs::File, String) {
        // SAFETY: memfd_create reads the name; the descriptor is owned by the File below.
        let fd = unsafe { libc::memfd_create(c"test-arena".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: fd was just made and is owned here alone.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.write_all_at(&nonce, 0).expect("writes");
        file.write_all_at(bytes, NONCE_LEN as u64).expect("writes");
        // SAFETY: fcntl on our descriptor.
        unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) };
        let given = format!("{}:/proc/self/fd/{fd}", to_hex(&nonce));
        (file, given)
    }

    #[test]
    fn only_extents_inside_the_arena_are_read() {
        let (_file, given) = arena([1; NONCE_LEN], &[7; 100]);
        let a = Arena::open(&given).expect("opens");
        let end = (NONCE_LEN + 100) as u64;
        let mut out = Vec::new();
        assert!(a.read(NONCE_LEN as u64, 100, &mut out).is_some());
        assert_eq!(out, [7; 100]);
        assert!(a.read(end - 1, 1, &mut out).is_some());
        assert!(a.read(end, 0, &mut out).is_some());
        assert!(a.read(end - 1, 2, &mut out).is_none(), "past the end");
        assert!(a.read(end + 1, 0, &mut out).is_none(), "starts past the end");
        assert!(a.read(0, 4, &mut out).is_none(), "the nonce is not an item");
        assert!(a.read(u64::MAX, 2, &mut out).is_none(), "an offset that overflows");
        assert!(a.read(17, u64::MAX, &mut out).is_none(), "a length that overflows");
    }

    #[test]
    fn items_whose_lengths_lie_are_refused_whole() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(b"ab");
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let (_file, given) = arena([2; NONCE_LEN], &bytes);
        let a = Arena::open(&given).expect("opens");
        let mut local = Vec::new();
        a.read(NONCE_LEN as u64, good, &mut local).expect("inside");
        let mut items = Vec::new();
        assert!(codec::framed_items(&local, &mut items).is_some());
        assert_eq!(items, [&b"ab"[..], &b""[..]]);
        let mut all = Vec::new();
        a.read(NONCE_LEN as u64, bytes.len() as u64, &mut all).expect("inside");
        let mut items = Vec::new();
        assert!(codec::framed_items(&all, &mut items).is_none(), "a lying length");
        let mut items = Vec::new();
        assert!(codec::framed_items(&all[..3], &mut items).is_none(), "a cut length");
    }

    #[test]
    fn a_file_that_is_not_the_pools_arena_is_refused_with_its_reason() {
        let (_file, given) = arena([3; NONCE_LEN], b"items");
        let wrong_nonce = format!("{}{}", to_hex(&[4; NONCE_LEN]), &given[2 * NONCE_LEN..]);
        assert!(Arena::open(&wrong_nonce).unwrap_err().contains("not this pool's"));
        let plain = std::env::temp_dir().join(format!("powerpool-arena-{}", std::process::id()));
        std::fs::write(&plain, [3; 64]).expect("a file");
        let unsealed = format!("{}:{}", to_hex(&[3; NONCE_LEN]), plain.display());
        assert!(Arena::open(&unsealed).unwrap_err().contains("not a sealed memory file"));
        std::fs::remove_file(&plain).ok();
        assert!(Arena::open("nonsense").is_err());
        let missing = format!("{}:/nonexistent/arena", to_hex(&[3; NONCE_LEN]));
        assert!(Arena::open(&missing).unwrap_err().contains("cannot open"));
    }
}
