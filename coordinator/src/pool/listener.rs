//! The coordinator's socket: a private directory, a per-run secret, and the handshake checks
//! every connection passes before it may reach the supervisor.

use powerpool_shared::codec;
use powerpool_shared::env::to_hex;
use powerpool_shared::transport::{self, FrameReader, FrameWriter, Half, Listener};
use powerpool_shared::{FromWorker, Hello, Reject, ToWorker, PROTOCOL_VERSION, TOKEN_LEN};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a new connection may take to say `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest first frame accepted: a `Hello` is 52 bytes; the rest leaves room for another
/// version's to be read and told about the mismatch. Anything longer is refused from its length
/// prefix, so a connection that has not authenticated cannot make us hold 16 MiB.
const MAX_HELLO_FRAME: usize = 256;
/// Connections in their handshake at once; past this the oldest is dropped. Workers finish
/// theirs in milliseconds, so only silent or slow strangers are ever dropped.
const MAX_HANDSHAKES: usize = 128;

/// The socket's name in its directory.
const SOCKET_NAME: &str = "pool.sock";

/// A fresh directory, mode 0700, holding the run's socket; removed with everything in it on drop.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
}

/// The longest path a Unix socket may have (`sun_path` less its terminating NUL).
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH: usize = 103;

impl SocketDir {
    /// Creates `powerpool-<pid>-<random>` under `$XDG_RUNTIME_DIR` when set, else the temp dir.
    /// Refuses a base directory that is missing or so long that the socket's path would not fit,
    /// warns about one writable by all without the sticky bit, and checks that the directory
    /// made is ours, mode 0700, and not a link. Each message names the path and the variable it
    /// came from.
    pub fn create() -> io::Result<SocketDir> {
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
        // Such a directory (a Kubernetes emptyDir is one) lets another user remove or swap ours.
        // Workers refuse an impostor's directory or socket, so the token stays safe and the
        // worst is a failed run: a warning, not a refusal, which would rule such pods out.
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
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)?;
        let dir = base.join(format!("powerpool-{}-{}", std::process::id(), to_hex(&random)));
        let socket = dir.join(SOCKET_NAME);
        let length = socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the socket path '{}' would be {length} bytes, more than the {MAX_SOCKET_PATH} \
                     a Unix socket may have: set {from} to a shorter directory",
                    socket.display()
                ),
            ));
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create '{}': {e}", dir.display()))
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
            let meta = std::fs::symlink_metadata(&self.dir)?;
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o7777 != 0o700 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the socket directory '{}' is not a private directory of ours (uid {}, \
                         mode {:o}; expected uid {me}, mode 700)",
                        self.dir.display(),
                        meta.uid(),
                        meta.mode() & 0o7777
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path().join(SOCKET_NAME)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new per-run secret from the OS random source.
pub fn new_token() -> io::Result<[u8; TOKEN_LEN]> {
    let mut token = [0u8; TOKEN_LEN];
    getrandom::fill(&mut token)?;
    Ok(token)
}

/// A connection that proved it belongs to this run.
#[derive(Debug)]
pub struct Authenticated {
    pub worker_id: u64,
    /// The pid the worker claims in its hello.
    pub pid: u32,
    /// The peer's pid as the kernel reports it (SO_PEERCRED), where available.
    pub peer_pid: Option<u32>,
    pub reader: FrameReader<Half>,
    pub writer: FrameWriter<Half>,
}

/// Accepts connections forever, checking each on its own task so a silent one blocks nothing;
/// sends the ones that pass to `out`, and the reason each other one was refused.
pub async fn accept_loop(
    listener: Listener,
    token: [u8; TOKEN_LEN],
    out: mpsc::UnboundedSender<Result<Authenticated, String>>,
) {
    use interprocess::local_socket::traits::tokio::Listener as _;
    let mut pending: std::collections::VecDeque<tokio::task::JoinHandle<()>> = Default::default();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                pending.retain(|task| !task.is_finished());
                if pending.len() >= MAX_HANDSHAKES {
                    if let Some(oldest) = pending.pop_front() {
                        oldest.abort();
                        let _ = out.send(Err(format!(
                            "dropped the oldest of {MAX_HANDSHAKES} connections still in their \
                             handshake"
                        )));
                    }
                }
                let out = out.clone();
                pending.push_back(tokio::spawn(async move {
                    let verdict = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        check(stream, &token),
                    )
                    .await
                    {
                        Ok(verdict) => verdict,
                        Err(_) => Err(format!("no hello within {HANDSHAKE_TIMEOUT:?}")),
                    };
                    let _ = out.send(verdict);
                }));
            }
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn check(
    stream: interprocess::local_socket::tokio::Stream,
    token: &[u8; TOKEN_LEN],
) -> Result<Authenticated, String> {
    #[cfg(not(unix))]
    let peer_pid = None;
    #[cfg(unix)]
    let peer_pid = {
        use interprocess::local_socket::traits::StreamCommon as _;
        let creds = stream.peer_creds().map_err(|e| format!("no peer credentials: {e}"))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if creds.euid().is_some_and(|uid| uid != me) {
            return Err(format!("peer runs as uid {:?}, not {me}", creds.euid()));
        }
        creds.pid().and_then(|p| u32::try_from(p).ok())
    };
    let frame = read_hello_frame(&stream).await?;
    let (reader, mut writer) = transport::split(stream);
    let version = codec::hello_version(&frame).ok_or("the first frame is not a hello")?;
    if version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version mismatch: worker speaks {version}, coordinator speaks {PROTOCOL_VERSION}"
        );
        let _ = writer.send(&ToWorker::Reject(Reject { reason: reason.clone() })).await;
        return Err(reason);
    }
    let hello = match codec::decode::<FromWorker>(&frame) {
        Ok(FromWorker::Hello(hello)) => hello,
        Ok(_) | Err(_) => return Err("malformed hello".to_owned()),
    };
    let Hello { worker_id, token: offered, pid, .. } = hello;
    if !constant_time_eq(&offered, token) {
        let reason = "wrong token".to_owned();
        let _ = writer.send(&ToWorker::Reject(Reject { reason: reason.clone() })).await;
        return Err(format!("{reason} from pid {pid}"));
    }
    Ok(Authenticated { worker_id, pid, peer_pid, reader, writer })
}

/// Reads the first frame by hand: its length prefix first, refused above [`MAX_HELLO_FRAME`]
/// before anything is allocated, then exactly that many bytes, so the frame reader that takes
/// over starts at the next frame.
async fn read_hello_frame(
    stream: &interprocess::local_socket::tokio::Stream,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let mut reader = stream;
    let mut prefix = [0u8; codec::LENGTH_PREFIX];
    reader.read_exact(&mut prefix).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "closed before saying hello".to_owned(),
        _ => format!("unreadable first frame: {e}"),
    })?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_HELLO_FRAME {
        return Err(format!(
            "a first frame of {len} bytes, where a hello has at most {MAX_HELLO_FRAME}"
        ));
    }
    let mut frame = vec![0u8; len];
    reader.read_exact(&mut frame).await.map_err(|e| format!("unreadable first frame: {e}"))?;
    Ok(frame)
}

/// Compares secrets in time that depends only on their length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
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

    #[test]
    fn tokens_differ_and_compare_exactly() {
        let a = new_token().expect("random");
        let b = new_token().expect("random");
        assert_ne!(a, b);
        assert!(constant_time_eq(&a, &a));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq(&a[..31], &a));
    }
}
