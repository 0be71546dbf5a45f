//! The command line as typed: clap's derive types and the syntax-level parsers. `plan.rs` turns
//! these raw flags into a validated plan that the rest of the program trusts.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// A process pool: shards an integer range over worker processes and gathers the results in
/// order, while fetching URLs on the same async runtime.
#[derive(Debug, Parser)]
#[command(name = "powerpool", version, about, max_term_width = 100)]
pub struct Cli {
    /// More logs on stderr (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply TASK to every integer of a range in worker processes; print the results in order.
    Map(MapArgs),
    /// GET URLs concurrently; print one line per URL, in input order.
    Fetch(FetchArgs),
    /// List the built-in tasks.
    Tasks,
    /// Run as a worker process (started by powerpool itself).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    /// The task to apply (see `powerpool tasks`).
    pub task: String,
    /// Half-open input range START..END, like Python's range(START, END); any i64, negative too.
    #[arg(long, value_name = "START..END", value_parser = parse_range, allow_hyphen_values = true)]
    pub range: (i64, i64),
    /// Worker processes [default: the number of available cores].
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Inputs per chunk [default: automatic, see the README].
    #[arg(long, value_name = "N", value_parser = parse_chunk_size)]
    pub chunk_size: Option<u64>,
    /// Output format: decimal lines, an exact sum, or 16-byte little-endian integers.
    #[arg(long, value_enum, default_value_t = OutputFormat::Lines)]
    pub format: OutputFormat,
    /// Write the output to PATH (created only when the run succeeds) instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// GET this URL concurrently with the map and report it on stderr (repeatable).
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub fetch: Vec<url::Url>,
    /// Timeout for each --fetch, in seconds.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: f64,
    /// Worker executable to launch instead of this program's own worker mode.
    #[arg(long, value_name = "PATH")]
    pub worker_cmd: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The URLs to GET (http or https).
    #[arg(required = true, value_name = "URL", value_parser = parse_url)]
    pub urls: Vec<url::Url>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value = "100", value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// Timeout for each request, in seconds (connect, headers and body together).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One decimal result per line.
    Lines,
    /// One line: the exact sum of all results.
    Sum,
    /// Each result as a 16-byte little-endian two's-complement integer.
    Bin,
}

/// The most worker processes one run may start.
pub const MAX_WORKERS: usize = 512;

/// Parses `START..END`: two i64 in decimal (an optional sign, digits, `_` between digits).
///
/// ```
/// use powerpool::cli::parse_range;
/// assert_eq!(parse_range("-5..1_000"), Ok((-5, 1000)));
/// assert!(parse_range("5..").is_err());
/// ```
pub fn parse_range(text: &str) -> Result<(i64, i64), String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| "expected START..END, for example 0..100000".to_owned())?;
    Ok((parse_i64("START", start)?, parse_i64("END", end)?))
}

fn parse_i64(what: &str, text: &str) -> Result<i64, String> {
    if text.is_empty() {
        return Err(format!("{what} is missing (expected START..END, for example 0..100000)"));
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(format!("{what} '{text}' is not an integer"));
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    clean.parse().map_err(|_| {
        format!("{what} '{text}' is outside the 64-bit range {}..={}", i64::MIN, i64::MAX)
    })
}

fn parse_count(text: &str, max: u64) -> Result<u64, String> {
    let n: u64 = text.parse().map_err(|_| format!("'{text}' is not a positive integer"))?;
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    if n > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(n)
}

fn parse_workers(text: &str) -> Result<usize, String> {
    parse_count(text, MAX_WORKERS as u64).map(|n| n as usize)
}

fn parse_chunk_size(text: &str) -> Result<u64, String> {
    parse_count(text, powerpool_shared::MAX_CHUNK_ITEMS)
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    parse_count(text, 100_000).map(|n| n as usize)
}

fn parse_secs(text: &str) -> Result<f64, String> {
    let secs: f64 = text.parse().map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err("must be more than 0 and at most 86400 seconds".to_owned());
    }
    Ok(secs)
}

/// Parses an absolute http or https URL.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!("unsupported scheme '{other}' (only http and https)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_signs_and_edges() {
        assert_eq!(parse_range("0..100000"), Ok((0, 100000)));
        assert_eq!(parse_range("-5..-1"), Ok((-5, -1)));
        assert_eq!(parse_range("+1..1_000"), Ok((1, 1000)));
        assert_eq!(
            parse_range("-9223372036854775808..9223372036854775807"),
            Ok((i64::MIN, i64::MAX))
        );
        for bad in [
            "5..",
            "..5",
            "a..b",
            "5",
            "1...2",
            "9223372036854775808..0",
            "1..2..3",
            "-..1",
            "_1..2",
            "1e3..2",
        ] {
            assert!(parse_range(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn counts_refuse_zero_and_excess() {
        assert_eq!(parse_workers("4"), Ok(4));
        assert!(parse_workers("0").is_err());
        assert!(parse_workers("513").is_err());
        assert!(parse_workers("-1").is_err());
        assert!(parse_chunk_size("0").is_err());
        assert!(parse_concurrency("0").is_err());
    }

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        assert!(parse_url("https://example.com").is_ok());
        assert!(parse_url("ftp://example.com").is_err());
        assert!(parse_url("file:///etc/passwd").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("http://").is_err());
    }
}
