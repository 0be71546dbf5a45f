//! What users see besides results: the JSON report and joblog, shell completions and the man
//! page, and the progress bar, which must appear on a terminal's stderr and never in stdout.

use powerpool_tests::http::TestServer;
use powerpool_tests::*;
use serde_json::Value;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("written")).expect("valid JSON")
}

#[test]
fn the_report_counts_every_item_written_however_soon_the_workers_exit() {
    // The workers exit behind their last units, so the run's end can come before the output
    // thread has taken the last results: the count is read after it has written them.
    let dir = TempDir::new("report-count");
    let report = dir.0.join("report.json");
    for _ in 0..25 {
        let mut cmd = powerpool(["map", "square", "--range", "0..100000", "--workers", "4"]);
        cmd.arg("--report").arg(&report);
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r = json(&report);
        assert_eq!(r["items_written"].as_u64(), Some(100_000), "{r}");
    }
}

#[test]
fn the_map_report_parses_and_its_counts_match() {
    let dir = TempDir::new("report");
    let report = dir.0.join("report.json");
    let joblog = dir.0.join("joblog.jsonl");
    let mut cmd = powerpool(["map", "square", "--range", "-50..950", "--workers", "3"]);
    cmd.args(["--chunk-size", "100", "--report"]).arg(&report).arg("--joblog").arg(&joblog);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, squares_lines(-50, 950));
    let r = json(&report);
    assert_eq!(r["command"], "map");
    assert_eq!(r["task"], "square");
    assert_eq!(r["range"], serde_json::json!([-50, 950]));
    assert_eq!((r["workers"].as_u64(), r["items"].as_u64()), (Some(3), Some(1000)));
    assert_eq!((r["items_written"].as_u64(), r["chunks"].as_u64()), (Some(1000), Some(10)));
    assert_eq!((r["restarts"].as_u64(), r["retries"].as_u64()), (Some(0), Some(0)));
    assert_eq!((r["timeouts"].as_u64(), r["failed_count"].as_u64()), (Some(0), Some(0)));
    assert_eq!((r["outcome"].as_str(), r["exit_code"].as_u64()), (Some("complete"), Some(0)));
    assert!(r["elapsed_s"].as_f64().is_some_and(|s| s > 0.0));
    assert!(r["items_per_s"].as_f64().is_some_and(|s| s > 0.0));
    let lines: Vec<Value> = std::fs::read_to_string(&joblog)
        .expect("joblog")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 10, "one attempt per chunk");
    let mut firsts: Vec<i64> = lines.iter().map(|l| l["first"].as_i64().expect("first")).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..10).map(|c| -50 + 100 * c).collect::<Vec<_>>());
    for l in &lines {
        assert_eq!(l["outcome"], "done");
        assert_eq!(l["attempt"], 1);
        assert_eq!(l["end"].as_i64().unwrap() - l["first"].as_i64().unwrap(), 100);
        assert!(l["pid"].as_u64().is_some_and(|p| p > 0));
        assert!(l["duration_s"].as_f64().is_some());
    }
}

