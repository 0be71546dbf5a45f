//! `fetch` and `map --fetch` against an HTTP server the test starts on 127.0.0.1:0.

use powerpool_tests::http::{on_client, TestServer, CLIENTS};
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
    for client in CLIENTS {
        ok_missing_slow_and_refused_on(client);
    }
}

fn ok_missing_slow_and_refused_on(client: &str) {
    let server = TestServer::start();
    let refused = format!("http://127.0.0.1:{}/", refused_port());
    let urls = [
        server.url("/ok/1024"),
        server.url("/missing"),
        server.url("/slow/5000"),
        refused.clone(),
        server.url("/ok/7"),
    ];
    let out = run(on_client(powerpool(["fetch", "--timeout", "0.5"]).args(&urls), client));
    assert_eq!(out.status.code(), Some(3), "{client}: not every URL answered 2xx");
    let lines = parse(&out.stdout);
    assert_eq!(lines.len(), 5);
    for (line, url) in lines.iter().zip(&urls) {
        assert_eq!(&line.url, url, "{client}: input order");
    }
    assert_eq!((lines[0].status.as_str(), lines[0].bytes), ("200", 1024), "{client}");
    assert_eq!((lines[1].status.as_str(), lines[1].bytes), ("404", 9));
    assert_eq!(lines[2].status, "ERR:timeout", "{client}");
    assert!(
        lines[2].ms >= 400 && lines[2].ms < 4000,
        "{client}: timed out near 0.5 s: {}",
        lines[2].ms
    );
    assert_eq!(lines[3].status, "ERR:refused", "{client}");
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
    for client in CLIENTS {
        a_thousand_urls_on(client);
    }
}

fn a_thousand_urls_on(client: &str) {
    let server = TestServer::start();
    let urls: Vec<String> = (0..1000).map(|i| server.url(&format!("/ok/{}", i % 50))).collect();
    let out = run(on_client(powerpool(["fetch", "--concurrency", "100"]).args(&urls), client));
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
    // Announced (Content-Length) and streamed (chunked, no length), each at and over the limit.
    let paths = ["/ok/1024", "/ok/1025", "/ok/10", "/chunked/1024", "/chunked/5000", "/ok/3"];
    let urls: Vec<String> = paths.iter().map(|p| server.url(p)).collect();
    for client in CLIENTS {
        for concurrency in ["1", "6"] {
            let args = ["fetch", "--max-body", "1K", "--concurrency", concurrency];
            let out = run(on_client(powerpool(args).args(&urls), client));
            assert_eq!(out.status.code(), Some(3), "{client}: two URLs failed");
            let lines = parse(&out.stdout);
            let statuses: Vec<&str> = lines.iter().map(|l| l.status.as_str()).collect();
            let expected = ["200", "ERR:too-large", "200", "200", "ERR:too-large", "200"];
            assert_eq!(statuses, expected, "{client}, concurrency {concurrency}");
            assert_eq!(lines[3].bytes, 1024, "{client}");
        }
    }
}

#[test]
fn redirects_are_followed_ten_times_at_most_on_both_paths() {
    let server = TestServer::start();
    let other = TestServer::start();
    let urls = [
        server.url("/redirect/1"),
        server.url("/redirect/10"),
        server.url("/redirect/11"),
        server.url(&format!("/goto/{}/ok/5", other.addr.port())),
        server.url(&format!("/goto/{}/redirect/3", other.addr.port())),
        server.url("/ok/2"),
    ];
    for client in CLIENTS {
        let out = run(on_client(powerpool(["fetch", "--concurrency", "2"]).args(&urls), client));
        assert_eq!(out.status.code(), Some(3), "{client}: one chain is too long");
        let lines = parse(&out.stdout);
        let got: Vec<(&str, u64)> = lines.iter().map(|l| (l.status.as_str(), l.bytes)).collect();
        let expected =
            [("200", 6), ("200", 6), ("ERR:redirects", 0), ("200", 5), ("200", 6), ("200", 2)];
        assert_eq!(got, expected, "{client}: the final answer's status and body");
        for (line, url) in lines.iter().zip(&urls) {
            assert_eq!(&line.url, url, "{client}: the URL asked for, not where it landed");
        }
    }
}

#[test]
fn a_body_shorter_than_its_content_length_is_a_body_error_and_the_rest_go_on() {
    let server = TestServer::start();
    let urls =
        [server.url("/ok/3"), server.url("/lie/500"), server.url("/ok/4"), server.url("/ok/5")];
    for client in CLIENTS {
        // One connection: the lying answer is read on the connection the others reuse.
        let out = run(on_client(powerpool(["fetch", "--concurrency", "1"]).args(&urls), client));
        assert_eq!(out.status.code(), Some(3), "{client}: one URL failed");
        let statuses: Vec<String> = parse(&out.stdout).into_iter().map(|l| l.status).collect();
        assert_eq!(statuses, ["200", "ERR:body", "200", "200"], "{client}");
    }
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
    for (client, concurrency) in CLIENTS.iter().flat_map(|c| [(c, "1"), (c, "20")]) {
        let args = ["fetch", "--concurrency", concurrency, "--from"];
        let out = run(on_client(powerpool(args).arg(&list), client));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("200 ")).collect();
        assert!(
            failed.is_empty(),
            "{client}, concurrency {concurrency}: {} failed: {failed:?}",
            failed.len()
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn urls_of_several_origins_and_https_mixed_come_out_in_order_and_alike_on_both_paths() {
    let (a, b) = (TestServer::start(), TestServer::start());
    // https to a plain-HTTP port goes to reqwest on either path, whose TLS handshake the
    // server never answers (it waits for a request head): a timeout.
    let tls = format!("https://127.0.0.1:{}/ok/1", a.addr.port());
    let urls: Vec<String> = (0..60)
        .map(|i| match i % 3 {
            0 => a.url(&format!("/ok/{i}")),
            1 => b.url(&format!("/ok/{i}")),
            _ if i == 20 => tls.clone(),
            _ => b.url(&format!("/redirect/{}", i % 4)),
        })
        .collect();
    let mut seen = Vec::new();
    for client in CLIENTS {
        let args = ["fetch", "--concurrency", "7", "--timeout", "1"];
        let out = run(on_client(powerpool(args).args(&urls), client));
        assert_eq!(out.status.code(), Some(3), "{client}: the https URL fails");
        let lines = parse(&out.stdout);
        assert_eq!(lines.len(), urls.len(), "{client}");
        for (i, (line, url)) in lines.iter().zip(&urls).enumerate() {
            assert_eq!(&line.url, url, "{client}: input order");
            if i == 20 {
                assert_eq!(line.status, "ERR:timeout", "{client}");
            } else {
                assert_eq!(line.status, "200", "{client}: {url}");
            }
        }
        seen.push(lines.into_iter().map(|l| (l.status, l.bytes)).collect::<Vec<_>>());
    }
    assert_eq!(seen[0], seen[1], "the same statuses and sizes on both paths");
}
