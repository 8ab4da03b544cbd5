//! A connection's socket (in and out: the same bytes), with the first write of each answer put off by one turn
//! of the scheduler, so the answers of the connections that became ready together are written together; it tells
//! the connection's activity of its reads, writes and flushes, and closes as [`super::linger`] says.
//!
//! Why: every answer written to a client that has gone to sleep waiting for it wakes that client, and waking a
//! task on another core is an inter-processor interrupt, paid by the writer (dear on virtual machines: bench/README
//! point 12). A connection's task that asks to be polled again goes to the back of its worker's queue, behind the
//! tasks the same readiness woke; those answer their requests first, and the writes then follow one another, so a
//! client reading many connections is woken once for several answers instead of once for each.
//!
//! At most one write is put off per request read, and only once: a connection whose client sends nothing more
//! always writes on its next poll. And only when the thread is serving more than one connection: a write is put
//! off when the request before this one on the same thread came from another connection. A lone client (or one
//! sending requests back to back) has nobody to be written together with, and would only pay for the extra poll.
//!
//! Nor when the router made the answer at once, without waiting on anything (`/healthz`, the metrics, a 404):
//! the extra pass through the connection's task costs such a request about an eighth of its instructions, and what
//! it saves the client is measured to pay only for answers that took work (bench/README point 17). The router
//! says so through [`answered_at_once`], a mark on the thread that the next write takes and each read clears.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::idle::Activity;
use super::linger::Lingering;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The connection whose bytes this thread read last (0: none yet).
    static LAST_READ: Cell<u64> = const { Cell::new(0) };
    /// The answer this thread's connection is about to write was made at once: the write is not put off.
    static ANSWERED_AT_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the answer about to be written on this thread (by the connection whose request is being served) as made
/// at once, so it is not put off. The connection's task writes it in the same poll; a mark left by a write that did
/// not happen is cleared by the next read, so it never reaches another connection's request.
pub fn answered_at_once() {
    ANSWERED_AT_ONCE.set(true);
}

#[derive(Debug)]
pub struct DeferredWrites<T> {
    io: T,
    id: u64,
    /// Bytes were read since the last write, after another connection's: the next write waits one turn.
    defer: bool,
    /// A write went through since the last deferral (so a deferral is never repeated without one).
    wrote: bool,
    /// The connection's activity, told of every read (a request head may be on its way).
    activity: Option<Arc<Activity>>,
    /// How the socket is closed (see [`super::linger`]).
    lingering: Lingering,
}

impl<T> DeferredWrites<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            defer: false,
            wrote: true,
            activity: None,
            lingering: Lingering::default(),
        }
    }

    /// Tells `activity` of every read.
    pub fn telling(self, activity: Arc<Activity>) -> Self {
        Self {
            activity: Some(activity),
            ..self
        }
    }

    /// Bytes came in: the next write waits if another connection was read on this thread since this one was.
    fn read_some(&mut self) {
        if let Some(activity) = &self.activity {
            activity.read_some();
        }
        ANSWERED_AT_ONCE.set(false);
        let previous = LAST_READ.with(|last| last.replace(self.id));
        if previous != self.id && self.wrote {
            self.defer = true;
        }
    }

    /// Whether this write waits: once after a read that asked for it ([`Self::read_some`]), which it never does
    /// again before a write has gone through.
    fn put_off(&mut self, cx: &Context<'_>) -> bool {
        let at_once = ANSWERED_AT_ONCE.replace(false);
        if !std::mem::take(&mut self.defer) || at_once {
            return false;
        }
        self.wrote = false;
        cx.waker().wake_by_ref();
        true
    }
}

