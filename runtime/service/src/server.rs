//! Serving the API on a socket: binding the listener, running axum until
//! shutdown, and choosing the listening address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::api;
use crate::auth::Tokens;
use crate::service::Service;

/// Serves `service` on `listener` until `shutdown` resolves, then shuts it
/// down gracefully.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::router(service.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    // Stop admitting and drain jobs while the API still answers status reads.
    service.shutdown(service.config.shutdown_grace()).await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => Ok(()),
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
