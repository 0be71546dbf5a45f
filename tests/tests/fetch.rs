//! `fetch` and `map --fetch` against an HTTP server the test starts on 127.0.0.1:0.

use powerpool_tests::http::TestServer;
use powerpool_tests::{powerpool, run, squares_lines, TempDir};
use std::net::TcpListener;

/// A loopback port with nothing listening: bound, then closed.
fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

struct Line {
    status: String,
    bytes: u64,
    ms: u64,
    url: String,
}

fn parse(stdout: &[u8]) -> Vec<Line> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "four fields: {l}");
            Line {
                status: f[0].to_owned(),
                bytes: f[1].parse().expect("bytes"),
                ms: f[2].parse().expect("ms"),
                url: f[3].to_owned(),
            }
        })
        .collect()
}

#[test]
fn ok_missing_slow_and_refused_are_each_reported_in_input_order() {
    let server = TestServer::start();
    let refused = format!("http://127.0.0.1:{}/", refused_port());
    let urls = [
        server.url("/ok/1024"),
        server.url("/missing"),
        server.url("/slow/5000"),
        refused.clone(),
        server.url("/ok/7"),
    ];
    let out = run(powerpool(["fetch", "--timeout", "0.5"]).args(&urls));
    assert_eq!(out.status.code(), Some(3), "not every URL answered 2xx");
    let lines = parse(&out.stdout);
    assert_eq!(lines.len(), 5);
    for (line, url) in lines.iter().zip(&urls) {
        assert_eq!(&line.url, url, "input order");
    }
    assert_eq!((lines[0].status.as_str(), lines[0].bytes), ("200", 1024));
    assert_eq!((lines[1].status.as_str(), lines[1].bytes), ("404", 9));
    assert_eq!(lines[2].status, "ERR:timeout");
    assert!(lines[2].ms >= 400 && lines[2].ms < 4000, "timed out near 0.5 s: {}", lines[2].ms);
    assert_eq!(lines[3].status, "ERR:refused");
    assert_eq!((lines[4].status.as_str(), lines[4].bytes), ("200", 7));
}

#[test]
fn all_2xx_exits_zero() {
    let server = TestServer::start();
    let out = run(&mut powerpool(["fetch", &server.url("/ok/1"), &server.url("/ok/2")]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(parse(&out.stdout).len(), 2);
}

#[test]
fn a_thousand_urls_at_once() {
    let server = TestServer::start();
    let urls: Vec<String> = (0..1000).map(|i| server.url(&format!("/ok/{}", i % 50))).collect();
    let out = run(powerpool(["fetch", "--concurrency", "100"]).args(&urls));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = parse(&out.stdout);
    assert_eq!(lines.len(), 1000);
    for (i, (line, url)) in lines.iter().zip(&urls).enumerate() {
        assert_eq!(&line.url, url);
        assert_eq!(line.status, "200");
        assert_eq!(line.bytes, (i % 50) as u64);
    }
    assert_eq!(server.requests(), 1000);
}

#[test]
fn map_and_fetch_both_finish_on_one_runtime() {
    let server = TestServer::start();
    let ok = server.url("/slow/200");
    let out = run(&mut powerpool([
        "map",
        "square",
        "--range",
        "0..50000",
        "--workers",
        "2",
        "--fetch",
        &ok,
        "--fetch",
        &server.url("/ok/3"),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, squares_lines(0, 50000));
    assert!(stderr.contains("fetch: 200 4 ") && stderr.contains(&ok), "{stderr}");
    assert!(stderr.contains("fetch: 200 3 "), "{stderr}");
}

#[test]
fn a_failed_fetch_beside_a_map_keeps_the_output_and_says_so_in_the_status() {
    let server = TestServer::start();
    let out = run(&mut powerpool([
        "map",
        "square",
        "--range=-20..20",
        "--fetch",
        &server.url("/missing"),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(out.stdout, squares_lines(-20, 20));
    assert!(stderr.contains("fetch: 404"), "{stderr}");
}

#[test]
fn bodies_over_max_body_are_refused_per_url() {
    let server = TestServer::start();
    let urls = [server.url("/ok/1024"), server.url("/ok/1025"), server.url("/ok/10")];
    let out = run(powerpool(["fetch", "--max-body", "1K"]).args(&urls));
    assert_eq!(out.status.code(), Some(3), "one URL failed");
    let lines = parse(&out.stdout);
    let statuses: Vec<&str> = lines.iter().map(|l| l.status.as_str()).collect();
    assert_eq!(statuses, ["200", "ERR:too-large", "200"]);
}

#[test]
fn urls_from_a_file_follow_the_arguments_in_order() {
    let server = TestServer::start();
    let dir = powerpool_tests::TempDir::new("from");
    let list = dir.0.join("urls.txt");
    let text = format!("# a comment\n{}\n\n  {}  \n", server.url("/ok/3"), server.url("/ok/4"));
    std::fs::write(&list, text).expect("writes");
    let out = run(powerpool(["fetch", &server.url("/ok/2"), "--from"]).arg(&list));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sizes: Vec<u64> = parse(&out.stdout).iter().map(|l| l.bytes).collect();
    assert_eq!(sizes, [2, 3, 4]);
    std::fs::write(&list, "http://127.0.0.1:1/\nftp://nope/\n").expect("writes");
    let out = run(powerpool(["fetch", "--from"]).arg(&list));
    powerpool_tests::assert_usage_error(&out, "a bad line in --from");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}

#[test]
fn defect_17_13_a_server_closing_kept_alive_connections_gives_no_spurious_resets() {
    let server = TestServer::start_closing();
    let dir = TempDir::new("closing");
    let list = dir.0.join("urls.txt");
    let urls: String =
        (0..300).map(|i| format!("{}\n", server.url(&format!("/ok/{}", i % 7)))).collect();
    std::fs::write(&list, urls).expect("writes");
    for concurrency in ["1", "20"] {
        let out = run(powerpool(["fetch", "--concurrency", concurrency, "--from"]).arg(&list));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("200 ")).collect();
        assert!(
            failed.is_empty(),
            "concurrency {concurrency}: {} failed: {failed:?}",
            failed.len()
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
