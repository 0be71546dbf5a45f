//! Where a file result goes: the `--output` of `map` and `merge`, and the `--report` and
//! `--joblog` paths.
//!
//! A regular file, or a path that does not exist yet, is written under a random temporary name
//! in its directory (never a name made from the pid, which repeats from one container to the
//! next) and renamed into place only when the run succeeded. The file is fsynced before the
//! rename and its directory after it, so a file at PATH is complete, across a power loss too.
//! The new file keeps the mode (and, when we are root, the owner) of the file it replaces; a new
//! file gets 0666 less the umask, as a shell's `>` gives. A symlink is followed: its target is
//! replaced and the link stays a link.
//!
//! Anything that is not a regular file (a device such as `/dev/null`, a FIFO, `/dev/stdout` and
//! the other names under `/proc/self/fd`) is written straight through and never replaced. A
//! FIFO without a reader is opened without blocking and polled until a reader comes; a SIGINT
//! or SIGTERM received meanwhile gives up the wait (error kind `Interrupted`), so a signal still
//! ends the run: a blocking `open(2)` would not return for the signal, which the runtime handles.

use crate::errors::Error;
use crate::signal;
use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Symlinks followed before giving up, as the kernel's `ELOOP` limit.
const MAX_LINKS: usize = 40;
/// After this long waiting for a FIFO's reader, say so on stderr.
const FIFO_NOTICE: Duration = Duration::from_secs(1);

/// An `--output` file being written: removed on drop unless committed.
#[derive(Debug)]
pub struct PendingFile {
    atomic: Option<(tempfile::NamedTempFile, PathBuf)>,
}

impl PendingFile {
    /// Opens `dest` for the results: a temporary file next to what `dest` resolves to, or, when
    /// that is not a regular file, `dest` itself (see the module documentation).
    pub fn create(dest: &Path) -> io::Result<(PendingFile, File)> {
        match resolve(dest)? {
            Target::Through(path) => Ok((PendingFile { atomic: None }, open_through(&path)?)),
            Target::Regular(path, meta) => temporary_for(path, Some(&meta)),
            Target::Missing(path) => temporary_for(path, None),
        }
    }

    /// Moves the finished file into place: fsync, rename, fsync of the directory. Nothing to do
    /// for a file written straight through.
    pub fn commit(self) -> io::Result<()> {
        let Some((tmp, dest)) = self.atomic else { return Ok(()) };
        tmp.as_file().sync_all()?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        sync_dir(dir_of(&dest))
    }
}

/// Opens `path` for writing from the start (`--report`, `--joblog`): a regular file is created
/// or truncated in place; anything else is written straight through, a FIFO once it has a
/// reader.
pub fn open_plain(path: &Path) -> io::Result<File> {
    match resolve(path)? {
        Target::Through(path) => open_through(&path),
        Target::Regular(path, _) | Target::Missing(path) => File::create(path),
    }
}

/// The error for a path of `flag` that could not be opened before the run: a usage error (exit
/// 2), or the interrupt that ended the wait for a FIFO's reader.
pub fn open_error(flag: &str, path: &Path, err: io::Error) -> Error {
    match signal::last() {
        Some(int) if err.kind() == ErrorKind::Interrupted => {
            Error::Interrupted { name: int.name, code: int.code }
        }
        _ => Error::Usage(format!("cannot write {flag} '{}': {err}", path.display())),
    }
}

/// What a path names, for telling whether two paths are the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An existing regular file: its device and inode (hard links and symlinks included).
    Inode(u64, u64),
    /// A file yet to be created: its directory, canonical, and its name.
    Name(PathBuf, OsString),
}

/// The identity of the file a write to `path` would create or replace; `None` for what is
/// written straight through (devices, FIFOs), which two flags may share, and for paths that
/// cannot be resolved (the write itself then reports why).
pub fn identity(path: &Path) -> Option<Identity> {
    match resolve(path).ok()? {
        Target::Regular(_, meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                Some(Identity::Inode(meta.dev(), meta.ino()))
            }
            #[cfg(not(unix))]
            {
                let _ = meta;
                None
            }
        }
        Target::Missing(path) => {
            let dir = fs::canonicalize(dir_of(&path)).ok()?;
            Some(Identity::Name(dir, path.file_name()?.to_owned()))
        }
        Target::Through(_) => None,
    }
}

/// What a path resolves to, symlinks followed.
#[derive(Debug)]
enum Target {
    Regular(PathBuf, Metadata),
    Missing(PathBuf),
    /// Not a regular file: written straight through.
    Through(PathBuf),
}

