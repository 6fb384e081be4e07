//! WebSockets: the feed client a deployment reads bars from, and the replay
//! server (`palisade feed replay`) that plays a bar file to such clients at
//! N× real time.
//!
//! The client hands over each text message as it arrives, with the instant
//! it arrived (for feed lag), and reconnects with capped exponential
//! backoff; asking a Palisade feed for the bars `since` the last stored one
//! on each (re)connect is how nothing is missed or repeated across a
//! disconnect. It does not parse messages ([`crate::schema`]) or check bars
//! ([`crate::sequencer`]). `ws://` and `wss://` ([`crate::tls`]): the
//! replay server serves `wss://` when given a certificate and its key.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use palisade_backtest::Dataset;
use palisade_host_api::Bar;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{http, Message as WsMessage};
use tokio_tungstenite::{Connector, WebSocketStream};

use crate::schema::{bar_binance_json, bar_json, FeedBar, Format};

/// The first reconnect waits this long; each failure doubles it.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between reconnects.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection attempt (TCP and WebSocket handshake) gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection quiet this long gets a ping: a feed of daily bars is quiet
/// for a day, and a half-open TCP connection (the feed's host gone without
/// a FIN) would be quiet for ever.
pub const PING_AFTER: Duration = Duration::from_secs(15);
/// A connection that sends nothing this long after a ping, not even the
/// pong, is dropped and the client reconnects.
pub const PONG_WITHIN: Duration = Duration::from_secs(15);

/// What the client tells its reader.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedEvent {
    /// A connection is up; `url` is the one used (with `since`).
    Connected { url: String },
    /// One message, text as received, and when it was received.
    Message { text: String, received: Instant },
    /// The connection went down, or an attempt failed; the client retries.
    Disconnected(String),
}

/// Where and how the client connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `ws://host:port/path?query`, or `wss://…` over TLS.
    pub url: String,
    /// Append `since=<last stored ts>` to the query on each (re)connect;
    /// Palisade feeds (the replay server) resume from it.
    pub resume: bool,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// Quiet this long, the connection gets a ping ([`PING_AFTER`]).
    pub ping_after: Duration,
    /// ... and is dropped if nothing comes back within this ([`PONG_WITHIN`]).
    pub pong_within: Duration,
    /// What a `wss://` server's certificate is checked against; `None`
    /// for [`crate::tls::client_config`] (the compiled-in roots and the host's).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    /// Options for a feed speaking `format`: resuming with `since` for
    /// Palisade's format (Binance's servers know no such parameter), the
    /// default backoff and timeout.
    pub fn new(url: impl Into<String>, format: Format) -> ClientOptions {
        ClientOptions {
            url: url.into(),
            resume: format == Format::Palisade,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            connect_timeout: CONNECT_TIMEOUT,
            ping_after: PING_AFTER,
            pong_within: PONG_WITHIN,
            tls: None,
        }
    }
}

/// Why the client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("feed url `{url}`: {problem}")]
    Url { url: String, problem: String },
}

/// Reads a feed until `stop` turns true (or its sender is dropped) or `tx`'s
/// reader goes away, reconnecting whenever the connection drops. `since`
/// gives the last stored timestamp at each (re)connect.
pub async fn run_client(
    options: ClientOptions,
    since: impl Fn() -> Option<i64>,
    tx: mpsc::Sender<FeedEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    check_url(&options.url)?;
    let tls = options.tls.clone().unwrap_or_else(crate::tls::client_config);
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
    while !*stop.borrow() {
        let url = match (options.resume, since()) {
            (true, Some(ts)) => with_since(&options.url, ts),
            _ => options.url.clone(),
        };
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(options.connect_timeout, tokio_tungstenite::connect_async_tls_with_config(url.as_str(), Some(client_config()), true, Some(Connector::Rustls(tls.clone())))) => attempt,
            () = stopped(&mut stop) => return Ok(()),
        };
        let reason = match attempt {
            Ok(Ok((ws, _))) => {
                backoff.reset();
                if tx.send(FeedEvent::Connected { url: url.clone() }).await.is_err() {
                    return Ok(());
                }
                match pump(ws, &tx, &mut stop, &options).await {
                    Pumped::Stopped => return Ok(()),
                    Pumped::Lost(reason) => reason,
                }
            }
            Ok(Err(error)) => format!("cannot connect to {}: {error}", redacted(&url)),
            Err(_) => format!(
                "cannot connect to {}: no answer in {:?}",
                redacted(&url),
                options.connect_timeout
            ),
        };
        if tx.send(FeedEvent::Disconnected(reason)).await.is_err() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = stopped(&mut stop) => return Ok(()),
        }
    }
    Ok(())
}

