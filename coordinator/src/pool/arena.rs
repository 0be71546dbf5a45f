//! Shared memory for items: batches the workers read where the caller wrote them.
//!
//! A typed call's items are encoded into one buffer per batch anyway ([`super::RunBuilder`]).
//! Sent through a socket, each batch is copied twice more: into the kernel by the pool's
//! thread, out of it by the worker; for small items that is a third of the pool's own CPU
//! (B9: 100 MB of strings). With an arena, the finished batch is copied once into a slab of
//! one memory file the workers read (read-only), and the worker is sent only where its batch lies
//! ([`powerpool_shared::ItemsAt`]); the socket carries a few dozen bytes per batch.
//!
//! - **Lifetime.** A slab is a [`Bytes`] owner: it returns to the free list when the last
//!   slice of it is dropped, after its unit was answered, retried or split (the engine slices
//!   runs for bisection without copying). It is never written while a slice of it lives.
//! - **Exhaustion.** When no slab is free (slow items, a huge window) or a batch is larger
//!   than a slab, the batch stays on the heap and goes through the socket as before: the arena
//!   only ever speeds things up.
//! - **Access.** The workers open the file through `/proc/<pid>/fd/<n>` read-only and read
//!   batches from it (`pread`), so a worker cannot write into another's batches, holds no
//!   shared pages (its resident memory stays its own), and never reads memory as it is
//!   written. Any process of the same user could open it too, as it could read this
//!   process's memory: nothing new is exposed. The file starts with a random nonce the
//!   workers are given with its path, so a path that names another file (a PID namespace
//!   without its own `/proc`) is refused; so is a file whose size is not sealed.
//! - **Fallback.** A worker that cannot open it (this process is not dumpable, as after a
//!   daemon drops privileges; `/proc` is not this namespace's) says why (`NoArena`) before
//!   `Ready`, and its slot sends it every batch through its socket: slower, never broken.
//! - **Size.** Its pages are resident once touched (in this process only); the free list is
//!   last-in first-out, so a run touches only as many slabs as it keeps in flight.

use bytes::Bytes;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// One slab: a batch of the typed library (96 KiB of items, then its last item) fits.
pub const SLAB: usize = 128 << 10;
/// Slabs in an arena: 16 MiB of address space, resident only as far as used; a call's
/// window of small items (32,768) fills about 32.
pub const SLABS: usize = 128;
/// The page before the first slab, which starts with the nonce.
const HEADER: usize = 4096;
/// The nonce's length.
const NONCE_LEN: usize = 16;

/// A memory file mapped into this process, cut into slabs. Cheap to clone.
#[derive(Clone)]
pub struct Arena {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena").field("bytes", &self.shared.size).finish_non_exhaustive()
    }
}

struct Shared {
    base: *mut u8,
    size: usize,
    slab: usize,
    nonce: [u8; NONCE_LEN],
    /// Free slab numbers; the last freed is taken first.
    free: Mutex<Vec<u32>>,
    file: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by `Shared` until it is dropped; a slab is written
// only by whoever took it from the free list, and read only through the `Bytes` made of it.
unsafe impl Send for Shared {}
// SAFETY: as above; the free list is behind a mutex.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: `base` and `size` are the mapping made in `Arena::new`, and no slab (each
        // holds an `Arc` of this) outlives it.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

/// A slab holding one batch: the owner of the `Bytes` a run is made of.
struct Slab {
    shared: Arc<Shared>,
    index: u32,
    len: usize,
}

impl AsRef<[u8]> for Slab {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the slab is inside the mapping, which lives as long as `shared`; it was
        // written before this `Slab` was made and is not written again until it is freed.
        unsafe {
            std::slice::from_raw_parts(
                self.shared.base.add(HEADER + self.index as usize * self.shared.slab),
                self.len,
            )
        }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if let Ok(mut free) = self.shared.free.lock() {
            free.push(self.index);
        }
    }
}

