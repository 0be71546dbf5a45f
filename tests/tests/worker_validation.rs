//! The worker side of the trust boundary: a test plays the coordinator and sends a real
//! `powerpool-worker` what no coordinator should: a chunk with an inverted range, one larger
//! than the format allows, a job for a task it lacks, a body for an integer task. The worker
//! answers each with an error frame (or ends the connection), never a panic or a wrong result.

use bytes::BytesMut;
use powerpool_shared::env::{self, to_hex};
use powerpool_shared::{
    codec, Format, FromWorker, Input, ItemBatch, RunChunk, ToWorker, Welcome, PROTOCOL_VERSION,
    TOKEN_LEN,
};
use powerpool_tests::*;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn send(conn: &mut UnixStream, msg: &ToWorker) {
    let mut buf = BytesMut::new();
    codec::write_frame(msg, &mut buf).expect("encodes");
    conn.write_all(&buf).expect("sends");
}

/// The next message, or `None` once the worker closed the connection.
fn recv(conn: &mut UnixStream) -> Option<FromWorker> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    conn.read_exact(&mut body).ok()?;
    match codec::decode_from_worker(BytesMut::from(&body[..])).expect("a valid frame") {
        codec::Incoming::Done { chunk, items, payload } => {
            Some(FromWorker::Done(powerpool_shared::ChunkDone {
                chunk,
                items,
                payload: payload.to_vec(),
            }))
        }
        codec::Incoming::Other(msg) => Some(msg),
    }
}