/// The largest message or frame a feed may send: a bar is a few hundred
/// bytes; a larger message is an error that drops the connection.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Refuses a URL the client could never connect to.
pub fn check_url(url: &str) -> Result<(), ClientError> {
    let bad = |problem: String| ClientError::Url {
        url: crate::clipped(url).into_owned(),
        problem,
    };
    if !url.starts_with("ws://") && !url.starts_with("wss://") {
        return Err(bad("expected a ws:// or wss:// url".to_owned()));
    }
    let request = url.into_client_request().map_err(|e| bad(e.to_string()))?;
    let uri = request.uri();
    // `host:99999` parses with no port at all, and would connect to the
    // scheme's default.
    let authority = uri.authority().map_or("", |a| a.as_str());
    if crate::port_unreadable(authority, uri.port_u16()) || uri.port_u16() == Some(0) {
        return Err(bad(format!("`{}` has no valid port", crate::clipped(authority))));
    }
    if url.starts_with("wss://") {
        crate::tls::server_name(uri.host().unwrap_or_default()).map_err(bad)?;
    }
    Ok(())
}

/// `url` without its query, fragment and user name: what an error that an
/// API may show says of it (a token in the query stays out of statuses).
pub fn redacted(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// `url` with its `since` query parameter set to `since` (other parameters kept).
pub fn with_since(url: &str, since: i64) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    // `ws://host:port` has no path: the query needs one (`ws://host:port?q`
    // would read `port?q` as the port).
    let rooted;
    let path = match path.split_once("://") {
        Some((_, rest)) if !rest.contains('/') => {
            rooted = format!("{path}/");
            rooted.as_str()
        }
        _ => path,
    };
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("since"))
        .map(str::to_owned)
        .collect();
    params.push(format!("since={since}"));
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Resolves when `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can stop us any more, so stop.
    let _ = stop.wait_for(|&s| s).await;
}

/// How a connection's reading ended.
enum Pumped {
    /// Asked to stop (or the reader went away): the caller returns.
    Stopped,
    /// The connection was lost; the caller reconnects.
    Lost(String),
}

/// Forwards one connection's messages until it ends or the client stops.
/// Pings are answered by tungstenite as it reads; binary frames are passed
/// on as (lossy) UTF-8 text, which a JSON feed's parser then judges. A
/// connection quiet for `ping_after` gets a ping, and is dropped when
/// nothing at all comes back within `pong_within` of it.
async fn pump<S>(
    mut ws: WebSocketStream<S>,
    tx: &mpsc::Sender<FeedEvent>,
    stop: &mut watch::Receiver<bool>,
    options: &ClientOptions,
) -> Pumped
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut heard = tokio::time::Instant::now();
    let mut pinged = false;
    loop {
        let quiet = if pinged {
            options.ping_after + options.pong_within
        } else {
            options.ping_after
        };
        let message = tokio::select! {
            message = ws.next() => message,
            () = tokio::time::sleep_until(heard + quiet) => {
                if pinged {
                    let _ = ws.close(None).await;
                    return Pumped::Lost(format!(
                        "the feed sent nothing for {:?}, not even the pong to a ping",
                        quiet
                    ));
                }
                if let Err(error) = ws.send(WsMessage::Ping(Default::default())).await {
                    return Pumped::Lost(format!("connection lost: {error}"));
                }
                pinged = true;
                continue;
            }
            () = stopped(stop) => {
                let _ = ws.close(None).await;
                return Pumped::Stopped;
            }
        };
        heard = tokio::time::Instant::now();
        pinged = false;
        let received = Instant::now();
        let text = match message {
            None => return Pumped::Lost("connection closed".to_owned()),
            Some(Err(error)) => return Pumped::Lost(format!("connection lost: {error}")),
            Some(Ok(WsMessage::Close(frame))) => return Pumped::Lost(closed_reason(frame)),
            Some(Ok(WsMessage::Text(text))) => text.as_str().to_owned(),
            Some(Ok(WsMessage::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            Some(Ok(_)) => continue,
        };
        if tx.send(FeedEvent::Message { text, received }).await.is_err() {
            let _ = ws.close(None).await;
            return Pumped::Stopped;
        }
    }
}

fn closed_reason(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(frame) if !frame.reason.is_empty() => {
            format!("server closed the connection ({}: {})", frame.code, frame.reason)
        }
        Some(frame) => format!("server closed the connection ({})", frame.code),
        None => "server closed the connection".to_owned(),
    }
}

/// Capped exponential backoff.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; the one after is twice as long, up to the cap.
    fn next_wait(&mut self) -> Duration {
        let wait = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// How the replay server plays its data.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// N× real time: bars `d` seconds apart are sent `d / speed` seconds
    /// apart; 0 sends as fast as the connection takes them.
    pub speed: f64,
    pub format: Format,
    /// The bar interval written into Binance klines (their close time);
    /// `None` takes the smallest step between the data's timestamps.
    pub interval_secs: Option<i64>,
    /// Serve `wss://` with this certificate and key
    /// ([`crate::tls::server_config`]); `None` serves `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why the replay server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("speed {0} is not a finite number >= 0")]
    Speed(f64),
    #[error("interval {0} s is not > 0")]
    Interval(i64),
}

