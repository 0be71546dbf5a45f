//! One HTTP/1.1 connection on hyper's connection-level API, driven by the task that uses it.
//!
//! hyper's `client::conn::http1` gives a request sender and a connection future that does the
//! I/O. The usual way spawns the connection future as a task of its own; here the task that
//! sends the requests polls it too ([`Conn::drive`]), so a request, its answer and its body
//! never cross tasks or threads. No pool, no checkout: the caller owns the connection.

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, ACCEPT, HOST, USER_AGENT};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Why a request on the lean path failed; [`Failure::reason`] is the word `fetch` prints.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("cannot resolve the host: {0}")]
    Dns(std::io::Error),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("the body is longer than --max-body")]
    TooLarge,
    #[error("too many redirects")]
    Redirects,
    #[error("redirected to {0}, which is not http or https")]
    Scheme(String),
    #[error("{0}")]
    Other(&'static str),
}

impl Failure {
    /// The one-word reason, the same words as the reqwest path's for the same failures.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::Dns(_) => "dns",
            Failure::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
            Failure::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout",
            Failure::Connect(_) => "connect",
            Failure::Timeout => "timeout",
            Failure::TooLarge => "too-large",
            Failure::Redirects => "redirects",
            Failure::Scheme(_) => "request",
            Failure::Other(reason) => reason,
            Failure::Http(err) => http_reason(err),
        }
    }

    /// Whether a request died on a reused connection before any byte of an answer: the
    /// server had closed it as idle. Worth one more try on a new connection.
    pub(crate) fn died_before_answer(&self) -> bool {
        let Failure::Http(err) = self else { return false };
        if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
            return true;
        }
        io_kind(err).is_some_and(|kind| {
            use std::io::ErrorKind::*;
            matches!(kind, ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
        })
    }
}

fn io_kind(err: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

fn http_reason(err: &hyper::Error) -> &'static str {
    match io_kind(err) {
        Some(std::io::ErrorKind::ConnectionReset) => "reset",
        Some(std::io::ErrorKind::TimedOut) => "timeout",
        _ if err.is_timeout() => "timeout",
        _ if err.is_parse() || err.is_user() => "request",
        _ => "body",
    }
}

/// Where a connection goes: host and port, and the `Host` header for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub host: url::Host<String>,
    pub port: u16,
    pub authority: HeaderValue,
}

impl Origin {
    /// The origin of an `http` URL; `None` for any other scheme, a URL without a host, or one
    /// with credentials (reqwest sends those as basic authentication; this path does not).
    pub(crate) fn of(url: &url::Url) -> Option<Origin> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host()?.to_owned();
        let port = url.port_or_known_default()?;
        let text = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str()?),
            None => url.host_str()?.to_owned(),
        };
        let authority = HeaderValue::from_str(&text).ok()?;
        Some(Origin { host, port, authority })
    }
}

/// The request target of `url` on its origin's connection: path and query.
pub(crate) fn target(url: &url::Url) -> Option<Uri> {
    Uri::try_from(&url[url::Position::BeforePath..url::Position::AfterQuery]).ok()
}

type Driver = Pin<Box<dyn Future<Output = Infallible> + Send>>;

/// One open connection: its request sender and the future that does its I/O.
pub(crate) struct Conn {
    send: http1::SendRequest<Empty<Bytes>>,
    driver: Driver,
}

