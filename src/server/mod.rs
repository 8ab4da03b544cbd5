//! The HTTP server: a bound listener and a shutdown future in, served requests out.
//!
//! Connections are capped by a semaphore (a new one waits for a free slot; while none is free, the connection idle
//! the longest between requests is closed to make room) and per client address, an IPv4 address or an IPv6 /64 (one
//! client cannot take every slot: past its share it is answered 503 and closed); each request by a header timeout, a
//! body timeout, a body-size limit and a request timeout. On shutdown the listener closes and in-flight requests get
//! the configured grace period.

mod browser;
mod deferred;
mod error;
mod files;
mod linger;
mod router;

pub use router::{Handling, RequestBody, handle};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use error::RequestError;

use crate::App;
use crate::limits::PerClient;
use idle::OpenConnections;
use watch::{Event, Watch};

mod idle;
mod watch;

pub type Response = hyper::Response<Full<Bytes>>;

/// While a new client waits for a slot, how often the longest-idle connection is asked again to make room.
const IDLE_RECHECK: Duration = Duration::from_millis(100);

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The largest request head (request line and headers) luka takes (hyper's `max_header_size`): past it, 431. Also
/// what a connection's read buffer grows to before a read (`max_buf_size`; one read can take it to about twice
/// that). hyper's default is about 400 KB a connection, 400 MB over `max_connections`' default; nginx allows 32 KB
/// of headers, Node.js 16 KB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests (those with an
/// `Idempotency-Key` whose client has gone too).
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    files::make_room(app.config.server.max_connections);
    let connections = Arc::new(Semaphore::new(app.config.server.max_connections));
    let per_address = Arc::new(PerClient::default());
    let open = Arc::new(OpenConnections::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors (the process's or the system's): an idle connection gives one back.
                    if matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
                        || code == rustix::io::Errno::NFILE.raw_os_error())
                    {
                        open.close_longest_idle();
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(address_slot) = per_address.take(remote.ip(), app.config.server.max_connections_per_address, None)
        else {
            refuse_busy_address(&stream, remote);
            continue;
        };
        // A slot for the client now waiting: a free one, or the one a connection idle between requests gives up
        // when asked to close (asked again while none has ended yet; busy connections are never asked).
        let permit = loop {
            if let Ok(permit) = Arc::clone(&connections).try_acquire_owned() {
                break Some(permit);
            }
            open.close_longest_idle();
            tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => {
                    break Some(permit.expect("semaphore is never closed"));
                }
                () = tokio::time::sleep(IDLE_RECHECK) => {}
                () = &mut shutdown => break None,
            }
        };
        let Some(permit) = permit else { break };
        let _ = stream.set_nodelay(true);
        let (tracked, activity) = open.add();
        let reads = Arc::clone(&activity);
        let header_timeout = Duration::from_millis(app.config.server.header_timeout_ms);
        let app = Arc::clone(&app);
        let service = service_fn(move |request| {
            let busy = activity.busy();
            Serving {
                handling: router::handle(&app, request, remote),
                _busy: busy,
            }
        });
        let connection = http1::Builder::new()
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(
                TokioIo::new(deferred::DeferredWrites::new(stream).telling(reads)),
                service,
            );
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // The header timeout is kept here rather than by hyper, whose own makes and registers a new timer for
            // every request: this one is set once and only looked at when it fires (about every header timeout).
            let mut watch = Watch::new(tracked, header_timeout);
            let result = std::future::poll_fn(|cx| loop {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                match std::task::ready!(watch.poll_event(cx)) {
                    // Idle and its slot wanted, or shutting down: it ends after the request it is serving, if any.
                    Event::Close => connection.as_mut().graceful_shutdown(),
                    Event::HeaderTimeout => {
                        tracing::debug!(
                            %remote,
                            "connection closed: no whole request head within the header timeout (or within a second \
                             of being asked to close)"
                        );
                        return Poll::Ready(Ok(()));
                    }
                }
            })
            .await;
            if let Err(e) = result {
                // hyper answered these itself (431, 400) before anything was routed. An HTTP/2 preface gets no answer
                // (luka serves HTTP/1.1), and is no refused request.
                if e.is_parse_too_large() {
                    crate::metrics::metrics().http_refused("head_too_large");
                } else if e.is_parse() && !e.is_parse_version_h2() {
                    crate::metrics::metrics().http_refused("bad_head");
                }
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop((watch, permit, address_slot));
        });
    }
    drop(listener);
    let grace = app.config.server.shutdown_grace();
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + grace;
    if !open.close_all(grace).await {
        tracing::warn!("grace period over; closing remaining connections");
        return;
    }
    // Requests with an Idempotency-Key run on after their client has gone (their outcome is what a retry gets); a
    // produce of theirs already sent would be left in doubt by exiting, so they get the rest of the grace too.
    while app.keyed_requests.held() > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                running = app.keyed_requests.held(),
                "grace period over; requests with an Idempotency-Key still running are cut short"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pin_project_lite::pin_project! {
    /// One request's answer, its connection marked busy (not to be closed as idle) until the answer is made.
    struct Serving {
        #[pin]
        handling: router::Handling,
        _busy: idle::Busy,
    }
}

impl Future for Serving {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        self.project().handling.poll(cx).map(Ok)
    }
}

/// Tells a client over its address's connection share why it is turned away (best effort: no waiting on a socket
/// that does not read), then closes.
fn refuse_busy_address(stream: &tokio::net::TcpStream, remote: SocketAddr) {
    const BODY: &str =
        r#"{"error":"too many connections from your address; reuse a connection or retry shortly","status":503}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
    crate::metrics::metrics().http_refused("address_share");
    tracing::debug!(%remote, "connection refused: address over its connection share");
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    json_bytes_response(status, body.to_string().into_bytes())
}

/// A response whose body is already JSON text.
pub(crate) fn json_bytes_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
