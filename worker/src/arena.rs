//! The typed pool's item arena, mapped read-only: batches the coordinator wrote in shared
//! memory ([`powerpool_shared::ItemsAt`]) are read where they lie, not copied out of a socket.

use powerpool_shared::env;
use std::os::fd::AsRawFd;

/// The arena's mapping, for the life of the worker.
#[derive(Debug)]
pub struct Mapped {
    base: *const u8,
    size: usize,
}

// SAFETY: read-only memory, valid until dropped: any thread may read it.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps the arena named by [`env::ITEMS_ARENA`]: `Ok(None)` if the variable is unset or
    /// empty (the pool sends every batch through the socket), an error if it names nothing
    /// mappable.
    pub fn from_env() -> Result<Option<Mapped>, String> {
        let path = std::env::var_os(env::ITEMS_ARENA).unwrap_or_default();
        if path.is_empty() {
            return Ok(None);
        }
        Mapped::open(std::path::Path::new(&path)).map(Some)
    }

    /// Maps the file at `path` read-only.
    fn open(path: &std::path::Path) -> Result<Mapped, String> {
        let fail = |e: std::io::Error| format!("cannot map the item arena {path:?}: {e}");
        let file = std::fs::File::open(path).map_err(fail)?;
        let size = file.metadata().map_err(fail)?.len() as usize;
        if size == 0 {
            return Err(format!("the item arena {path:?} is empty"));
        }
        // SAFETY: a read-only shared mapping of a whole file we opened; the file's size is
        // sealed by the coordinator, so no read inside the mapping faults.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(fail(std::io::Error::last_os_error()));
        }
        Ok(Mapped { base: base.cast(), size })
    }

    /// The bytes at `offset..offset + len`, if inside the arena.
    pub fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let (offset, len) = (usize::try_from(offset).ok()?, usize::try_from(len).ok()?);
        (offset.checked_add(len)? <= self.size).then(|| {
            // SAFETY: inside the mapping, which lives as long as `self`. The coordinator does
            // not write a batch's slab while the batch is out (a worker it has ended may still
            // read a reused one: it reads bytes, never follows them).
            unsafe { std::slice::from_raw_parts(self.base.add(offset), len) }
        })
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `from_env`; no slice of it outlives `self`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerpool_shared::codec;

    fn mapped(bytes: &[u8]) -> (std::path::PathBuf, Mapped) {
        let path = std::env::temp_dir().join(format!(
            "powerpool-arena-test-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        std::fs::write(&path, bytes).expect("a file");
        let mapped = Mapped::open(&path).expect("maps");
        (path, mapped)
    }

    #[test]
    fn only_extents_inside_the_arena_are_read() {
        let (path, arena) = mapped(&[7; 100]);
        assert_eq!(arena.slice(0, 100).map(<[u8]>::len), Some(100));
        assert_eq!(arena.slice(99, 1), Some(&[7u8][..]));
        assert_eq!(arena.slice(100, 0), Some(&[][..]));
        assert_eq!(arena.slice(99, 2), None, "past the end");
        assert_eq!(arena.slice(101, 0), None, "starts past the end");
        assert_eq!(arena.slice(u64::MAX, 2), None, "an offset that overflows");
        assert_eq!(arena.slice(1, u64::MAX), None, "a length that overflows");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn items_whose_lengths_lie_are_refused_whole() {
        // Two items, "ab" and "", then a length claiming more than is left.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(b"ab");
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let (path, arena) = mapped(&bytes);
        let mut items = Vec::new();
        assert!(codec::framed_items(arena.slice(0, good).expect("inside"), &mut items).is_some());
        assert_eq!(items, [&b"ab"[..], &b""[..]]);
        let mut items = Vec::new();
        let all = arena.slice(0, bytes.len() as u64).expect("inside");
        assert!(codec::framed_items(all, &mut items).is_none(), "a lying length");
        let mut items = Vec::new();
        assert!(codec::framed_items(&all[..3], &mut items).is_none(), "a cut length");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn a_missing_or_empty_arena_is_an_error_not_a_crash() {
        assert!(Mapped::open(std::path::Path::new("/nonexistent/powerpool-arena")).is_err());
        let path =
            std::env::temp_dir().join(format!("powerpool-arena-empty-{}", std::process::id()));
        std::fs::write(&path, b"").expect("a file");
        assert!(Mapped::open(&path).is_err());
        std::fs::remove_file(path).ok();
    }
}
