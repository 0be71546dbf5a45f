//! One GET on the lean path: the request on its origin's connection (opened, or opened again
//! when the server closed it), reqwest's redirect rule, `--max-body`, and the body handed to
//! its sink a piece at a time.

use super::http1::{target, Conn, Failure, Origin};
use super::lean::{Limits, Sink};
use hyper::body::{Body, Incoming};
use hyper::header::LOCATION;
use hyper::{Response, Uri};
use std::time::Duration;

/// Redirects followed before `ERR:redirects`, as reqwest's `Policy::limited(10)`.
const MAX_REDIRECTS: usize = 10;
/// The most of a redirect's body read to keep its connection; beyond, the connection is dropped.
const DRAIN_LIMIT: u64 = 64 << 10;

/// How a GET on the lean path ended, when it did not fail.
pub(crate) enum Ended {
    /// The final answer's status; its body went to the sink.
    Answered(u16),
    /// Redirected to an https URL: reqwest's to fetch.
    ToHttps(url::Url),
}

/// GETs `url` on `conn` (its origin's connection), following redirects; the final answer's
/// body goes to `sink`.
pub(crate) async fn follow<S: Sink>(
    limits: Limits,
    conn: &mut Option<Conn>,
    home: &Origin,
    first: &Uri,
    url: &url::Url,
    sink: &mut S,
    bytes: &mut u64,
) -> Result<Ended, Failure> {
    let mut away: Option<(Origin, Option<Conn>)> = None;
    let mut next: Option<url::Url> = None;
    for hop in 0..=MAX_REDIRECTS {
        let here = next.as_ref().unwrap_or(url);
        let (origin, target) = match &next {
            None => (home.clone(), first.clone()),
            Some(u) => match (Origin::of(u), target(u)) {
                (Some(origin), Some(target)) => (origin, target),
                _ if u.scheme() == "https" => return Ok(Ended::ToHttps(u.clone())),
                _ => return Err(Failure::Scheme(u.to_string())),
            },
        };
        let slot = if &origin == home {
            &mut *conn
        } else {
            if away.as_ref().is_some_and(|(o, _)| o != &origin) {
                away = None;
            }
            &mut away.get_or_insert_with(|| (origin.clone(), None)).1
        };
        let response = request(slot, &origin, &target, limits.timeout).await?;
        if let Some(location) = redirect(&response, here) {
            if hop == MAX_REDIRECTS {
                *slot = None;
                return Err(Failure::Redirects);
            }
            drain(slot, response.into_body()).await;
            next = Some(location);
            continue;
        }
        let status = response.status().as_u16();
        if response.body().size_hint().exact().is_some_and(|n| n > limits.max_body) {
            *slot = None;
            return Err(Failure::TooLarge);
        }
        let read = read_body(slot, response.into_body(), limits.max_body, sink, bytes).await;
        if read.is_err() {
            *slot = None;
        }
        return read.map(|()| Ended::Answered(status));
    }
    Err(Failure::Redirects)
}

/// Reads `body` into `sink`, within `max_body` bytes in all.
async fn read_body<S: Sink>(
    slot: &mut Option<Conn>,
    mut body: Incoming,
    max_body: u64,
    sink: &mut S,
    bytes: &mut u64,
) -> Result<(), Failure> {
    let Some(conn) = slot.as_mut() else { return Err(Failure::Other("request")) };
    while let Some(piece) = conn.piece(&mut body).await? {
        *bytes += piece.len() as u64;
        if *bytes > max_body {
            return Err(Failure::TooLarge);
        }
        sink.piece(piece).await;
    }
    Ok(())
}

/// Sends a GET on the connection in `slot`, opening one if there is none (or the server closed
/// it). A request that died on a reused connection before any answer goes once more on a new
/// one. On any failure the slot is left empty.
async fn request(
    slot: &mut Option<Conn>,
    origin: &Origin,
    target: &Uri,
    timeout: Duration,
) -> Result<Response<Incoming>, Failure> {
    let connect_timeout = timeout.min(Duration::from_secs(10));
    let reused = match slot.take() {
        Some(conn) if conn.is_open() => Some(conn),
        _ => None,
    };
    let was_reused = reused.is_some();
    let mut conn = match reused {
        Some(conn) => conn,
        None => Conn::open(origin, connect_timeout).await?,
    };
    let answer = match conn.get(target, origin).await {
        Err(err) if was_reused && err.died_before_answer() => {
            tracing::debug!("{target}: {err}; once more on a new connection");
            conn = Conn::open(origin, connect_timeout).await?;
            conn.get(target, origin).await
        }
        answer => answer,
    };
    if answer.is_ok() {
        *slot = Some(conn);
    }
    answer
}

/// Where a redirect answer sends us: reqwest's rule (301, 302, 303, 307, 308 with a Location
/// that resolves against the URL asked for); `None` for any other answer.
fn redirect(response: &Response<Incoming>, base: &url::Url) -> Option<url::Url> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    base.join(location).ok()
}

/// Reads and drops a redirect's body so that its connection can serve the next hop; a long or
/// broken one costs the connection instead.
async fn drain(slot: &mut Option<Conn>, mut body: Incoming) {
    let Some(conn) = slot.as_mut() else { return };
    let mut read = 0u64;
    loop {
        match conn.piece(&mut body).await {
            Ok(None) => return,
            Ok(Some(piece)) if read + piece.len() as u64 <= DRAIN_LIMIT => {
                read += piece.len() as u64;
            }
            _ => {
                *slot = None;
                return;
            }
        }
    }
}