/// Starts a worker against a socket this test listens on, completes the handshake with `task`
/// for `input`, and returns the connection, the worker, and its first answer.
fn worker_for(task: &str, input: Input, dir: &TempDir) -> (UnixStream, Child, Option<FromWorker>) {
    // Private, as the coordinator makes it: a worker refuses any other socket directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let path = dir.0.join("pool.sock");
    let listener = UnixListener::bind(&path).expect("binds");
    let token = [7u8; TOKEN_LEN];
    let child = Command::new(bin("powerpool-worker"))
        .env(env::SOCKET, &path)
        .env(env::TOKEN, to_hex(&token))
        .env(env::WORKER_ID, "0")
        .env(env::COORDINATOR_PID, std::process::id().to_string())
        .env(powerpool_shared::task::TEST_TASKS_ENV, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let (mut conn, _) = listener.accept().expect("the worker connects");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    match recv(&mut conn) {
        Some(FromWorker::Hello(hello)) => {
            assert_eq!((hello.version, hello.token), (PROTOCOL_VERSION, token));
        }
        other => panic!("expected a hello, got {other:?}"),
    }
    send(&mut conn, &ToWorker::Welcome(Welcome { task: task.into(), input }));
    let first = recv(&mut conn);
    (conn, child, first)
}

fn failed_reason(msg: Option<FromWorker>) -> String {
    match msg {
        Some(FromWorker::Failed(f)) => f.reason,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[test]
fn bad_chunks_get_error_frames_and_the_worker_stays_usable() {
    let dir = TempDir::new("validate");
    let (mut conn, mut child, first) = worker_for("square", Input::Range(Format::Lines), &dir);
    assert!(matches!(first, Some(FromWorker::Ready)), "{first:?}");
    send(&mut conn, &ToWorker::Run(RunChunk { chunk: 1, start: 10, end: 5 }));
    assert!(failed_reason(recv(&mut conn)).contains("invalid chunk range 10..5"));
    let huge = Format::Lines.max_chunk_items() as i64 + 1;
    send(&mut conn, &ToWorker::Run(RunChunk { chunk: 2, start: 0, end: huge }));
    assert!(failed_reason(recv(&mut conn)).contains("invalid chunk range"));
    // Still usable: a good chunk is computed exactly.
    send(&mut conn, &ToWorker::Run(RunChunk { chunk: 3, start: -2, end: 3 }));
    match recv(&mut conn) {
        Some(FromWorker::Done(d)) => {
            assert_eq!((d.chunk, d.items, &d.payload[..]), (3, 5, &b"4\n1\n0\n1\n4\n"[..]));
        }
        other => panic!("expected a result, got {other:?}"),
    }
    send(&mut conn, &ToWorker::Shutdown);
    assert_eq!(wait_timeout(&mut child, TIMEOUT).and_then(|s| s.code()), Some(0));
}

#[test]
fn an_unknown_task_is_refused_with_a_fatal_frame() {
    let dir = TempDir::new("unknown");
    let (_conn, mut child, first) = worker_for("cube", Input::Range(Format::Lines), &dir);
    match first {
        Some(FromWorker::Fatal(f)) => assert!(f.reason.contains("unknown integer task 'cube'")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(wait_timeout(&mut child, TIMEOUT).and_then(|s| s.code()), Some(3));
    // A byte task asked for as an integer job, and the other way round, are unknown too.
    let dir = TempDir::new("kinds");
    let (_conn, mut child, first) = worker_for("sha256", Input::Range(Format::Lines), &dir);
    assert!(matches!(first, Some(FromWorker::Fatal(_))), "{first:?}");
    let _ = wait_timeout(&mut child, TIMEOUT);
}

#[test]
fn a_message_that_does_not_fit_the_job_ends_the_connection() {
    let dir = TempDir::new("mismatch");
    let (mut conn, mut child, first) = worker_for("square", Input::Range(Format::Lines), &dir);
    assert!(matches!(first, Some(FromWorker::Ready)));
    let piece = powerpool_shared::BodyPiece { chunk: 1, last: true, bytes: b"abc".to_vec() };
    send(&mut conn, &ToWorker::Body(piece));
    assert!(recv(&mut conn).is_none(), "the worker should hang up");
    let status = wait_timeout(&mut child, TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(4), "protocol error status");
    // And garbage in place of a frame body: the same, never a panic.
    let dir = TempDir::new("garbage");
    let (mut conn, mut child, _) = worker_for("square", Input::Range(Format::Bin), &dir);
    conn.write_all(&[9, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]).expect("sends");
    assert!(recv(&mut conn).is_none());
    let status = wait_timeout(&mut child, TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(4));
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("reads");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn batch(chunk: u64, first: u64, items: &[&[u8]]) -> ToWorker {
    let items = items.iter().map(|i| serde_bytes::ByteBuf::from(i.to_vec())).collect();
    ToWorker::Items(ItemBatch { chunk, first, items })
}

#[test]
fn an_items_batch_gets_one_record_per_item_and_a_panic_names_its_item() {
    let dir = TempDir::new("items");
    let (mut conn, mut child, first) = worker_for("poison-bytes", Input::Items, &dir);
    assert!(matches!(first, Some(FromWorker::Ready)), "{first:?}");
    send(&mut conn, &batch(1, 10, &[b"a b\n", b"", b"three words here"]));
    match recv(&mut conn) {
        Some(FromWorker::Done(d)) => {
            let records = codec::split_records(&d.payload.into()).expect("records");
            let records: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
            assert_eq!((d.chunk, d.items), (1, 3));
            assert_eq!(records, vec![&b"1 2 4"[..], b"0 0 0", b"0 3 16"]);
        }
        other => panic!("expected the records, got {other:?}"),
    }
    send(&mut conn, &batch(2, 20, &[b"fine", b"panic now", b"never reached"]));
    match recv(&mut conn) {
        Some(FromWorker::Failed(f)) => {
            assert_eq!((f.chunk, f.item), (2, Some(21)), "the second item, by its index");
            assert!(f.reason.contains("injected panic"), "{}", f.reason);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // A range chunk in an items job does not fit: the worker hangs up.
    send(&mut conn, &ToWorker::Run(RunChunk { chunk: 3, start: 0, end: 1 }));
    assert!(recv(&mut conn).is_none(), "the worker should hang up");
    assert_eq!(wait_timeout(&mut child, TIMEOUT).and_then(|s| s.code()), Some(4));
}

#[test]
fn an_items_batch_in_a_range_job_ends_the_connection() {
    let dir = TempDir::new("items-in-range");
    let (mut conn, mut child, first) = worker_for("square", Input::Range(Format::Lines), &dir);
    assert!(matches!(first, Some(FromWorker::Ready)));
    send(&mut conn, &batch(1, 0, &[b"1"]));
    assert!(recv(&mut conn).is_none(), "the worker should hang up");
    assert_eq!(wait_timeout(&mut child, TIMEOUT).and_then(|s| s.code()), Some(4));
}
