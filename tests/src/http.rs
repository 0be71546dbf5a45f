//! A small HTTP/1.1 server on 127.0.0.1:0, started in-process by the tests that need one.
//!
//! Routes: `/ok/N` answers 200 with N bytes; `/text/SEED` answers 200 with
//! [`text_body`]`(SEED)`; `/missing` answers 404; `/slow/MS` waits MS milliseconds, then answers
//! 200; `/redirect/N` redirects (302) to `/redirect/N-1`, and `/redirect/0` answers 200 with
//! `landed`; `/goto/PORT/PATH` redirects to `http://127.0.0.1:PORT/PATH`; `/lie/N` announces
//! N + 100 bytes, sends N and closes; `/chunked/N` sends N bytes chunked, without a length.
//! Connections are kept alive, as a real server's are; [`TestServer::start_closing`]
//! starts one that closes each connection after its first answer without saying so
//! (no `Connection: close`), as servers with a short keep-alive timeout do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The two client paths of `fetch`, for tests that run on both: the lean HTTP/1.1 path (the
/// default) and reqwest, forced through the environment variable [`CLIENT_ENV`].
pub const CLIENTS: [&str; 2] = ["lean", "reqwest"];
/// Set to `reqwest` to force `fetch`'s reqwest path (any other value: the default).
pub const CLIENT_ENV: &str = "POWERPOOL_FETCH_CLIENT";

/// `cmd` on the client path `client` (one of [`CLIENTS`]).
pub fn on_client<'c>(
    cmd: &'c mut std::process::Command,
    client: &str,
) -> &'c mut std::process::Command {
    cmd.env(CLIENT_ENV, client)
}

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(usize::MAX)
    }

    /// A server that answers one request per connection, then closes it without a
    /// `Connection: close` header: a client that reuses the connection finds it dead.
    pub fn start_closing() -> TestServer {
        TestServer::start_with(1)
    }

    fn start_with(per_connection: usize) -> TestServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds loopback");
                addr_tx.send(listener.local_addr().expect("addr")).expect("reports addr");
                let accept = async {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else { continue };
                        let counter = Arc::clone(&counter);
                        tokio::spawn(serve(conn, counter, per_connection));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("server started");
        TestServer { addr, requests, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(mut conn: TcpStream, counter: Arc<AtomicUsize>, per_connection: usize) {
    let mut buf = Vec::with_capacity(4096);
    let mut served = 0;
    while served < per_connection {
        let Some(end) = find_head_end(&buf) else {
            let mut piece = [0u8; 4096];
            match conn.read(&mut piece).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let answer = route(&path).await;
        counter.fetch_add(1, Ordering::SeqCst);
        served += 1;
        let length = match answer.framing {
            Framing::Length => format!("Content-Length: {}\r\n", answer.body.len()),
            Framing::Lie => format!("Content-Length: {}\r\n", answer.body.len() + 100),
            Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_owned(),
        };
        let response = format!(
            "HTTP/1.1 {} {}\r\n{length}{}Content-Type: text/plain\r\n\r\n",
            answer.code, answer.reason, answer.headers
        );
        let body = match answer.framing {
            Framing::Chunked => {
                let mut out = Vec::new();
                for piece in answer.body.chunks(1000) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
            _ => answer.body,
        };
        if conn.write_all(response.as_bytes()).await.is_err()
            || conn.write_all(&body).await.is_err()
        {
            return;
        }
        if answer.framing == Framing::Lie {
            return; // the rest of the announced body never comes
        }
    }
    // Closing a moment after the last answer, rather than at once, is when a client that
    // reuses the connection has most likely sent its next request into it.
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The body of `/text/SEED`: a few hundred bytes to a few hundred KiB of words, spaces, tabs
/// and newlines, different for every seed (a deterministic xorshift), for digest and word-count
/// tests.
pub fn text_body(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = 100 + (next() % 300_000) as usize;
    (0..len)
        .map(|_| match next() % 16 {
            0 => b'\n',
            1 => b' ',
            2 => b'\t',
            3 => b'\r',
            n => b'a' + n as u8,
        })
        .collect()
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length,
    /// A Content-Length 100 bytes longer than the body, and the connection closed after it.
    Lie,
    Chunked,
}

struct Answer {
    code: u16,
    reason: &'static str,
    headers: String,
    body: Vec<u8>,
    framing: Framing,
}

fn answer(code: u16, reason: &'static str, body: Vec<u8>) -> Answer {
    Answer { code, reason, headers: String::new(), body, framing: Framing::Length }
}

fn redirect_to(location: &str) -> Answer {
    Answer {
        headers: format!("Location: {location}\r\n"),
        ..answer(302, "Found", b"moved".to_vec())
    }
}

async fn route(path: &str) -> Answer {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let number = |n: Option<&str>| n.and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    match (parts.next(), parts.next()) {
        (Some("ok"), Some(n)) => answer(200, "OK", vec![b'x'; n.parse().unwrap_or(0)]),
        (Some("text"), Some(seed)) => answer(200, "OK", text_body(seed.parse().unwrap_or(0))),
        (Some("echo"), Some(text)) => answer(200, "OK", text.as_bytes().to_vec()),
        (Some("slow"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            answer(200, "OK", b"slow".to_vec())
        }
        (Some("redirect"), n) => match number(n) {
            0 => answer(200, "OK", b"landed".to_vec()),
            n => redirect_to(&format!("/redirect/{}", n - 1)),
        },
        (Some("goto"), Some(rest)) => match rest.split_once('/') {
            Some((port, path)) => redirect_to(&format!("http://127.0.0.1:{port}/{path}")),
            None => answer(404, "Not Found", b"not found".to_vec()),
        },
        (Some("lie"), n) => {
            Answer { framing: Framing::Lie, ..answer(200, "OK", vec![b'l'; number(n)]) }
        }
        (Some("chunked"), n) => {
            Answer { framing: Framing::Chunked, ..answer(200, "OK", vec![b'c'; number(n)]) }
        }
        _ => answer(404, "Not Found", b"not found".to_vec()),
    }
}
