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

/// A fresh directory, mode 0700, holding the run's socket; removed with everything in it on drop.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    /// Creates `powerpool-<pid>-<random>` under `$XDG_RUNTIME_DIR` when set, else the temp dir.
    pub fn create() -> io::Result<SocketDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)?;
        let dir = base.join(format!("powerpool-{}-{}", std::process::id(), to_hex(&random)));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir)?;
        Ok(SocketDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path().join("pool.sock")
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
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let out = out.clone();
                tokio::spawn(async move {
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
                });
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
    let (mut reader, mut writer) = transport::split(stream);
    let frame = reader
        .next_frame()
        .await
        .map_err(|e| format!("unreadable first frame: {e}"))?
        .ok_or("closed before saying hello")?;
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