impl Conn {
    /// Opens a connection to `origin`, within `timeout`.
    pub(crate) async fn open(origin: &Origin, timeout: Duration) -> Result<Conn, Failure> {
        let connect = async {
            let addrs: Vec<std::net::SocketAddr> = match &origin.host {
                url::Host::Ipv4(ip) => vec![(*ip, origin.port).into()],
                url::Host::Ipv6(ip) => vec![(*ip, origin.port).into()],
                url::Host::Domain(name) => tokio::net::lookup_host((name.as_str(), origin.port))
                    .await
                    .map_err(Failure::Dns)?
                    .collect(),
            };
            let mut last = std::io::Error::other("no address");
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(err) => last = err,
                }
            }
            Err(Failure::Connect(last))
        };
        let stream =
            tokio::time::timeout(timeout, connect).await.map_err(|_| Failure::Timeout)??;
        let _ = stream.set_nodelay(true);
        let (send, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        let driver: Driver = Box::pin(async move {
            let _ = conn.await;
            std::future::pending().await
        });
        Ok(Conn { send, driver })
    }

    /// Runs `f` while the connection's I/O goes on.
    pub(crate) async fn drive<T>(&mut self, f: impl Future<Output = T>) -> T {
        tokio::select! {
            biased;
            never = self.driver.as_mut() => match never {},
            out = f => out,
        }
    }

    /// Whether the connection can take another request (the server has not closed it).
    pub(crate) fn is_open(&self) -> bool {
        !self.send.is_closed()
    }

    /// Sends a GET for `target` and waits for the answer's head.
    pub(crate) async fn get(
        &mut self,
        target: &Uri,
        origin: &Origin,
    ) -> Result<Response<Incoming>, Failure> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = target.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, origin.authority.clone());
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("powerpool/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        let send = &mut self.send;
        let driver = &mut self.driver;
        let answer = async {
            send.ready().await?;
            send.send_request(request).await
        };
        let answer = tokio::select! {
            biased;
            never = driver.as_mut() => match never {},
            out = answer => out,
        };
        Ok(answer?)
    }

    /// The next piece of `body`: `None` at its end.
    pub(crate) async fn piece(&mut self, body: &mut Incoming) -> Result<Option<Bytes>, Failure> {
        loop {
            let frame = self.drive(std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)));
            match frame.await {
                None => return Ok(None),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Ok(Some(data)),
                    Err(_trailers) => continue,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).expect("a URL")
    }

    #[test]
    fn origins_and_targets_are_read_once_from_the_url() {
        let u = url("http://Example.COM/a/b?x=1&y#frag");
        let origin = Origin::of(&u).expect("http");
        assert_eq!((origin.authority.to_str().ok(), origin.port), (Some("example.com"), 80));
        assert_eq!(target(&u).expect("a target").to_string(), "/a/b?x=1&y");
        let u = url("http://127.0.0.1:8080");
        let origin = Origin::of(&u).expect("http");
        assert_eq!((origin.authority.to_str().ok(), origin.port), (Some("127.0.0.1:8080"), 8080));
        assert_eq!(target(&u).expect("a target").to_string(), "/");
        let v6 = Origin::of(&url("http://[::1]:81/")).expect("http");
        assert_eq!(v6.authority.to_str().ok(), Some("[::1]:81"));
    }

    #[test]
    fn https_and_credentials_are_left_to_reqwest() {
        assert_eq!(Origin::of(&url("https://example.com/")), None);
        assert_eq!(Origin::of(&url("http://user:pw@example.com/")), None);
        assert_eq!(Origin::of(&url("http://user@example.com/")), None);
    }

    #[test]
    fn failures_read_as_the_reqwest_paths_words() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (Failure::Connect(Error::from(ErrorKind::ConnectionRefused)), "refused"),
            (Failure::Connect(Error::from(ErrorKind::TimedOut)), "timeout"),
            (Failure::Connect(Error::from(ErrorKind::HostUnreachable)), "connect"),
            (Failure::Dns(Error::other("no such host")), "dns"),
            (Failure::Timeout, "timeout"),
            (Failure::TooLarge, "too-large"),
            (Failure::Redirects, "redirects"),
            (Failure::Scheme("ftp://x/".into()), "request"),
        ];
        for (failure, word) in cases {
            assert_eq!(failure.reason(), word, "{failure}");
            assert!(!failure.died_before_answer(), "{failure}: no second try");
        }
    }
}