/// Serves `data` to every WebSocket client of `listener` until `stop`
/// turns true (or its sender is dropped), then closes its connections.
///
/// Each connection gets the bars after its `since` query parameter (unix
/// seconds or RFC 3339; all bars without it), in order, bars of one
/// timestamp together, paced by `speed`; then it stays open, answering
/// pings, until the client or `stop` closes it. `?speed=` and
/// `?format=palisade|binance` override the options per connection. Each
/// bar's `seq` is its position in `data` (from 1), the same on every
/// connection.
pub async fn serve_replay(
    listener: TcpListener,
    data: Arc<Dataset>,
    options: ReplayOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ReplayError> {
    check_speed(options.speed).map_err(|_| ReplayError::Speed(options.speed))?;
    let interval = match options.interval_secs {
        Some(i) if i <= 0 => return Err(ReplayError::Interval(i)),
        Some(i) => i,
        None => infer_interval(&data),
    };
    let shared = Arc::new(Served {
        data,
        options,
        interval,
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (shared, stop) = (shared.clone(), stop.clone());
                connections.spawn(async move {
                    if let Err(error) = serve_connection(stream, &shared, stop).await {
                        tracing::debug!(%peer, %error, "replay connection ended");
                    }
                });
            }
            // Out of file descriptors and the like: wait rather than spin.
            Err(error) => {
                tracing::warn!(%error, "replay server cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// What every connection of one replay server shares.
struct Served {
    data: Arc<Dataset>,
    options: ReplayOptions,
    interval: i64,
}

/// One connection's plan: its query applied over the server's options.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    since: Option<i64>,
    speed: f64,
    format: Format,
}

/// The smallest step between consecutive timestamps (60 s for a single one).
fn infer_interval(data: &Dataset) -> i64 {
    let bars = data.bars();
    bars.windows(2)
        .map(|w| w[1].ts - w[0].ts)
        .filter(|&d| d > 0)
        .min()
        .unwrap_or(60)
}

fn check_speed(speed: f64) -> Result<f64, String> {
    if speed.is_finite() && speed >= 0.0 {
        Ok(speed)
    } else {
        Err(format!("speed {speed} is not a finite number >= 0"))
    }
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// How long a client has to send its whole request head (and the server
/// to answer it).
const REQUEST_HEAD_WITHIN: Duration = Duration::from_secs(5);

/// Answers one TCP connection: 426 without a WebSocket upgrade (plain
/// `ws://` only: over TLS the request is not seen before the handshake),
/// 400 for a bad query, else the replay.
async fn serve_connection(
    mut stream: TcpStream,
    served: &Served,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    if let Some(tls) = &served.options.tls {
        let accept = tokio_rustls::TlsAcceptor::from(tls.clone()).accept(stream);
        let stream = tokio::time::timeout(TLS_HANDSHAKE_WITHIN, accept)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in 10 s"))??;
        return handshake_and_replay(stream, served, stop).await;
    }
    if !wants_upgrade(&stream).await? {
        return refuse_plain_http(&mut stream).await;
    }
    handshake_and_replay(stream, served, stop).await
}

/// The WebSocket handshake (its query read into a plan), then the replay.
async fn handshake_and_replay<S>(stream: S, served: &Served, stop: watch::Receiver<bool>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut plan = None;
    // The error type is tungstenite's callback contract, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        match plan_for(request.uri().query(), &served.options) {
            Ok(p) => {
                plan = Some(p);
                Ok(response)
            }
            Err(problem) => Err(bad_request(problem)),
        }
    };
    // A client that stalls inside its request head is dropped (over TLS
    // nothing was peeked: this is the only bound there).
    let ws = tokio::time::timeout(
        REQUEST_HEAD_WITHIN,
        tokio_tungstenite::accept_hdr_async(stream, callback),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no WebSocket handshake in 5 s"))?
    .map_err(io::Error::other)?;
    let plan = plan.expect("the handshake succeeded, so the query was read");
    replay(ws, served, &plan, stop).await.map_err(io::Error::other)
}

/// Reads the request head without consuming it: does it ask for a WebSocket?
async fn wants_upgrade(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + REQUEST_HEAD_WITHIN;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request head in 5 s"))??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        let head = &buf[..n];
        if n == buf.len() || head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(has_upgrade_header(&String::from_utf8_lossy(head)));
        }
        // Only part of the head has arrived: peek again once more is in
        // (a peek answers at once while anything is unread, so the
        // deadline is checked here too: a client sending half a head and
        // nothing more is dropped, not polled for ever).
        if tokio::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole request head in 5 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether an HTTP request head has `Upgrade: websocket`.
fn has_upgrade_header(head: &str) -> bool {
    head.split("\r\n").skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade") && value.to_ascii_lowercase().contains("websocket")
        })
    })
}

