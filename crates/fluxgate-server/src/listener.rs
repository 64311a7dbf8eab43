//! Accepting connections: HTTP/1.1 and HTTP/2, each request told its peer's address, a
//! per-connection watchdog that closes a connection left silent past the header-read timeout
//! (an idle keep-alive, or a client that never finishes its headers), and a graceful stop whose
//! drain of open connections is time-boxed — a client that never finishes its request cannot
//! hold the process (and the last usage write behind it) past `shutdown_timeout`.
//!
//! The watchdog costs nothing per request but two counter updates: hyper's own header-read
//! timeout arms, polls and cancels a timer for every request, which showed in the profile of a
//! warm verify (docs/BENCHMARKS.md); and its timer and the stop signal are polled only when one
//! of them woke the connection's task.

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A connection on which no request starts and nothing is written for this long (an idle
    /// keep-alive, or a client sending its headers too slowly) is closed — after between this
    /// and 1¼ times this; a request being served keeps it open.
    pub header_read: Duration,
    /// After the stop signal, open connections get this long to finish their requests.
    pub drain: Duration,
}

/// How many watchdog checks in a row must find a connection silent before it is closed.
const QUIET_CHECKS: u32 = 4;

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
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.header_read);
    let connections = TaskTracker::new();
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
        let activity = Arc::new(Activity::default());
        let service = PerConnection {
            app: app.clone(),
            peer,
            activity: activity.clone(),
        };
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let connection = builder
            .serve_connection_with_upgrades(io, TowerToHyperService::new(service))
            .into_owned();
        // its own token: polling a shared one would take a lock every connection shares
        let stopping = stop.child_token();
        let quiet_after = timeouts.header_read;
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let mut stopped = pin!(stopping.cancelled());
            let period = quiet_after / QUIET_CHECKS;
            let mut check = pin!(tokio::time::sleep(period));
            let (mut draining, mut seen, mut quiet) = (false, activity.progress(), 0);
            let watch = Arc::new(WatchWake::default());
            let watch_waker = std::task::Waker::from(watch.clone());
            let mut task_waker: Option<std::task::Waker> = None;
            let ended = std::future::poll_fn(|cx| {
                if !task_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    watch.wakes(cx.waker());
                    task_waker = Some(cx.waker().clone());
                }
                // the stop signal and the timer are polled only when one of them woke the task,
                // not on each of the connection's wakes
                let woken = watch.woken.load(Ordering::Acquire)
                    && watch.woken.swap(false, Ordering::AcqRel);
                if !woken {
                    return connection.as_mut().poll(cx).map(Some);
                }
                let mut watch_cx = Context::from_waker(&watch_waker);
                if !draining && stopped.as_mut().poll(&mut watch_cx).is_ready() {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                while check.as_mut().poll(&mut watch_cx).is_ready() {
                    let progress = activity.progress();
                    if progress == seen && !activity.in_service() {
                        quiet += 1;
                    } else {
                        (seen, quiet) = (progress, 0);
                    }
                    if quiet >= QUIET_CHECKS {
                        return Poll::Ready(None);
                    }
                    check.as_mut().reset(tokio::time::Instant::now() + period);
                }
                connection.as_mut().poll(cx).map(Some)
            })
            .await;
            match ended {
                Some(Err(error)) => {
                    tracing::debug!(%error, %peer, "connection ended with an error")
                }
                Some(Ok(())) => {}
                None => tracing::debug!(%peer, "closed a silent connection"),
            }
        });
    }
    drop(listener);
    connections.close();
    let open = connections.len();
    match tokio::time::timeout(timeouts.drain, connections.wait()).await {
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

/// Wakes a connection's task for its watchdog (the stop signal or the timer), noting that it
/// was the watchdog — so the task's other wakes (its socket) do not poll either of them.
struct WatchWake {
    woken: std::sync::atomic::AtomicBool,
    /// The task's waker (set when it changes, which for a task is once).
    task: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Default for WatchWake {
    fn default() -> Self {
        Self {
            // the first poll registers the stop signal and the timer
            woken: std::sync::atomic::AtomicBool::new(true),
            task: std::sync::Mutex::new(None),
        }
    }
}

impl WatchWake {
    /// The watchdog's wakes go to `task` from now on.
    fn wakes(&self, task: &std::task::Waker) {
        if let Ok(mut slot) = self.task.lock() {
            *slot = Some(task.clone());
        }
    }
}

impl std::task::Wake for WatchWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Ok(task) = self.task.lock() {
            if let Some(task) = task.as_ref() {
                task.wake_by_ref();
            }
        }
    }
}

/// What the watchdog of one connection reads: requests being served, and a count that moves
/// whenever a request starts or the connection writes.
#[derive(Debug, Default)]
struct Activity {
    in_service: AtomicUsize,
    progress: AtomicU64,
}

impl Activity {
    fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    fn in_service(&self) -> bool {
        self.in_service.load(Ordering::Relaxed) > 0
    }

    fn moved(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// The application as one connection sees it: each request told the peer's address and
/// counted as in service until its answer is ready (or it is abandoned).
#[derive(Clone)]
struct PerConnection {
    app: crate::routes::Service,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<B> tower::Service<axum::http::Request<B>> for PerConnection
where
    crate::routes::Service: tower::Service<axum::http::Request<B>, Error = Infallible>,
    <crate::routes::Service as tower::Service<axum::http::Request<B>>>::Future: Unpin,
{
    type Response = <crate::routes::Service as tower::Service<axum::http::Request<B>>>::Response;
    type Error = Infallible;
    type Future =
        InService<<crate::routes::Service as tower::Service<axum::http::Request<B>>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.activity.moved();
        self.activity.in_service.fetch_add(1, Ordering::Relaxed);
        InService {
            answer: self.app.call(request),
            activity: self.activity.clone(),
        }
    }
}

/// A request's answer being made; while it exists the connection is not silent.
struct InService<F> {
    answer: F,
    activity: Arc<Activity>,
}

impl<F: Future + Unpin> Future for InService<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.answer).poll(cx)
    }
}

impl<F> Drop for InService<F> {
    fn drop(&mut self) {
        self.activity.in_service.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's socket, noting each write as progress (a long answer to a slow reader is
/// not silence).
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn wrote(&self, written: &Poll<std::io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.moved();
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
