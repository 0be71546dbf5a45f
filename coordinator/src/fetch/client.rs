//! The HTTP client: reqwest on hyper, TLS by rustls with the ring provider.
//!
//! Why this client: reqwest is the most used async HTTP client in Rust, with connection reuse,
//! keep-alive, redirects, timeouts and HTTP/2. Its default TLS backend (aws-lc) is a heavy C
//! build; rustls with ring builds in a fraction of the time, and certificates are always
//! verified (against the platform's roots).

use std::time::{Duration, Instant};

/// How one GET ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    pub url: url::Url,
    /// The HTTP status, or a short reason the request failed in transport.
    pub status: Result<u16, &'static str>,
    /// Body bytes received.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl FetchOutcome {
    /// Whether the server answered 2xx and the body arrived whole.
    pub fn is_success(&self) -> bool {
        matches!(self.status, Ok(code) if (200..300).contains(&code))
    }

    /// `<status> <bytes> <milliseconds> <url>`; `ERR:<reason>` in place of a status for a
    /// transport failure.
    pub fn line(&self) -> String {
        let status = match self.status {
            Ok(code) => code.to_string(),
            Err(reason) => format!("ERR:{reason}"),
        };
        format!("{status} {} {} {}", self.bytes, self.elapsed.as_millis(), self.url)
    }
}

/// Builds a client for `concurrency` requests in flight, each limited to `timeout` in all.
pub fn build(concurrency: usize, timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; install ring's once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("powerpool/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::limited(10))
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

/// A response whose body is being read, piece by piece, within a size limit.
#[derive(Debug)]
pub(crate) struct Download {
    response: reqwest::Response,
    max_body: u64,
    received: u64,
}

impl Download {
    /// Sends the GET; refuses at once a body announced longer than `max_body`.
    pub(crate) async fn start(
        client: &reqwest::Client,
        url: &url::Url,
        max_body: u64,
    ) -> Result<Download, &'static str> {
        let response = client.get(url.clone()).send().await.map_err(|e| classify(&e))?;
        if response.content_length().is_some_and(|n| n > max_body) {
            return Err("too-large");
        }
        Ok(Download { response, max_body, received: 0 })
    }

    pub(crate) fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// The next piece of body; `ERR:too-large` once more than `max_body` bytes arrived.
    pub(crate) async fn next_piece(&mut self) -> Result<Option<bytes::Bytes>, &'static str> {
        let piece = self.response.chunk().await.map_err(|e| classify(&e))?;
        self.received += piece.as_ref().map_or(0, |p| p.len() as u64);
        if self.received > self.max_body {
            return Err("too-large");
        }
        Ok(piece)
    }
}

/// GETs `url`, reading (and counting, not keeping) the whole body; a body longer than
/// `max_body` bytes (announced or received) ends the request as `ERR:too-large`.
pub async fn fetch_one(client: &reqwest::Client, url: url::Url, max_body: u64) -> FetchOutcome {
    let start = Instant::now();
    let mut bytes = 0u64;
    let status = async {
        let mut download = Download::start(client, &url, max_body).await?;
        while let Some(piece) = download.next_piece().await? {
            bytes += piece.len() as u64;
        }
        Ok(download.status())
    }
    .await;
    FetchOutcome { url, status, bytes, elapsed: start.elapsed() }
}

/// A one-word reason for a transport failure.
fn classify(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        return "timeout";
    }
    if err.is_redirect() {
        return "redirects";
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "refused",
                std::io::ErrorKind::ConnectionReset => return "reset",
                std::io::ErrorKind::TimedOut => return "timeout",
                _ => {}
            }
        }
        let text = e.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return "dns";
        }
        if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
            return "tls";
        }
        source = e.source();
    }
    if err.is_connect() {
        "connect"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "request"
    }
}
