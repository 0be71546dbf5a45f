//! The coordinator's socket: a per-run secret, and the handshake checks every connection
//! passes before it is handed to the slot of the worker it claims to be.

pub use super::socket_dir::SocketDir;
use powerpool_shared::codec;
use powerpool_shared::transport::{self, FrameReader, FrameWriter, Half, Listener};
use powerpool_shared::{FromWorker, Hello, Reject, ToWorker, PROTOCOL_VERSION, TOKEN_LEN};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

/// How long a new connection may take to say `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest first frame accepted: a `Hello` is 52 bytes; the rest leaves room for another
/// version's to be read and told about the mismatch. Anything longer is refused from its length
/// prefix, so a connection that has not authenticated cannot make us hold 16 MiB.
const MAX_HELLO_FRAME: usize = 256;
/// Connections in their handshake at once, at least (twice the pool's workers if more); past
/// this the oldest is dropped. Workers finish theirs in milliseconds, so only silent or slow
/// strangers are ever dropped, however many workers start at once.
const MIN_HANDSHAKES: usize = 128;

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

/// Where authenticated connections go: each slot registers its worker (id and pid) with the
/// sender its connection is to arrive on.
#[derive(Debug)]
pub struct Registration {
    pub worker_id: u64,
    pub pid: u32,
    pub conn: oneshot::Sender<Authenticated>,
}

/// Accepts connections until the run ends, checking each on its own task so a silent one
/// blocks nothing. A connection that passes goes straight to the slot registered for its
/// worker id; the reason each other one was refused goes to `refusals`.
pub async fn accept_loop(
    listener: Listener,
    token: [u8; TOKEN_LEN],
    workers: u64,
    first_id: u64,
    also: Vec<u64>,
    mut registrations: mpsc::UnboundedReceiver<Registration>,
    refusals: mpsc::UnboundedSender<String>,
) {
    use interprocess::local_socket::traits::tokio::Listener as _;
    let max_handshakes =
        MIN_HANDSHAKES.max(usize::try_from(workers).unwrap_or(usize::MAX).saturating_mul(2));
    let (checked_tx, mut checked) = mpsc::unbounded_channel();
    let mut waiting: HashMap<u64, Registration> = HashMap::new();
    let mut pending: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    // Checked connections whose slot has not registered yet (a slot registers right after
    // spawning its worker, but its task may be preempted while the worker connects): held
    // until their registration comes, or for a handshake timeout.
    // Only for the ids a slot may be about to register (see `Expected`); any other id is
    // refused at once.
    let mut early: HashMap<u64, (Authenticated, tokio::time::Instant)> = HashMap::new();
    let mut expected = Expected::starting_at(first_id, workers).and(also);
    loop {
        let now = tokio::time::Instant::now();
        early.retain(|id, (auth, at)| {
            let keep = now.duration_since(*at) < HANDSHAKE_TIMEOUT;
            if !keep {
                let _ = refusals.send(format!(
                    "a connection for worker id {id} (pid {}): no such worker is waiting",
                    auth.pid
                ));
            }
            keep
        });
        tokio::select! {
            // Registrations first: a slot registers its worker right after spawning it, so a
            // verdict on that worker's connection may be ready in the same turn; taken in the
            // other order, the worker would be refused as unknown.
            biased;
            Some(slot) = registrations.recv() => {
                waiting.retain(|_, s| !s.conn.is_closed());
                let id = slot.worker_id;
                expected.register(id);
                waiting.insert(id, slot);
                if let Some((auth, _)) = early.remove(&id) {
                    hand_over(&mut waiting, auth, &refusals);
                }
            }
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    pending.retain(|task| !task.is_finished());
                    if pending.len() >= max_handshakes {
                        if let Some(oldest) = pending.pop_front() {
                            oldest.abort();
                            let _ = refusals.send(format!(
                                "dropped the oldest of {max_handshakes} connections still in \
                                 their handshake"
                            ));
                        }
                    }
                    let checked_tx = checked_tx.clone();
                    pending.push_back(tokio::spawn(async move {
                        let verdict =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, check(stream, &token)).await;
                        let verdict = verdict.unwrap_or_else(|_| {
                            Err(format!("no hello within {HANDSHAKE_TIMEOUT:?}"))
                        });
                        let _ = checked_tx.send(verdict);
                    }));
                }
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(verdict) = checked.recv() => match verdict {
                Ok(auth) if !waiting.contains_key(&auth.worker_id) => {
                    let id = auth.worker_id;
                    if expected.may_come(id) {
                        early.insert(id, (auth, tokio::time::Instant::now()));
                    } else {
                        let _ = refusals.send(format!(
                            "a connection for worker id {id} (pid {}): no such worker is waiting",
                            auth.pid
                        ));
                    }
                }
                Ok(auth) => hand_over(&mut waiting, auth, &refusals),
                Err(why) => {
                    let _ = refusals.send(why);
                }
            },
            () = sleep_until_first(&early), if !early.is_empty() => {}
        }
    }
}

/// The worker ids whose slot may still register: ids are given in order, but each slot
/// registers from its own task, so slot 1 may register before slot 0. An id may come if it is
/// one of the next `workers` after the highest registered, or a lower one skipped so far.
#[derive(Debug)]
struct Expected {
    workers: u64,
    /// One past the highest id registered.
    next: u64,
    /// Ids below `next` not registered yet (at most about `workers` of them: older ones are
    /// forgotten, their workers long given up).
    skipped: std::collections::BTreeSet<u64>,
}

impl Expected {
    /// Ids from `first` on: the listener is made at the first executed worker, which may be a
    /// replacement, with the ids before it long given to forked workers.
    fn starting_at(first: u64, workers: u64) -> Expected {
        Expected { workers: workers.max(1), next: first, skipped: Default::default() }
    }

