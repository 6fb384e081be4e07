//! Serving the API on a socket: the accept loop with its connection limits
//! (overall and per client address), HTTP/1 with a header read timeout,
//! graceful shutdown, and choosing the listening address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::api;
use crate::auth::Tokens;
use crate::service::Service;

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
    let app = api::router(service.clone());
    let config = &service.config;
    let limits = Arc::new(ConnectionLimits::new(
        config.max_connections,
        config.max_connections_per_client,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_timeout_ms))
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
    service.shutdown(service.config.shutdown_grace()).await;
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
