//! A worker that breaks the handshake on purpose, chosen by `ROGUE_MODE`:
//! `bad-version` (speaks protocol 999), `bad-token` (a wrong secret), `garbage` (bytes that are no
//! message), `ready-then-die` (a valid handshake, `Ready`, then exit before any work). It prints
//! the coordinator's answer on stderr and exits 9.

use powerpool_shared::env::{self, from_hex};
use powerpool_shared::transport;
use powerpool_shared::{codec, FromWorker, Hello, ToWorker, PROTOCOL_VERSION, TOKEN_LEN};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mode = std::env::var("ROGUE_MODE").unwrap_or_default();
        let socket = std::env::var(env::SOCKET).expect("socket");
        let mut token: [u8; TOKEN_LEN] =
            from_hex(&std::env::var(env::TOKEN).expect("token")).expect("hex token");
        let worker_id = std::env::var(env::WORKER_ID).expect("id").parse().expect("number");
        let mut version = PROTOCOL_VERSION;
        match mode.as_str() {
            "bad-version" => version = 999,
            "bad-token" => token[0] ^= 1,
            _ => {}
        }
        let stream = transport::connect(socket.as_ref()).await.expect("connects");
        let (mut reader, mut writer) = transport::split(stream);
        if mode == "garbage" {
            writer.send_raw(bytes::Bytes::from_static(b"\x05\0\0\0hello")).await.expect("sends");
        } else {
            let hello =
                FromWorker::Hello(Hello { version, worker_id, token, pid: std::process::id() });
            writer.send(&hello).await.expect("sends");
        }
        match reader.next_frame().await {
            Ok(Some(frame)) => match codec::decode::<ToWorker>(&frame) {
                Ok(ToWorker::Welcome(_)) if mode == "ready-then-die" => {
                    writer.send(&FromWorker::Ready).await.expect("sends");
                    say("rogue: ready, and leaving");
                }
                Ok(ToWorker::Reject(r)) => say(&format!("rogue: rejected: {}", r.reason)),
                Ok(other) => say(&format!("rogue: got {other:?}")),
                Err(e) => say(&format!("rogue: undecodable answer: {e}")),
            },
            Ok(None) => say("rogue: connection closed"),
            Err(e) => say(&format!("rogue: read error: {e}")),
        }
    });
    std::process::exit(9);
}

/// One line in one write, so lines from several processes sharing stderr do not interleave.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}
