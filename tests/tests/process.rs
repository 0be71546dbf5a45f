//! `fetch --process`: bodies fetched on the runtime and computed in the worker pool, one line
//! per URL in input order, checked against independent computations (the `sha2` crate and the
//! system's `wc`); a body larger than the budget; 1000 URLs; a worker killed mid-run; failed
//! fetches; Ctrl-C.

use powerpool_tests::http::{text_body, TestServer};
use powerpool_tests::*;
use sha2::{Digest, Sha256};
use std::process::Stdio;
use std::time::Duration;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `<status> <bytes> <ms> <url> <result>` split into (status, bytes, url, result).
fn fields(line: &str) -> (String, u64, String, String) {
    let f: Vec<&str> = line.splitn(5, ' ').collect();
    assert_eq!(f.len(), 5, "five fields: {line}");
    (f[0].to_owned(), f[1].parse().expect("bytes"), f[3].to_owned(), f[4].to_owned())
}

fn lines(out: &std::process::Output) -> Vec<(String, u64, String, String)> {
    String::from_utf8_lossy(&out.stdout).lines().map(fields).collect()
}

/// Starts `fetch --process sha256` with 2 workers over `urls`, its output piped.
fn spawn_sha256(urls: &[String], extra: &[&str]) -> std::process::Child {
    powerpool(["fetch", "--process", "sha256", "--workers", "2"])
        .args(extra)
        .args(urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns")
}

#[test]
fn sha256_of_every_body_matches_in_input_order() {
    let server = TestServer::start();
    let urls: Vec<String> = (0..40).map(|s| server.url(&format!("/text/{s}"))).collect();
    let out = run(powerpool(["fetch", "--process", "sha256", "--workers", "2"]).args(&urls));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    assert_eq!(got.len(), 40);
    for (seed, (status, bytes, url, digest)) in got.iter().enumerate() {
        let body = text_body(seed as u64);
        assert_eq!((status.as_str(), *bytes, url), ("200", body.len() as u64, &urls[seed]));
        assert_eq!(digest, &sha256_hex(&body), "digest of URL {seed}");
    }
}

#[test]
fn wc_matches_the_system_wc() {
    let server = TestServer::start();
    let dir = TempDir::new("wc");
    let urls: Vec<String> = (100..106).map(|s| server.url(&format!("/text/{s}"))).collect();
    let out = run(powerpool(["fetch", "--process", "wc"]).args(&urls));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (i, (_, _, _, counts)) in lines(&out).iter().enumerate() {
        let file = dir.0.join(format!("{i}.txt"));
        std::fs::write(&file, text_body(100 + i as u64)).expect("writes");
        let wc = run(std::process::Command::new("wc").arg("-lwc").arg(&file).env("LC_ALL", "C"));
        let expected: Vec<&str> =
            std::str::from_utf8(&wc.stdout).expect("utf-8").split_whitespace().take(3).collect();
        assert_eq!(counts.split(' ').collect::<Vec<_>>(), expected, "body {i}");
    }
}

#[test]
fn a_body_larger_than_the_budget_still_completes() {
    let server = TestServer::start();
    let urls = [server.url("/ok/3000000"), server.url("/ok/10"), server.url("/ok/2500000")];
    let out = run(powerpool(["fetch", "--process", "sha256", "--budget", "64K"]).args(&urls));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    for ((_, bytes, _, digest), n) in got.iter().zip([3_000_000usize, 10, 2_500_000]) {
        assert_eq!((*bytes as usize, digest.clone()), (n, sha256_hex(&vec![b'x'; n])));
    }
}

#[test]
fn a_thousand_urls_with_failures_among_them() {
    let server = TestServer::start();
    let dir = TempDir::new("thousand");
    let list = dir.0.join("urls.txt");
    let urls: Vec<String> = (0..1000)
        .map(|i| if i % 97 == 0 { server.url("/missing") } else { server.url(&format!("/ok/{i}")) })
        .collect();
    std::fs::write(&list, urls.join("\n")).expect("writes");
    let out = run(
        powerpool(["fetch", "--process", "sha256", "--concurrency", "50", "--from"]).arg(&list)
    );
    assert_eq!(out.status.code(), Some(3), "the 404s are failures");
    let got = lines(&out);
    assert_eq!(got.len(), 1000);
    for (i, (status, _, url, result)) in got.iter().enumerate() {
        assert_eq!(url, &urls[i], "input order");
        if i % 97 == 0 {
            assert_eq!((status.as_str(), result.as_str()), ("404", "-"));
        } else {
            assert_eq!(result, &sha256_hex(&vec![b'x'; i]), "URL {i}");
        }
    }
}

#[test]
fn a_worker_killed_mid_run_changes_no_result() {
    let server = TestServer::start();
    let mut urls: Vec<String> = (0..300).map(|s| server.url(&format!("/text/{s}"))).collect();
    // A slow last URL keeps the run going past the kill, however fast this machine is; its body
    // is computed by whichever worker is alive then.
    urls.push(server.url("/slow/1500"));
    let child = spawn_sha256(&urls, &["--concurrency", "8"]);
    let workers = wait_for_workers(child.id(), 2);
    std::thread::sleep(Duration::from_millis(150));
    kill(workers[0], libc::SIGKILL);
    let out = wait_output(child, TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("killed by SIGKILL"), "the kill went unnoticed: {stderr}");
    let got = lines(&out);
    assert_eq!(got.len(), 301);
    for (seed, (_, _, _, digest)) in got.iter().enumerate().take(300) {
        assert_eq!(digest, &sha256_hex(&text_body(seed as u64)), "URL {seed}");
    }
    assert_eq!(got[300].3, sha256_hex(b"slow"));
}

#[test]
fn sigint_stops_fetches_and_workers() {
    let server = TestServer::start();
    let urls: Vec<String> = (0..20).map(|_| server.url("/slow/10000")).collect();
    let child = spawn_sha256(&urls, &[]);
    let workers = wait_for_workers(child.id(), 2);
    kill(child.id(), libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(workers.iter().all(|&p| !alive(p)), "workers survived");
}

#[test]
fn process_tasks_must_be_byte_tasks() {
    let url = "http://127.0.0.1:1/";
    assert_usage_error(&run(&mut powerpool(["fetch", "--process", "square", url])), "an int task");
    assert_usage_error(&run(&mut powerpool(["fetch", "--process", "md5", url])), "unknown task");
    assert_usage_error(&run(&mut powerpool(["map", "sha256", "--range", "0..5"])), "map of bytes");
    assert_usage_error(&run(&mut powerpool(["fetch", "--workers", "2", url])), "--workers alone");
}
