//! Serving the API on a socket: the accept loop with its connection limits
//! (overall and per client address), HTTP/1 with a header read timeout,
//! problem+json for the answers hyper itself writes to requests it cannot
//! parse, graceful shutdown, and choosing the listening address.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::api;
use crate::auth::Tokens;
use crate::problem;
use crate::service::Service;

/// Most bytes of a request's head (request line and headers); more is 431.
/// Above the longest request target hyper takes (64 KiB, 414 beyond), so
/// each limit keeps its own answer.
pub const MAX_HEAD_BYTES: usize = 96 << 10;

/// How long open connections get to finish their requests once the service
/// has drained, before the server exits anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Serves `service` on `listener` until `shutdown` resolves, then shuts it
/// down gracefully.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A worker serves its probes and metrics only.
    let app = if service.role == crate::worker::Role::Worker {
        api::worker_router(service.clone())
    } else {
        api::router(service.clone())
    };
    let config = &service.config;
    let limits = Arc::new(ConnectionLimits::new(
        config.max_connections,
        config.max_connections_per_client,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_timeout_ms))
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = service.metrics.clone();
    let accept = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // little rather than spin; the listener stays.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop_rx => break,
            };
            let Some(permit) = limits.admit(peer.ip()) else {
                metrics.connections_refused.inc();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stream = ParseErrorsAsProblems::new(stream);
            let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        let _ = tokio::time::timeout(CLOSE_WAIT, graceful.shutdown()).await;
    });
    shutdown.await;
    // Stop admitting and drain jobs while the API still answers status reads.
    if service.role == crate::worker::Role::Worker {
        // Finish or hand back its jobs, and leave the list of workers.
        service.drain(service.config.shutdown_grace()).await;
    } else {
        service.shutdown(service.config.shutdown_grace()).await;
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(CLOSE_WAIT * 2, accept).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => Ok(()),
    }
}

/// Open connections, overall and per client address.
struct ConnectionLimits {
    max: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; counted until dropped.
struct Permit {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    fn new(max: usize, per_client: usize) -> ConnectionLimits {
        ConnectionLimits {
            max,
            per_client,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A permit for a new connection from `ip`, or `None` when it would be
    /// one too many overall or from that address.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_ip) = &mut *open;
        let from_ip = by_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max || from_ip >= self.per_client {
            return None;
        }
        *total += 1;
        by_ip.insert(ip, from_ip + 1);
        Some(Permit {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// A connection whose writes pass through, except the answer hyper writes
/// by itself when it cannot parse a request (400 for a bad request line,
/// header or Content-Length, 414 for a target too long, 431 for headers too
/// large): a status line and headers with an empty body, which becomes a
/// problem+json body like every other error's. Vectored writes are not
/// offered, so hyper hands each response head over in one piece.
struct ParseErrorsAsProblems<S> {
    inner: S,
    /// A rewritten answer not yet all written.
    pending: Vec<u8>,
    written: usize,
}

impl<S: AsyncWrite + Unpin> ParseErrorsAsProblems<S> {
    fn new(inner: S) -> Self {
        ParseErrorsAsProblems {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ParseErrorsAsProblems<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ParseErrorsAsProblems<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        if let Some(answer) = problem_for_parse_error(buf) {
            self.pending = answer;
            // Taken whole; what the socket does not take now is written by
            // the next write, flush or shutdown, which hyper always makes.
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The problem+json answer that replaces `written` when it is one of
/// hyper's own answers to an unparsable request: a whole response head with
/// status 400, 414 or 431, `content-length: 0`, no content type and nothing
/// after it. Our handlers' errors always carry a content type, so they are
/// never mistaken for one.
fn problem_for_parse_error(written: &[u8]) -> Option<Vec<u8>> {
    let end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != written.len() {
        return None;
    }
    let head = std::str::from_utf8(&written[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let (status, detail) = match code {
        "400" => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1: its request line, a header or its Content-Length could not be parsed; nothing was done",
        ),
        "414" => (
            StatusCode::URI_TOO_LONG,
            "the request target (path and query) is too long; nothing was done",
        ),
        "431" => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request's headers are too large or too many; nothing was done",
        ),
        _ => return None,
    };
    let mut date = None;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => return None,
            "content-length" => empty = value.trim() == "0",
            "date" => date = Some(value.trim()),
            _ => {}
        }
    }
    if !empty {
        return None;
    }
    let body = problem::body(status, problem::type_of_status(status), detail);
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        problem::title(status),
        body.len()
    );
    if let Some(date) = date {
        answer.push_str(&format!("date: {date}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

/// The address to listen on: `requested`, or loopback with the same port
/// when no token is configured and `requested` is not loopback.
pub fn listen_address(requested: SocketAddr, tokens: &Tokens) -> (SocketAddr, bool) {
    if tokens.is_open() && !requested.ip().is_loopback() {
        (SocketAddr::from(([127, 0, 0, 1], requested.port())), true)
    } else {
        (requested, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_error_answers_become_problems() {
        for (code, kind) in [
            (400, "bad-request"),
            (414, "uri-too-long"),
            (431, "header-fields-too-large"),
        ] {
            let head = format!(
                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 05:00:00 GMT\r\n\r\n"
            );
            let answer =
                String::from_utf8(problem_for_parse_error(head.as_bytes()).expect("rewritten")).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {code} ")), "{head}");
            assert!(head.contains("content-type: application/problem+json"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            assert!(head.contains("date: Sun, 29 Nov 2026 05:00:00 GMT"), "{head}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["type"], format!("urn:palisade:problem:{kind}"));
            assert_eq!(v["status"], code);
            assert!(problem::PROBLEM_TYPES.contains(&kind));
        }
        // Everything else passes as it is: other statuses, answers of ours
        // (they have a content type), bodies, partial heads.
        for written in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"HTTP/1.1 400\": 1}\r\n\r\n",
        ] {
            assert_eq!(problem_for_parse_error(written), None, "{}", String::from_utf8_lossy(written));
        }
    }

    #[test]
    fn connections_are_limited_overall_and_per_client() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).expect("first from a");
        let a2 = limits.admit(a).expect("second from a");
        assert!(limits.admit(a).is_none(), "a third from a is one too many");
        let b1 = limits.admit(b).expect("b has its own count");
        assert!(limits.admit(b).is_none(), "three open overall");
        drop(a1);
        let b2 = limits.admit(b).expect("room again once one closed");
        drop((a2, b1, b2));
        assert_eq!(limits.open.lock().unwrap().0, 0);
        assert!(limits.open.lock().unwrap().1.is_empty());
    }
}