impl Arena {
    /// An arena of `slabs` slabs of `slab` bytes, if this system has memory files and this
    /// process can reopen its own descriptors through `/proc` (as its workers will).
    pub fn new(slabs: usize, slab: usize) -> io::Result<Arena> {
        let size = slabs
            .checked_mul(slab)
            .and_then(|slabs| slabs.checked_add(HEADER))
            .filter(|_| slabs <= u32::MAX as usize)
            .ok_or_else(|| io::Error::other("arena too large"))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(io::Error::other)?;
        // SAFETY: memfd_create reads the name we pass; the descriptor it returns is ours.
        let fd = unsafe {
            libc::memfd_create(
                c"powerpool-items".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just made and is owned here alone.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate and fcntl act on our descriptor. The seals keep the size fixed, so
        // no mapping of it can ever fault past its end.
        unsafe {
            if libc::ftruncate(fd, size as libc::off_t) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::fcntl(
                fd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            );
        }
        // The workers' way in must work here first.
        std::fs::File::open(format!("/proc/self/fd/{fd}"))?;
        // SAFETY: a new shared mapping of the whole file; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is `size` bytes long, more than the nonce.
        unsafe { std::ptr::copy_nonoverlapping(nonce.as_ptr(), base.cast::<u8>(), NONCE_LEN) };
        let free = (0..slabs as u32).rev().collect();
        let shared = Shared { base: base.cast(), size, slab, nonce, free: Mutex::new(free), file };
        Ok(Arena { shared: Arc::new(shared) })
    }

    /// An arena of `SLABS` slabs of `SLAB` bytes (see [`Arena::new`]).
    pub fn standard() -> io::Result<Arena> {
        Arena::new(SLABS, SLAB)
    }

    /// How a worker of this process finds the arena and knows it: its value of
    /// [`powerpool_shared::env::ITEMS_ARENA`], `NONCE_HEX:PATH`.
    pub fn worker_path(&self) -> String {
        let nonce = powerpool_shared::env::to_hex(&self.shared.nonce);
        format!("{nonce}:/proc/{}/fd/{}", std::process::id(), self.shared.file.as_raw_fd())
    }

    /// `bytes` copied into a free slab, or `None` if none is free or they do not fit one.
    pub fn fill(&self, bytes: &[u8]) -> Option<Bytes> {
        if bytes.len() > self.shared.slab {
            return None;
        }
        let index = self.shared.free.lock().ok()?.pop()?;
        // SAFETY: the slab is inside the mapping, and free: nothing else reads or writes it.
        unsafe {
            let at = self.shared.base.add(HEADER + index as usize * self.shared.slab);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
        let slab = Slab { shared: Arc::clone(&self.shared), index, len: bytes.len() };
        Some(Bytes::from_owner(slab))
    }

    /// Where `bytes` lie in the arena, `(offset, length)`, if they are a slice of it.
    pub fn extent(&self, bytes: &[u8]) -> Option<(u64, u64)> {
        let start = (bytes.as_ptr() as usize).checked_sub(self.shared.base as usize)?;
        (start.checked_add(bytes.len())? <= self.shared.size)
            .then_some((start as u64, bytes.len() as u64))
    }

    /// Slabs free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.shared.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slab_holds_what_was_written_and_is_freed_with_its_last_slice() {
        let arena = Arena::new(2, 4096).expect("an arena");
        let a = arena.fill(b"hello world").expect("a slab");
        assert_eq!(&a[..], b"hello world");
        let part = a.slice(6..);
        drop(a);
        assert_eq!(arena.free(), 1, "a slice still holds the slab");
        let (offset, len) = arena.extent(&part).expect("inside the arena");
        assert_eq!((offset % 4096, len), (6, 5));
        drop(part);
        assert_eq!(arena.free(), 2);
    }

    #[test]
    fn a_full_arena_or_a_batch_larger_than_a_slab_is_refused_not_blocked() {
        let arena = Arena::new(2, 64).expect("an arena");
        assert!(arena.fill(&[0; 65]).is_none(), "larger than a slab");
        let a = arena.fill(&[1; 64]).expect("a slab");
        let b = arena.fill(&[2; 64]).expect("a slab");
        assert!(arena.fill(&[3]).is_none(), "no slab is free");
        assert_eq!((a[0], b[0]), (1, 2), "neither slab was overwritten");
        drop(b);
        let c = arena.fill(&[3]).expect("a freed slab is taken again");
        assert_eq!(
            arena.extent(&c).map(|(o, _)| o),
            Some(HEADER as u64 + 64),
            "the last freed first"
        );
    }

    #[test]
    fn bytes_outside_the_arena_have_no_extent() {
        let arena = Arena::new(1, 64).expect("an arena");
        assert_eq!(arena.extent(&Bytes::from(vec![0u8; 8])), None);
    }

    #[test]
    fn a_worker_reads_a_slab_through_its_path_after_the_nonce_and_cannot_write_it() {
        use std::os::unix::fs::FileExt as _;
        let arena = Arena::new(1, 4096).expect("an arena");
        let slab = arena.fill(b"seen by the worker").expect("a slab");
        let given = arena.worker_path();
        let (nonce, path) = given.split_once(':').expect("NONCE:PATH");
        let file = std::fs::File::open(path).expect("opens read-only");
        let mut head = [0u8; NONCE_LEN];
        file.read_exact_at(&mut head, 0).expect("reads");
        assert_eq!(powerpool_shared::env::to_hex(&head), nonce);
        let (offset, len) = arena.extent(&slab).expect("inside");
        let mut seen = vec![0u8; len as usize];
        file.read_exact_at(&mut seen, offset).expect("reads");
        assert_eq!(seen, b"seen by the worker");
        assert!(file.write_all_at(b"x", offset).is_err(), "opened read-only");
    }
}
