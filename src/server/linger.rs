//! How a connection's socket is closed ([`super::deferred::DeferredWrites::poll_shutdown`]): the answer's end sent,
//! then, for a moment, what the client still sends read and dropped before the socket is let go.
//!
//! luka answers some requests before it has read their bodies (401 for wrong credentials, 413 for a body past the
//! limit, 403 for a route the user may not use). Closing a socket with bytes unread makes the kernel reset the
//! connection, and a reset drops what the client has not read yet: an uploading client would see "connection reset"
//! instead of the answer that says what was wrong. So, as nginx's `lingering_close` does, shutting down sends the
//! end of the answer (FIN) first, then reads and drops what comes in until the client closes its side, for at most
//! [`LINGER`] and [`MAX_DRAINED`] bytes, after which the socket is closed all the same, or once the client has sent
//! nothing for [`QUIET`]. A connection luka asked to close (between requests, to make room for another client, or
//! on shutdown) does not linger: it has nothing on its way to reset, and its slot is wanted.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a closing connection reads what its client still sends.
const LINGER: Duration = Duration::from_secs(1);

/// How long a closing connection waits for more from its client before it takes it that nothing more is coming.
const QUIET: Duration = Duration::from_millis(200);

/// Most bytes a closing connection reads and drops (the time is the bound that matters; this one keeps a fast
/// client from making it a second of copying).
const MAX_DRAINED: usize = 64 * 1024 * 1024;

/// A socket's close: nothing yet, or the answer's end sent and what comes read since.
#[derive(Debug, Default)]
pub struct Lingering(Option<Closing>);

#[derive(Debug)]
struct Closing {
    /// When it stops reading, however much comes.
    until: Instant,
    /// When it stops reading unless more comes first.
    quiet_until: Instant,
    timer: Pin<Box<Sleep>>,
    drained: usize,
}

impl Lingering {
    /// Closes `io`: its end sent, then (unless luka `asked_to_close` the connection) what its client still sends
    /// read and dropped, within the bounds above; ready when the socket may be let go.
    pub fn poll_close<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        asked_to_close: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let closing = match &mut self.0 {
            Some(closing) => closing,
            None => {
                std::task::ready!(Pin::new(&mut *io).poll_shutdown(cx))?;
                if asked_to_close {
                    return Poll::Ready(Ok(()));
                }
                let now = Instant::now();
                self.0.insert(Closing {
                    until: now + LINGER,
                    quiet_until: now + QUIET,
                    timer: Box::pin(tokio::time::sleep_until((now + QUIET).into())),
                    drained: 0,
                })
            }
        };
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                // The client closed its side (or the connection broke): nothing is left to reset.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    closing.drained += buf.filled().len();
                    let now = Instant::now();
                    if closing.drained >= MAX_DRAINED || now >= closing.until {
                        return Poll::Ready(Ok(()));
                    }
                    closing.quiet_until = now + QUIET;
                }
                Poll::Pending => {
                    let wake_at = closing.quiet_until.min(closing.until);
                    closing.timer.as_mut().reset(wake_at.into());
                    return match closing.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use std::sync::Arc;

    use super::*;
    use crate::server::deferred::DeferredWrites;
    use crate::server::idle::{Activity, OpenConnections, Tracked};

    /// A connection's entry and activity, for a socket that was not asked to close.
    fn activity() -> (Tracked, Arc<Activity>) {
        Arc::new(OpenConnections::default()).add()
    }

    #[tokio::test]
    async fn shutting_down_ends_the_answer_then_reads_until_the_client_closes() {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let (_tracked, activity) = activity();
        let mut ours = DeferredWrites::new(ours).telling(activity);
        ours.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n").await.unwrap();
        client.write_all(&[b'x'; 10_000]).await.unwrap();
        // What hyper reads of the rest after answering.
        let mut some = [0u8; 100];
        ours.read_exact(&mut some).await.unwrap();
        let closing = tokio::spawn(async move { ours.shutdown().await });
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 413"), "the answer, then its end");
        assert!(!closing.is_finished(), "still reading what the client sends");
        client.write_all(&[b'y'; 10_000]).await.unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_millis(500), closing)
            .await
            .expect("done once the client closed")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_never_closes_is_let_go_after_the_linger() {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let (_tracked, activity) = activity();
        let mut ours = DeferredWrites::new(ours).telling(activity);
        let sending = tokio::spawn(async move {
            // More body, a little at a time, for longer than the linger.
            for _ in 0..40 {
                if client.write_all(b"more body").await.is_err() {
                    break;
                }
                tokio::time::sleep(QUIET / 4).await;
            }
            client
        });
        let mut some = [0u8; 9];
        ours.read_exact(&mut some).await.unwrap();
        let started = std::time::Instant::now();
        ours.shutdown().await.unwrap();
        sending.abort();
        assert!(
            started.elapsed() >= LINGER && started.elapsed() < LINGER * 5,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_connection_asked_to_close_closes_at_once() {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let open = Arc::new(OpenConnections::default());
        let (_tracked, activity) = open.add();
        let mut ours = DeferredWrites::new(ours).telling(activity);
        client.write_all(b"more").await.unwrap();
        assert!(!open.close_all(Duration::ZERO).await);
        tokio::time::timeout(Duration::from_millis(100), ours.shutdown())
            .await
            .expect("at once")
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_more_is_let_go_once_quiet() {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let (_tracked, activity) = activity();
        let mut ours = DeferredWrites::new(ours).telling(activity);
        client.write_all(b"body").await.unwrap();
        let mut body = [0u8; 4];
        ours.read_exact(&mut body).await.unwrap();
        let started = std::time::Instant::now();
        ours.shutdown().await.unwrap();
        assert!(
            started.elapsed() >= QUIET && started.elapsed() < LINGER,
            "{:?}",
            started.elapsed()
        );
    }
}