/// Answers a plain HTTP request with 426 Upgrade Required.
async fn refuse_plain_http(stream: &mut TcpStream) -> io::Result<()> {
    // Read what was peeked, so closing does not reset the connection under the answer.
    let mut buf = [0u8; 8192];
    let _ = stream.read(&mut buf).await?;
    let body = "this is a Palisade replay feed: connect with a WebSocket client, \
                e.g. ws://HOST:PORT/?since=UNIX_SECONDS\n";
    let head = format!(
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn bad_request(problem: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{problem}\n")));
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    response
}

/// Applies a connection's query (`since`, `speed`, `format`; others ignored)
/// over the server's options.
fn plan_for(query: Option<&str>, options: &ReplayOptions) -> Result<Plan, String> {
    let mut plan = Plan {
        since: None,
        speed: options.speed,
        format: options.format,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw).map_err(|e| format!("query parameter `{key}`: {e}"))?;
        match key {
            "since" => {
                let since =
                    palisade_backtest::data::parse_timestamp(&value).map_err(|e| format!("since: {e}"))?;
                plan.since = Some(since);
            }
            "speed" => {
                let speed = value
                    .parse::<f64>()
                    .map_err(|_| format!("speed `{value}` is not a number"))?;
                plan.speed = check_speed(speed)?;
            }
            "format" => plan.format = value.parse().map_err(|e| format!("{e}"))?,
            _ => {}
        }
    }
    Ok(plan)
}

/// Decodes `%XX` escapes (`+` is left alone: it is a time zone's sign here).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad escape in `{text}`"))?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape `%{hex}` in `{text}`"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// Whether a connection's replay goes on.
enum Flow {
    Continue,
    Closed,
}

/// Plays the bars after `plan.since` to one client, then idles until closed.
async fn replay<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    served: &Served,
    plan: &Plan,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let bars = served.data.bars();
    let first = plan
        .since
        .map_or(0, |since| bars.partition_point(|b| b.ts <= since));
    let started = tokio::time::Instant::now();
    let mut i = first;
    while i < bars.len() {
        let ts = bars[i].ts;
        let end = i + bars[i..].partition_point(|b| b.ts == ts);
        if plan.speed > 0.0 {
            let offset = Duration::from_secs_f64((ts - bars[first].ts) as f64 / plan.speed);
            if let Flow::Closed = wait_until(&mut ws, Some(started + offset), &mut stop).await {
                return ws.close(None).await;
            }
        } else if *stop.borrow() {
            return ws.close(None).await;
        }
        for (index, bar) in bars.iter().enumerate().take(end).skip(i) {
            ws.feed(WsMessage::text(encode(served, plan.format, index, bar)))
                .await?;
        }
        ws.flush().await?;
        i = end;
    }
    match wait_until(&mut ws, None, &mut stop).await {
        Flow::Closed => ws.close(None).await,
        Flow::Continue => Ok(()),
    }
}