impl<T: AsyncWrite + Unpin> DeferredWrites<T> {
    /// `write` on the socket, unless this write is put off.
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.put_off(cx) {
            return Poll::Pending;
        }
        let result = write(Pin::new(&mut self.io), cx);
        if let Poll::Ready(Ok(written)) = result {
            self.wrote = true;
            if let (true, Some(activity)) = (written > 0, &self.activity) {
                activity.wrote_some();
            }
        }
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeferredWrites<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read_some();
        }
        result
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for DeferredWrites<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        // hyper flushes once everything it buffered is written.
        if let (Poll::Ready(Ok(())), Some(activity)) = (&flushed, &this.activity) {
            activity.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let asked_to_close = this.activity.as_deref().is_some_and(Activity::close_asked);
        this.lingering.poll_close(&mut this.io, asked_to_close, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// Counts how often the task asked to be polled again.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn socket() -> (DeferredWrites<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        (DeferredWrites::new(server), client)
    }

    fn read(io: &mut DeferredWrites<DuplexStream>, cx: &mut Context<'_>) -> usize {
        let mut bytes = [0u8; 64];
        let mut buf = ReadBuf::new(&mut bytes);
        match Pin::new(io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => buf.filled().len(),
            other => panic!("the test's bytes are there to read: {other:?}"),
        }
    }

    fn write(io: &mut DeferredWrites<DuplexStream>, cx: &mut Context<'_>) -> Poll<usize> {
        Pin::new(io)
            .poll_write(cx, b"answer")
            .map(|written| written.expect("the duplex takes it"))
    }

    #[tokio::test]
    async fn the_first_write_after_a_request_waits_one_poll_and_asks_for_it() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let (mut io, mut client) = socket();

        assert_eq!(
            write(&mut io, &mut cx),
            Poll::Ready(6),
            "nothing read yet: written at once"
        );
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(read(&mut io, &mut cx), 18);
        assert_eq!(
            write(&mut io, &mut cx),
            Poll::Pending,
            "put off after a request was read"
        );
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "and the task asked to be polled again"
        );
        assert_eq!(write(&mut io, &mut cx), Poll::Ready(6), "written on the next poll");
        assert_eq!(
            write(&mut io, &mut cx),
            Poll::Ready(6),
            "the rest of an answer is not put off"
        );
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);

        let mut answers = [0u8; 18];
        client.read_exact(&mut answers).await.unwrap();
        assert_eq!(&answers, b"answeransweranswer", "every byte written, in order");
    }

    #[tokio::test]
    async fn a_write_is_put_off_once_however_many_reads_come_before_it() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut io, mut client) = socket();

        client.write_all(b"a").await.unwrap();
        assert_eq!(read(&mut io, &mut cx), 1);
        assert_eq!(write(&mut io, &mut cx), Poll::Pending);
        // A client sending byte by byte cannot keep the answer waiting: it is written on the next poll.
        client.write_all(b"b").await.unwrap();
        assert_eq!(read(&mut io, &mut cx), 1);
        assert_eq!(write(&mut io, &mut cx), Poll::Ready(6));
        // Another connection is served on this thread: the next request's answer waits again, vectored or not.
        let (mut other, mut other_client) = socket();
        other_client.write_all(b"x").await.unwrap();
        assert_eq!(read(&mut other, &mut cx), 1);
        client.write_all(b"c").await.unwrap();
        assert_eq!(read(&mut io, &mut cx), 1);
        let slices = [io::IoSlice::new(b"head"), io::IoSlice::new(b"body")];
        assert!(Pin::new(&mut io).poll_write_vectored(&mut cx, &slices).is_pending());
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &slices),
            Poll::Ready(Ok(n)) if n > 0
        ));
    }

    #[tokio::test]
    async fn a_lone_connections_answers_are_not_put_off() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut io, mut client) = socket();
        client.write_all(b"first").await.unwrap();
        assert_eq!(read(&mut io, &mut cx), 5);
        assert_eq!(
            write(&mut io, &mut cx),
            Poll::Pending,
            "whether others follow is not known yet"
        );
        assert_eq!(write(&mut io, &mut cx), Poll::Ready(6));
        for request in [&b"second"[..], b"third"] {
            client.write_all(request).await.unwrap();
            assert_eq!(read(&mut io, &mut cx), request.len());
            assert_eq!(
                write(&mut io, &mut cx),
                Poll::Ready(6),
                "no other connection was read since: nothing to write together with"
            );
        }
    }

    #[tokio::test]
    async fn an_answer_made_at_once_is_written_at_once() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut io, mut client) = socket();
        let (mut other, mut other_client) = socket();
        for (request, at_once) in [(&b"GET /healthz"[..], true), (b"POST /orders", false)] {
            other_client.write_all(b"x").await.unwrap();
            assert_eq!(read(&mut other, &mut cx), 1);
            client.write_all(request).await.unwrap();
            assert_eq!(read(&mut io, &mut cx), request.len());
            if at_once {
                answered_at_once();
            }
            assert_eq!(write(&mut io, &mut cx).is_ready(), at_once);
            assert_eq!(write(&mut io, &mut cx), Poll::Ready(6));
        }
        // A mark whose write never came does not carry over to the next request read on this thread.
        answered_at_once();
        other_client.write_all(b"y").await.unwrap();
        assert_eq!(read(&mut other, &mut cx), 1);
        assert!(Pin::new(&mut other).poll_write(&mut cx, b"answer").is_pending());
    }

    #[tokio::test]
    async fn a_read_that_brings_nothing_does_not_put_off_a_write() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut io, mut client) = socket();
        client.shutdown().await.unwrap();
        assert_eq!(read(&mut io, &mut cx), 0, "end of stream");
        assert_eq!(write(&mut io, &mut cx), Poll::Ready(6));
    }
}
