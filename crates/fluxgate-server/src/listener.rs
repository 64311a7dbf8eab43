//! Accepting connections: HTTP/1.1 and HTTP/2 with a header-read timeout that also closes idle
//! keep-alive connections, each request told its peer's address, and a graceful stop whose drain
//! of open connections is time-boxed — a client that never finishes its request cannot hold the
//! process (and the last usage write behind it) past `shutdown_timeout`.

use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A client must send a request's headers within this long of connecting or of its previous
    /// answer (so an idle keep-alive connection is closed after it too).
    pub header_read: Duration,
    /// After the stop signal, open connections get this long to finish their requests.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled, then stops accepting and drains open
/// connections for at most `timeouts.drain`. Returns how many connections were dropped because
/// the drain ran out (0 when all finished).
pub async fn serve(
    listener: TcpListener,
    app: crate::routes::Service,
    timeouts: Timeouts,
    stop: CancellationToken,
) -> usize {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.header_read);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // out of descriptors and the like: wait a moment rather than spin
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = app.clone().map_request(move |mut request: Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    match tokio::time::timeout(timeouts.drain, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => {
            tracing::warn!(
                open,
                drain = ?timeouts.drain,
                "connections still open after the drain; dropping them"
            );
            open.max(1)
        }
    }
}
