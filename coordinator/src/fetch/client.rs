//! The reqwest client: https, HTTP/2 (and every URL when forced, see `lean`); TLS by rustls
//! with the ring provider.
//!
//! Why this client: reqwest is the most used async HTTP client in Rust, with connection reuse,
//! keep-alive, redirects, timeouts and HTTP/2. Its default TLS backend (aws-lc) is a heavy C
//! build; rustls with ring builds in a fraction of the time, and certificates are always
//! verified (against the platform's roots).
//!
//! A kept-alive connection can die under a request: the server closed it as idle just as the
//! request went out (without `Connection: close`, which would have told us). The request then
//! fails before any byte of an answer, through no fault of the URL. Such a GET, idempotent, is
//! sent once more on a connection opened for it, as curl and browsers do.

use std::sync::Mutex;
use std::time::Duration;

/// A client like the last one [`build`] made but that keeps no idle connection, so each request
/// opens its own: where a request whose kept-alive connection died is sent again. Built on the
/// first such retry, for the settings of that last `build`.
static FRESH: Mutex<Option<(Duration, Option<reqwest::Client>)>> = Mutex::new(None);

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
    if let Ok(mut fresh) = FRESH.lock() {
        *fresh = Some((timeout, None));
    }
    client(concurrency, timeout)
}

fn client(idle_per_host: usize, timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; install ring's once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("powerpool/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::limited(10))
        .pool_max_idle_per_host(idle_per_host)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

/// The client for a second try on a new connection (see [`FRESH`]).
fn fresh_client() -> Option<reqwest::Client> {
    let mut fresh = FRESH.lock().ok()?;
    let (timeout, made) = fresh.as_mut()?;
    if made.is_none() {
        *made = client(0, *timeout).ok();
    }
    made.clone()
}

/// Whether a request died on its connection before any byte of an answer came: reset, closed,
/// or the connection already gone when it was written. Not a timeout, a refused connection, a
/// DNS or TLS failure: those a second try would only repeat.
fn died_before_answer(err: &reqwest::Error) -> bool {
    if err.is_timeout() || err.is_connect() || err.is_redirect() || err.is_status() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
            {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// A response whose body is being read, piece by piece, within a size limit.
#[derive(Debug)]
struct Download {
    response: reqwest::Response,
    max_body: u64,
    received: u64,
}

impl Download {
    /// Sends the GET; refuses at once a body announced longer than `max_body`.
    async fn start(
        client: &reqwest::Client,
        url: &url::Url,
        max_body: u64,
    ) -> Result<Download, &'static str> {
        let response = match client.get(url.clone()).send().await {
            Ok(response) => response,
            Err(err) if died_before_answer(&err) => {
                tracing::debug!("{url}: {err}; once more on a new connection");
                let retry = fresh_client().ok_or_else(|| classify(&err))?;
                retry.get(url.clone()).send().await.map_err(|e| classify(&e))?
            }
            Err(err) => return Err(classify(&err)),
        };
        if response.content_length().is_some_and(|n| n > max_body) {
            return Err("too-large");
        }
        Ok(Download { response, max_body, received: 0 })
    }

    fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// The next piece of body; `ERR:too-large` once more than `max_body` bytes arrived.
    async fn next_piece(&mut self) -> Result<Option<bytes::Bytes>, &'static str> {
        let piece = self.response.chunk().await.map_err(|e| classify(&e))?;
        self.received += piece.as_ref().map_or(0, |p| p.len() as u64);
        if self.received > self.max_body {
            return Err("too-large");
        }
        Ok(piece)
    }
}

/// GETs `url`, each piece of the body into `sink` as it arrives, counted in `bytes`; a body
/// longer than `max_body` bytes (announced or received) ends the request as `ERR:too-large`.
pub(crate) async fn get_into<S: super::lean::Sink>(
    client: &reqwest::Client,
    url: &url::Url,
    max_body: u64,
    sink: &mut S,
    bytes: &mut u64,
) -> Result<u16, &'static str> {
    let mut download = Download::start(client, url, max_body).await?;
    while let Some(piece) = download.next_piece().await? {
        *bytes += piece.len() as u64;
        sink.piece(piece).await;
    }
    Ok(download.status())
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