    /// Also `ids` below the first: the first wave's workers, any of which may yet be executed
    /// if the zygote could not fork it (their failures are told in no fixed order).
    fn and(mut self, ids: impl IntoIterator<Item = u64>) -> Expected {
        let next = self.next;
        self.skipped.extend(ids.into_iter().filter(|&id| id < next));
        self
    }

    fn register(&mut self, id: u64) {
        if id >= self.next {
            let from = self.next.max(id.saturating_sub(self.workers));
            self.skipped.extend(from..id);
            self.next = id + 1;
        } else {
            self.skipped.remove(&id);
        }
        let oldest = self.next.saturating_sub(2 * self.workers);
        self.skipped = self.skipped.split_off(&oldest);
    }

    fn may_come(&self, id: u64) -> bool {
        (id >= self.next && id < self.next.saturating_add(self.workers))
            || self.skipped.contains(&id)
    }
}

/// When the oldest held connection's wait ends.
async fn sleep_until_first(early: &HashMap<u64, (Authenticated, tokio::time::Instant)>) {
    if let Some(at) = early.values().map(|(_, at)| *at).min() {
        tokio::time::sleep_until(at + HANDSHAKE_TIMEOUT).await;
    }
}

/// Gives a checked connection to the slot registered for its worker id, if the peer is the
/// process that slot started (or one in its process group, for a wrapper): SO_PEERCRED says who
/// connected.
fn hand_over(
    waiting: &mut HashMap<u64, Registration>,
    auth: Authenticated,
    refusals: &mpsc::UnboundedSender<String>,
) {
    match waiting.get(&auth.worker_id) {
        Some(slot) if spawned_by(slot.pid, auth.peer_pid) => {
            let slot = waiting.remove(&auth.worker_id).expect("found just above");
            let _ = slot.conn.send(auth);
        }
        Some(_) => {
            let why = format!(
                "a connection for worker id {} from pid {}: not a process this coordinator \
                 started",
                auth.worker_id,
                auth.peer_pid.map_or_else(|| "unknown".into(), |p| p.to_string())
            );
            let _ = refusals.send(why);
        }
        None => {}
    }
}

/// Whether `peer` (a socket peer's pid from SO_PEERCRED) is `leader` or runs in its process
/// group (a worker command may be a wrapper that execs or forks the real worker). Without peer
/// credentials there is nothing to compare, and the token alone decides.
fn spawned_by(leader: u32, peer: Option<u32>) -> bool {
    let Some(peer) = peer else { return true };
    if peer == leader {
        return true;
    }
    #[cfg(unix)]
    {
        // SAFETY: getpgid reads no memory of ours; a stale pid only fails.
        let group = unsafe { libc::getpgid(peer as libc::pid_t) };
        group == leader as libc::pid_t
    }
    #[cfg(not(unix))]
    false
}

pub async fn check(
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
    if !bool::from(offered.ct_eq(token)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_started_process_or_its_group_may_take_a_slot() {
        let me = std::process::id();
        // SAFETY: getpgrp has no preconditions.
        let group = unsafe { libc::getpgrp() } as u32;
        assert!(spawned_by(me, Some(me)), "the process itself");
        assert!(spawned_by(group, Some(me)), "a process in the leader's group (a wrapper)");
        assert!(!spawned_by(u32::MAX - 1, Some(me)), "anyone else");
        assert!(spawned_by(u32::MAX - 1, None), "no credentials: the token alone decides");
    }

    #[test]
    fn a_worker_may_connect_before_its_slot_registers_even_after_a_later_slot_did() {
        let mut e = Expected::starting_at(0, 4);
        assert!((0..4).all(|id| e.may_come(id)) && !e.may_come(4));
        e.register(1); // slot 1's task ran before slot 0's
        assert!(e.may_come(0), "slot 0 has not registered yet: its worker may wait");
        assert!(!e.may_come(1), "registered: its connection goes straight to it");
        assert!(e.may_come(5) && !e.may_come(6));
        e.register(0);
        assert!(!e.may_come(0), "each id once");
        e.register(100);
        assert!(e.may_come(99) && !e.may_come(2), "only the recent skipped ids");
        assert!(e.skipped.len() <= 8, "bounded: {:?}", e.skipped);
    }

    #[test]
    fn a_listener_made_for_a_replacement_expects_the_ids_from_it_on() {
        // Workers 0-3 were forked and born connected; worker 4 replaces one of them and is
        // the first to connect here. Its connection may beat its slot's registration.
        let mut e = Expected::starting_at(4, 4);
        assert!((4..8).all(|id| e.may_come(id)), "the replacement and the next ones");
        assert!(!(0..4).any(|id| e.may_come(id)), "the forked workers' ids are taken");
        e.register(5);
        assert!(e.may_come(4), "4 has not registered yet: its worker may wait");
    }

    #[test]
    fn a_listener_made_for_a_late_fork_failure_expects_the_whole_first_wave() {
        // Workers 0-3 were asked of the zygote; it could not fork 1 and 3, and 3's failure was
        // told first: the socket is made for 3, and 1 must be expected too.
        let mut e = Expected::starting_at(3, 4).and([0, 1, 2, 3]);
        assert!(e.may_come(1) && e.may_come(3), "both executed workers may connect first");
        assert!((4..7).all(|id| e.may_come(id)), "and the next ones");
        e.register(1);
        assert!(e.may_come(0), "0 too, which was forked, is no harm to expect");
    }

    #[test]
    fn tokens_differ() {
        let a = new_token().expect("random");
        let b = new_token().expect("random");
        assert_ne!(a, b);
    }
}