#[test]
fn reports_and_joblogs_record_failures() {
    let dir = TempDir::new("report-fail");
    let report = dir.0.join("report.json");
    let joblog = dir.0.join("joblog.jsonl");
    let mut cmd = powerpool(["map", "fault-segv@37", "--range", "0..100", "--workers", "2"]);
    cmd.args(["--chunk-size", "10", "--retries", "0", "--keep-going", "--report"])
        .arg(&report)
        .arg("--joblog")
        .arg(&joblog)
        .env("POWERPOOL_TEST_TASKS", "1");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(5));
    let r = json(&report);
    assert_eq!((r["outcome"].as_str(), r["exit_code"].as_u64()), (Some("partial"), Some(5)));
    assert_eq!(r["failed_count"], 1);
    assert_eq!(r["failed_items"][0]["item"], 37);
    assert!(r["failed_items"][0]["reason"].as_str().unwrap().contains("SIGSEGV"));
    // Chunk 30..40, retries 0: split to 30..35, 35..40, then 35..37, 37..40, then 37..38.
    let restarts = r["restarts"].as_u64().unwrap();
    let log = std::fs::read_to_string(&joblog).expect("joblog");
    let died = log.lines().filter(|l| l.contains("\"outcome\":\"died: killed by SIGSEGV")).count();
    assert_eq!(died as u64, restarts, "every worker death is one died attempt:\n{log}");
    assert!(log.contains("\"first\":37,\"end\":38"), "{log}");

    let stopped = dir.0.join("stopped.json");
    let mut cmd = powerpool(["map", "fault-panic@5", "--range", "0..100", "--report"]);
    let out = run(cmd.arg(&stopped).env("POWERPOOL_TEST_TASKS", "1"));
    assert_eq!(out.status.code(), Some(4));
    let r = json(&stopped);
    assert_eq!((r["outcome"].as_str(), r["exit_code"].as_u64()), (Some("failed"), Some(4)));
    assert_eq!(r["items_written"], 5, "the results before input 5");
    assert!(r["error"].as_str().unwrap().contains("input 5 failed"));
}

#[test]
fn the_fetch_report_counts_statuses_and_latencies() {
    let server = TestServer::start();
    let dir = TempDir::new("fetch-report");
    let report = dir.0.join("fetch.json");
    let urls = [server.url("/ok/10"), server.url("/ok/20"), server.url("/missing")];
    let out = run(powerpool(["fetch", "--report"]).arg(&report).args(&urls));
    assert_eq!(out.status.code(), Some(3));
    let r = json(&report);
    assert_eq!(
        (r["urls"].as_u64(), r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(r["status_counts"], serde_json::json!({"200": 2, "404": 1}));
    assert_eq!(r["bytes"], 10 + 20 + 9);
    let l = &r["latency_ms"];
    let (p50, p99, max) =
        (l["p50"].as_f64().unwrap(), l["p99"].as_f64().unwrap(), l["max"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{l}");
}

#[test]
fn completions_for_every_shell_and_a_man_page() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(&mut powerpool(["completions", shell]));
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("powerpool") && text.contains("workers"), "{shell}: {text:.200}");
    }
    assert_usage_error(&run(&mut powerpool(["completions", "tcsh"])), "an unknown shell");
    let man = run(&mut powerpool(["man"]));
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH powerpool 1") && text.contains("SUBCOMMANDS"), "{text:.300}");
}

/// Runs `command` under a pseudo-terminal (util-linux `script`), so that its stderr is a
/// terminal; returns what the terminal showed.
fn on_a_terminal(command: &str) -> String {
    let out = run(std::process::Command::new("script").args(["-qefc", command, "/dev/null"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_progress_bar_shows_on_a_terminal_and_never_in_stdout() {
    let dir = TempDir::new("tty");
    let results = dir.0.join("out.txt");
    let pp = bin("powerpool");
    let command = format!(
        "POWERPOOL_TEST_TASKS=1 {} map slow-square --range 0..1200 --workers 2 --chunk-size 20 > {}",
        pp.display(),
        results.display()
    );
    let screen = on_a_terminal(&command);
    assert!(screen.contains("items"), "no progress bar on the terminal: {screen:?}");
    assert_eq!(std::fs::read(&results).expect("results"), squares_lines(0, 1200));
    // -q: nothing on the terminal at all.
    let quiet = on_a_terminal(&command.replace(" map ", " -q map "));
    assert!(!quiet.contains("items"), "a bar despite -q: {quiet:?}");
    // Not a terminal: no bar either (stderr piped).
    let mut cmd = powerpool(["map", "slow-square", "--range", "0..300", "--chunk-size", "20"]);
    let out = run(cmd.env("POWERPOOL_TEST_TASKS", "1"));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