fn resolve(path: &Path) -> io::Result<Target> {
    let mut cur = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        // `/dev/stdout` and its kind are links to open file descriptions, not to names.
        if cur.starts_with("/proc") || cur.starts_with("/dev/fd") {
            return Ok(Target::Through(cur));
        }
        let meta = match fs::symlink_metadata(&cur) {
            Ok(meta) => meta,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Target::Missing(cur)),
            Err(err) => return Err(err),
        };
        if meta.file_type().is_symlink() {
            let link = fs::read_link(&cur)?;
            cur = match cur.parent() {
                Some(dir) => dir.join(link),
                None => link,
            };
        } else if meta.is_file() {
            return Ok(Target::Regular(cur, meta));
        } else if meta.is_dir() {
            return Err(io::Error::new(ErrorKind::IsADirectory, "it is a directory"));
        } else {
            return Ok(Target::Through(cur));
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A temporary file in `dest`'s directory, with the mode (and owner) `existing` has.
fn temporary_for(dest: PathBuf, existing: Option<&Metadata>) -> io::Result<(PendingFile, File)> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    // Room for the random part and the suffix within the 255 bytes a name may have.
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = format!(".{}.", &name[..cut]);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".powerpool.tmp").rand_bytes(8);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Applied by open(2), so the umask still takes its bits off, as for any new file.
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir_of(&dest))?;
    if let Some(meta) = existing {
        keep_mode_and_owner(tmp.as_file(), meta)?;
    }
    let file = tmp.as_file().try_clone()?;
    Ok((PendingFile { atomic: Some((tmp, dest)) }, file))
}

fn keep_mode_and_owner(file: &File, meta: &Metadata) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Permission bits only: a set-id bit has no business on a file of results.
        file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o777))?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Best effort: root replacing a user's file leaves it the user's.
            let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
        }
    }
    #[cfg(not(unix))]
    {
        file.set_permissions(meta.permissions())?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        // Some filesystems cannot fsync a directory; the rename is then as durable as it gets.
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Opens what is not a regular file for writing, in place. A regular file reached through
/// `/proc/self/fd` (`-o /dev/stdout` redirected to a file) is appended to, as the shell left it.
fn open_through(path: &Path) -> io::Result<File> {
    let meta = fs::metadata(path)?;
    let mut options = OpenOptions::new();
    options.write(true).append(meta.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_fifo() {
            return open_fifo(path, &options);
        }
    }
    options.open(path)
}

/// Opens a FIFO for writing once it has a reader, polling without blocking, and gives up when
/// a SIGINT or SIGTERM arrives meanwhile.
#[cfg(unix)]
fn open_fifo(path: &Path, options: &OpenOptions) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let signals = signal::received();
    let started = Instant::now();
    let mut told = false;
    let mut pause = Duration::from_millis(1);
    let mut options = options.clone();
    options.custom_flags(libc::O_NONBLOCK);
    loop {
        match options.open(path) {
            Ok(file) => {
                // Writes may block from here on, as on any pipe.
                let fd = file.as_raw_fd();
                // SAFETY: fcntl on a descriptor we own; no memory is passed.
                unsafe {
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    if flags >= 0 {
                        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
                    }
                }
                return Ok(file);
            }
            // ENXIO: a FIFO with no reader yet.
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {}
            Err(err) => return Err(err),
        }
        if signal::received() != signals {
            return Err(io::Error::new(
                ErrorKind::Interrupted,
                "interrupted while waiting for the FIFO's reader",
            ));
        }
        if !told && started.elapsed() >= FIFO_NOTICE {
            told = true;
            tracing::warn!("waiting for a reader of the FIFO '{}' (Ctrl-C stops)", path.display());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(not(unix))]
fn open_fifo(path: &Path, options: &OpenOptions) -> io::Result<File> {
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("pp-outfile-{tag}-")).tempdir().expect("dir")
    }

    #[test]
    fn a_committed_file_appears_whole_and_a_dropped_one_leaves_nothing() {
        let dir = scratch("commit");
        let dest = dir.path().join("out.txt");
        let (pending, mut file) = PendingFile::create(&dest).expect("creates");
        io::Write::write_all(&mut file, b"42\n").expect("writes");
        assert!(!dest.exists(), "not there before the commit");
        pending.commit().expect("commits");
        assert_eq!(fs::read(&dest).expect("there"), b"42\n");
        let (pending, _) = PendingFile::create(&dest).expect("creates");
        drop(pending);
        let names: Vec<_> = fs::read_dir(dir.path()).expect("lists").flatten().collect();
        assert_eq!(names.len(), 1, "the temporary file is gone");
    }

    #[test]
    fn identities_see_through_links_and_missing_files() {
        let dir = scratch("identity");
        let a = dir.path().join("a");
        fs::write(&a, b"x").expect("writes");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&a, dir.path().join("link")).expect("links");
        #[cfg(unix)]
        assert_eq!(identity(&a), identity(&dir.path().join("link")));
        let new = dir.path().join("new");
        assert_eq!(identity(&new), identity(&dir.path().join(".").join("new")));
        assert_ne!(identity(&new), identity(&a));
        assert_eq!(identity(Path::new("/dev/null")), None);
    }
}