/// Waits until `due` (forever without one), reading (and so answering
/// pings) meanwhile; `Closed` when the client went away or `stop` turned true.
async fn wait_until<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    due: Option<tokio::time::Instant>,
    stop: &mut watch::Receiver<bool>,
) -> Flow {
    loop {
        let deadline = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => return Flow::Continue,
            () = stopped(stop) => return Flow::Closed,
            message = ws.next() => match message {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return Flow::Closed,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One bar as the connection's format writes it; `index` is its position in the data.
fn encode(served: &Served, format: Format, index: usize, bar: &Bar) -> String {
    let feed_bar = FeedBar {
        symbol: served.data.symbols()[bar.symbol as usize].clone(),
        ts: bar.ts,
        open: bar.open,
        high: bar.high,
        low: bar.low,
        close: bar.close,
        volume: bar.volume,
        seq: Some(index as u64 + 1),
    };
    match format {
        Format::Palisade => bar_json(&feed_bar),
        Format::Binance => bar_binance_json(&feed_bar, served.interval),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::schema::{parse, Message};
    use crate::sequencer::{RejectKind, Sequencer};

    /// Bars of `symbols` at `timestamps` timestamps `step` seconds apart.
    fn dataset(symbols: &[&str], timestamps: i64, step: i64) -> Arc<Dataset> {
        let mut bars = Vec::new();
        for t in 0..timestamps {
            for s in 0..symbols.len() {
                let price = 100.0 + t as f64 + s as f64 / 10.0;
                bars.push(Bar {
                    ts: 1_704_067_200 + t * step,
                    symbol: s as i32,
                    reserved: 0,
                    open: price,
                    high: price + 1.0,
                    low: price - 1.0,
                    close: price + 0.5,
                    volume: 10.0,
                });
            }
        }
        let names = symbols.iter().map(|s| s.to_string()).collect();
        Arc::new(Dataset::from_bars(names, bars).expect("test bars are valid"))
    }

    type Server = (
        String,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), ReplayError>>,
    );

    /// A replay server on 127.0.0.1 (`addr` or port 0): its address, its stop switch, its task.
    async fn start_server(addr: &str, data: Arc<Dataset>, speed: f64) -> Server {
        start_server_with(addr, data, speed, None).await
    }

    /// [`start_server`], serving `wss://` with `tls`.
    async fn start_server_with(
        addr: &str,
        data: Arc<Dataset>,
        speed: f64,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind the replay server");
        let addr = listener.local_addr().unwrap().to_string();
        let (stop_tx, stop_rx) = watch::channel(false);
        let options = ReplayOptions {
            speed,
            format: Format::Palisade,
            interval_secs: None,
            tls,
        };
        let task = tokio::spawn(serve_replay(listener, data, options, stop_rx));
        (addr, stop_tx, task)
    }

    /// The next event, or a failure naming what was awaited.
    async fn next_event(rx: &mut mpsc::Receiver<FeedEvent>, awaiting: &str) -> FeedEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no feed event in 10 s while awaiting {awaiting}"))
            .expect("the client ended early")
    }

    #[test]
    fn since_is_set_and_other_parameters_kept() {
        let cases = [
            ("ws://h:1", "ws://h:1/?since=5"),
            ("ws://h:1#x", "ws://h:1/?since=5#x"),
            ("ws://h:1/", "ws://h:1/?since=5"),
            ("ws://h:1/feed?speed=10", "ws://h:1/feed?speed=10&since=5"),
            (
                "ws://h:1/?since=3&format=binance",
                "ws://h:1/?format=binance&since=5",
            ),
            ("ws://h:1/?a=1&&since=", "ws://h:1/?a=1&since=5"),
            ("ws://h:1/?a=1#x", "ws://h:1/?a=1&since=5#x"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_since(url, 5), expected, "with_since({url:?}, 5)");
            // What the client connects to is a URL it can connect to.
            check_url(&with_since(url, 5)).unwrap();
            let request = with_since(url, 5).into_client_request().unwrap();
            assert_eq!(request.uri().port_u16(), Some(1), "{url}");
        }
    }

    #[test]
    fn connection_queries_override_the_server_options() {
        let options = ReplayOptions {
            speed: 10.0,
            format: Format::Palisade,
            interval_secs: None,
            tls: None,
        };
        let plan = |since, speed, format| Ok(Plan { since, speed, format });
        let cases = [
            (None, plan(None, 10.0, Format::Palisade)),
            (Some(""), plan(None, 10.0, Format::Palisade)),
            (Some("since=60&other=x"), plan(Some(60), 10.0, Format::Palisade)),
            (
                Some("since=1970-01-01T00%3A01%3A00Z"),
                plan(Some(60), 10.0, Format::Palisade),
            ),
            (
                Some("since=1970-01-01T01:01:00+01:00"),
                plan(Some(60), 10.0, Format::Palisade),
            ),
            (Some("speed=0&format=binance"), plan(None, 0.0, Format::Binance)),
            (
                Some("speed=-1"),
                Err("speed -1 is not a finite number >= 0".to_owned()),
            ),
            (
                Some("speed=NaN"),
                Err("speed NaN is not a finite number >= 0".to_owned()),
            ),
            (Some("speed=fast"), Err("speed `fast` is not a number".to_owned())),
            (
                Some("format=csv"),
                Err("unknown feed format `csv` (expected palisade or binance)".to_owned()),
            ),
            (
                Some("since=soon"),
                Err("since: timestamp is not unix seconds, RFC 3339 or YYYY-MM-DD: `soon`".to_owned()),
            ),
            (
                Some("since=%zz"),
                Err("query parameter `since`: bad escape `%zz` in `%zz`".to_owned()),
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(plan_for(query, &options), expected, "query {query:?}");
        }
    }

    #[test]
    fn urls_in_errors_lose_their_query_and_user() {
        for (url, shown) in [
            ("wss://h:1/ws?token=s3cret&since=5", "wss://h:1/ws"),
            ("wss://user:pw@h/ws#frag", "wss://h/ws"),
            ("ws://h:1?since=5", "ws://h:1"),
            ("ws://h:1/", "ws://h:1/"),
        ] {
            assert_eq!(redacted(url), shown);
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let waits: Vec<u128> = (0..8).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), BACKOFF_INITIAL);
    }

    #[test]
    fn bad_urls_are_refused_before_connecting() {
        for (url, problem) in [
            ("http://h:1/", "expected a ws:// or wss:// url"),
            ("https://h:1/", "expected a ws:// or wss:// url"),
            ("wss://h_x!:1/", "not a valid TLS server name"),
        ] {
            let error = check_url(url).unwrap_err().to_string();
            assert!(error.contains(problem), "{url}: {error}");
        }
        for url in [
            "wss://feeds.example:99999/x",
            "ws://h:0x/",
            "ws://h:/",
            "ws://h:0/",
        ] {
            let error = check_url(url).unwrap_err().to_string();
            assert!(error.contains("no valid port"), "{url}: {error}");
        }
        check_url("ws://[::1]:9/").expect("an IPv6 address with a port is fine");
        check_url("wss://[::1]/").expect("an IPv6 address without a port is fine");
        check_url("ws://127.0.0.1:9/feed?x=1").expect("a ws url is fine");
        check_url("wss://stream.example/ws").expect("a wss url is fine");
        check_url("wss://127.0.0.1:9443/").expect("a wss url to an address is fine");
    }

    /// Reads `n` messages from a client of `url` trusting `tls`, or the
    /// first failure to connect.
    async fn read_feed(
        url: String,
        tls: Option<Arc<rustls::ClientConfig>>,
        n: usize,
    ) -> Result<Vec<String>, String> {
        let (tx, mut rx) = mpsc::channel(64);
        let (stop_client, stop_rx) = watch::channel(false);
        let mut options = ClientOptions::new(url, Format::Palisade);
        options.tls = tls;
        let client = tokio::spawn(run_client(options, || None, tx, stop_rx));
        let mut messages = Vec::new();
        let outcome = loop {
            match next_event(&mut rx, "a message").await {
                FeedEvent::Connected { .. } => {}
                FeedEvent::Message { text, .. } => {
                    messages.push(text);
                    if messages.len() == n {
                        break Ok(messages);
                    }
                }
                FeedEvent::Disconnected(reason) => break Err(reason),
            }
        };
        stop_client.send(true).unwrap();
        client.await.unwrap().unwrap();
        outcome
    }

    #[tokio::test]
    async fn a_wss_feed_is_read_when_its_certificate_is_trusted_and_refused_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::tests::self_signed(dir.path());
        let server_tls = crate::tls::server_config(&cert, &key).unwrap();
        let data = dataset(&["A"], 5, 60);
        let (addr, stop, task) = start_server_with("127.0.0.1:0", data.clone(), 0.0, Some(server_tls)).await;
        let port = addr.rsplit_once(':').unwrap().1;
        let trusting = || Some(crate::tls::client_config_trusting(&cert).unwrap());

        // Trusted, by name and by address: every bar, in order.
        for host in ["localhost", "127.0.0.1"] {
            let messages = read_feed(format!("wss://{host}:{port}/"), trusting(), 5)
                .await
                .unwrap();
            let ts: Vec<i64> = messages
                .iter()
                .map(|m| match parse(Format::Palisade, m) {
                    Ok(Message::Bar(bar)) => bar.ts,
                    other => panic!("not a bar: {other:?}"),
                })
                .collect();
            let expected: Vec<i64> = data.bars().iter().map(|b| b.ts).collect();
            assert_eq!(ts, expected, "{host}");
        }

        // Another certificate trusted, or only the compiled-in and the
        // host's roots: refused on the certificate, no bar read.
        let other = tempfile::tempdir().unwrap();
        let (other_cert, _) = crate::tls::tests::self_signed(other.path());
        for tls in [
            Some(crate::tls::client_config_trusting(&other_cert).unwrap()),
            None,
        ] {
            let error = read_feed(format!("wss://localhost:{port}/"), tls, 1)
                .await
                .unwrap_err();
            assert!(error.contains("certificate"), "{error}");
        }
        // A trusted certificate for another name.
        let named = tempfile::tempdir().unwrap();
        let elsewhere = rcgen::generate_simple_self_signed(vec!["feeds.example".to_owned()]).unwrap();
        let (cert_elsewhere, key_elsewhere) = (named.path().join("c.pem"), named.path().join("k.pem"));
        std::fs::write(&cert_elsewhere, elsewhere.cert.pem()).unwrap();
        std::fs::write(&key_elsewhere, elsewhere.signing_key.serialize_pem()).unwrap();
        let tls = crate::tls::server_config(&cert_elsewhere, &key_elsewhere).unwrap();
        let (named_addr, stop_named, named_task) =
            start_server_with("127.0.0.1:0", data.clone(), 0.0, Some(tls)).await;
        let trusts_it = Some(crate::tls::client_config_trusting(&cert_elsewhere).unwrap());
        let error = read_feed(format!("wss://{named_addr}/"), trusts_it, 1)
            .await
            .unwrap_err();
        assert!(error.contains("certificate not valid for name"), "{error}");
        // Plain ws:// to the TLS server, and wss:// to a plain one: refused.
        read_feed(format!("ws://127.0.0.1:{port}/"), None, 1)
            .await
            .unwrap_err();
        let (plain, stop_plain, plain_task) = start_server("127.0.0.1:0", data, 0.0).await;
        read_feed(format!("wss://{plain}/"), trusting(), 1)
            .await
            .unwrap_err();

        for (stop, task) in [(stop, task), (stop_plain, plain_task), (stop_named, named_task)] {
            stop.send(true).unwrap();
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn plain_http_gets_426_and_a_bad_query_400() {
        let (addr, stop, task) = start_server("127.0.0.1:0", dataset(&["A"], 2, 60), 0.0).await;
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("connect with a WebSocket client, e.g. ws://HOST:PORT/?since=UNIX_SECONDS\n")
        );

        let error = tokio_tungstenite::connect_async(format!("ws://{addr}/?speed=-2"))
            .await
            .unwrap_err();
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert_eq!(body, "speed -2 is not a finite number >= 0\n");
            }
            other => panic!("expected a 400 answer, got {other}"),
        }
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    /// Whether the server closes a connection whose client stalls inside
    /// its request head: reads until EOF (or an error), bounded at 9 s.
    async fn dropped_within_9s<S: AsyncRead + Unpin>(mut s: S) -> bool {
        let mut b = [0u8; 256];
        let read_to_end = async {
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(9), read_to_end)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn clients_stalling_inside_their_request_head_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::tests::self_signed(dir.path());
        let tls = crate::tls::server_config(&cert, &key).unwrap();
        let data = dataset(&["A"], 5, 60);
        let (tls_addr, stop_tls, tls_task) =
            start_server_with("127.0.0.1:0", data.clone(), 0.0, Some(tls)).await;
        let (addr, stop, task) = start_server("127.0.0.1:0", data, 0.0).await;

        // Over TLS, after the handshake: half a head, then nothing.
        let tcp = TcpStream::connect(&tls_addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config_trusting(&cert).unwrap());
        let mut secure = connector
            .connect(crate::tls::server_name("localhost").unwrap(), tcp)
            .await
            .unwrap();
        secure.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        secure.flush().await.unwrap();
        // Plain, a head longer than the server peeks at (an upgrade asked
        // for in its first 8 KiB), never ended.
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        let mut head = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', 9_000));
        plain.write_all(&head).await.unwrap();

        let (secure_dropped, plain_dropped) =
            tokio::join!(dropped_within_9s(secure), dropped_within_9s(plain));
        assert!(secure_dropped, "a TLS client stalling in its head was kept");
        assert!(plain_dropped, "a client stalling in a long head was kept");
        for (stop, task) in [(stop_tls, tls_task), (stop, task)] {
            stop.send(true).unwrap();
            task.await.unwrap().unwrap();
        }
    }

    /// A WebSocket server that accepts one client, then either keeps
    /// reading (so it answers pings) or never reads again (a peer gone
    /// without closing: no pong), sending nothing either way.
    async fn silent_server(answers_pings: bool) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            if answers_pings {
                while let Some(Ok(_)) = ws.next().await {}
            } else {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_quiet_feed_that_answers_pings_is_kept_and_one_that_does_not_is_dropped() {
        for answers in [true, false] {
            let (addr, server) = silent_server(answers).await;
            let (tx, mut rx) = mpsc::channel(64);
            let (stop_client, stop_rx) = watch::channel(false);
            let mut options = ClientOptions::new(format!("ws://{addr}/"), Format::Palisade);
            options.ping_after = Duration::from_millis(50);
            options.pong_within = Duration::from_millis(150);
            let client = tokio::spawn(run_client(options, || None, tx, stop_rx));
            assert!(matches!(
                next_event(&mut rx, "connected").await,
                FeedEvent::Connected { .. }
            ));
            // Quiet for ten pings' worth: kept while the pongs come back,
            // dropped within one ping and its wait when they do not.
            let next = tokio::time::timeout(Duration::from_millis(600), rx.recv()).await;
            if answers {
                assert!(
                    next.is_err(),
                    "a quiet feed answering pings was dropped: {next:?}"
                );
            } else {
                match next {
                    Ok(Some(FeedEvent::Disconnected(reason))) => {
                        assert!(reason.contains("not even the pong"), "{reason}")
                    }
                    other => panic!("a feed answering no ping was kept: {other:?}"),
                }
            }
            stop_client.send(true).unwrap();
            client.await.unwrap().unwrap();
            server.abort();
        }
    }

    #[tokio::test]
    async fn a_client_gets_every_bar_once_in_order_across_a_server_restart() {
        let data = dataset(&["A", "B"], 30, 60);
        // 60 s steps at 6000× real time: 10 ms apart, so the restart lands mid-stream.
        let (addr, stop_first, mut first) = start_server("127.0.0.1:0", data.clone(), 6000.0).await;
        let stored = Arc::new(AtomicI64::new(i64::MIN));
        let since = {
            let stored = stored.clone();
            move || Some(stored.load(Ordering::SeqCst)).filter(|&ts| ts != i64::MIN)
        };
        let (tx, mut rx) = mpsc::channel(64);
        let (stop_client, stop_rx) = watch::channel(false);
        let client = tokio::spawn(run_client(
            ClientOptions::new(format!("ws://{addr}/"), Format::Palisade),
            since,
            tx,
            stop_rx,
        ));

        let mut sequencer = Sequencer::new(vec!["A".into(), "B".into()], Some(60), None);
        let mut kept = Vec::new();
        let (mut missed, mut gap_bars, mut connections) = (0, 0, Vec::new());
        let mut restarted = None;
        while kept.len() < data.len() {
            match next_event(&mut rx, &format!("bar {} of {}", kept.len() + 1, data.len())).await {
                FeedEvent::Connected { url } => connections.push(url),
                FeedEvent::Disconnected(_) => {}
                FeedEvent::Message { text, .. } => {
                    let Ok(Message::Bar(bar)) = parse(Format::Palisade, &text) else {
                        panic!("not a bar: {text}");
                    };
                    let out = sequencer.accept(bar);
                    missed += out.missed_messages;
                    gap_bars += out.gap_bars();
                    if let Some(reject) = &out.rejected {
                        // A timestamp half received before the restart comes again: its first half is a duplicate.
                        assert_eq!(reject.kind, RejectKind::Duplicate, "{reject}");
                    }
                    for timestamp in out.ready {
                        stored.store(timestamp[0].ts, Ordering::SeqCst);
                        kept.extend(timestamp);
                    }
                }
            }
            if restarted.is_none() && kept.len() >= 10 {
                stop_first.send(true).unwrap();
                (&mut first).await.unwrap().unwrap();
                // The same port again, now as fast as possible.
                restarted = Some(start_server(&addr, data.clone(), 0.0).await);
            }
        }
        assert_eq!(kept, data.bars(), "every bar once, in order");
        assert_eq!((missed, gap_bars), (0, 0));
        assert_eq!(connections.len(), 2, "{connections:?}");
        assert_eq!(connections[0], format!("ws://{addr}/"));
        assert!(
            connections[1].starts_with(&format!("ws://{addr}/?since=")),
            "{connections:?}"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err(),
            "nothing after the last bar"
        );

        stop_client.send(true).unwrap();
        client.await.unwrap().unwrap();
        let (_, stop_second, second) = restarted.unwrap();
        stop_second.send(true).unwrap();
        second.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn speed_spaces_timestamps_and_format_can_be_chosen_per_connection() {
        let data = dataset(&["A"], 3, 60);
        let (addr, stop, task) = start_server("127.0.0.1:0", data.clone(), 1.0).await;
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_client, stop_rx) = watch::channel(false);
        // 60 s steps at 600× real time: 100 ms apart.
        let url = format!("ws://{addr}/?speed=600&format=binance");
        let client = tokio::spawn(run_client(
            ClientOptions::new(url, Format::Binance),
            || None,
            tx,
            stop_rx,
        ));
        let mut arrivals = Vec::new();
        while arrivals.len() < 3 {
            if let FeedEvent::Message { text, received } = next_event(&mut rx, "a kline").await {
                let Ok(Message::Bar(bar)) = parse(Format::Binance, &text) else {
                    panic!("not a closed kline: {text}");
                };
                assert_eq!(bar.ts, data.bars()[arrivals.len()].ts);
                arrivals.push(received);
            }
        }
        let spread = arrivals[2] - arrivals[0];
        // 200 ms in theory; the bounds only tell pacing from none and from real time.
        assert!(spread >= Duration::from_millis(150), "3 bars over {spread:?}");
        assert!(spread < Duration::from_secs(3), "3 bars over {spread:?}");
        stop_client.send(true).unwrap();
        client.await.unwrap().unwrap();
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn the_interval_is_the_smallest_step() {
        assert_eq!(infer_interval(&dataset(&["A", "B"], 4, 300)), 300);
        assert_eq!(infer_interval(&dataset(&["A"], 1, 300)), 60);
    }

    #[test]
    fn upgrade_headers_are_found_in_any_case() {
        assert!(has_upgrade_header(
            "GET / HTTP/1.1\r\nHost: x\r\nupgrade: WebSocket\r\n\r\n"
        ));
        assert!(!has_upgrade_header("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!has_upgrade_header("GET /upgrade:websocket HTTP/1.1\r\n\r\n"));
    }
}
