//! The run's private socket directory: checked before it is made, checked after.

use std::io;
use std::path::{Path, PathBuf};

/// The socket's name in its directory.
const SOCKET_NAME: &str = "pool.sock";
/// Random characters in the directory's name (tempfile's default).
const RANDOM_LEN: usize = 6;

/// The longest path a Unix socket may have (`sun_path` less its terminating NUL).
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH: usize = 103;

/// The directory a socket directory is made in, and the variable it came from.
#[derive(Debug)]
pub struct Base {
    dir: PathBuf,
    from: &'static str,
    meta: std::fs::Metadata,
}

/// A fresh directory, mode 0700, holding the run's socket; removed with everything in it on
/// drop.
#[derive(Debug)]
pub struct SocketDir {
    dir: tempfile::TempDir,
}

impl SocketDir {
    /// Where a socket directory would be made: `$XDG_RUNTIME_DIR` when set, else the temp dir
    /// (a random name that a rerun never meets). Refuses a base directory that is missing or so
    /// long that the socket's path would not fit. Makes nothing: a run checks this first, so a
    /// bad base fails the run at once, even if its workers are forked and connected without a
    /// socket, and the directory is made only when a worker is executed.
    pub fn base() -> io::Result<Base> {
        let (base, from) = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
            Some(dir) if dir.is_dir() => (dir, "XDG_RUNTIME_DIR"),
            _ if std::env::var_os("TMPDIR").is_some() => (std::env::temp_dir(), "TMPDIR"),
            _ => (std::env::temp_dir(), "the temp dir"),
        };
        let named = |why: String| format!("'{}' ({from}) {why}", base.display());
        let meta = std::fs::metadata(&base).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => "does not exist".to_owned(),
                _ => format!("cannot be used: {e}"),
            };
            io::Error::new(e.kind(), named(why))
        })?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                named("is not a directory".into()),
            ));
        }
        // The directory is made only when a worker is executed, which may be a replacement in
        // the middle of a run: one we could not make it in would fail that run then.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(base.as_os_str().as_bytes()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, named("has a NUL".into()))
            })?;
            // SAFETY: access reads the NUL-terminated path we pass and nothing else.
            if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(
                    err.kind(),
                    named(format!("cannot hold the socket directory: {err}")),
                ));
            }
        }
        let prefix = format!("powerpool-{}-", std::process::id());
        let socket = base.join(format!("{prefix}{}", "x".repeat(RANDOM_LEN))).join(SOCKET_NAME);
        let length = socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the socket path '{}' would be {length} bytes, more than the \
                     {MAX_SOCKET_PATH} a Unix socket may have: set {from} to a shorter directory",
                    socket.display()
                ),
            ));
        }
        Ok(Base { dir: base, from, meta })
    }

    /// Creates `powerpool-<pid>-<random>` under [`SocketDir::base`], warns about a base
    /// writable by all without the sticky bit, and checks that the directory made is ours, mode
    /// 0700, and not a link. Each message names the path and the variable it came from.
    pub fn create() -> io::Result<SocketDir> {
        let Base { dir: base, from, meta } = SocketDir::base()?;
        let named = |why: String| format!("'{}' ({from}) {why}", base.display());
        warn_if_open_to_all(&meta, &named);
        let prefix = format!("powerpool-{}-", std::process::id());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).rand_bytes(RANDOM_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o700));
        }
        let dir = builder.tempdir_in(&base).map_err(|e| {
            io::Error::new(e.kind(), named(format!("cannot hold the socket directory: {e}")))
        })?;
        let made = SocketDir { dir };
        made.check_private()?;
        Ok(made)
    }

    /// Checks that the directory is a directory (not a link), ours, and mode 0700.
    pub fn check_private(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(self.path())?;
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o7777 != 0o700 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the socket directory '{}' is not a private directory of ours (uid {}, \
                         mode {:o}; expected uid {me}, mode 700)",
                        self.path().display(),
                        meta.uid(),
                        meta.mode() & 0o7777
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path().join(SOCKET_NAME)
    }
}

/// Such a directory (a Kubernetes emptyDir is one) lets another user remove or swap ours.
/// Workers refuse an impostor's directory or socket, so the token stays safe and the worst is
/// a failed run: a warning, not a refusal, which would rule such pods out.
fn warn_if_open_to_all(meta: &std::fs::Metadata, named: &dyn Fn(String) -> String) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            tracing::warn!(
                "{}",
                named(format!(
                    "is writable by every user and has no sticky bit (mode {:o}): another \
                     user could remove or replace the socket directory; prefer a private one",
                    mode & 0o7777
                ))
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, named);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dir_is_private_and_removed_on_drop() {
        let dir = SocketDir::create().expect("creates");
        let path = dir.path().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::write(dir.socket_path(), b"x").expect("writable");
        drop(dir);
        assert!(!path.exists());
    }
}
