//! What a connection's task watches besides hyper's connection: its close notice ([`Tracked`]) and the header
//! timeout in, the event that should end or wind down the connection out.
//!
//! The task is woken mostly by its socket, and both of these rarely: the notice when the connection's slot is
//! wanted or the server shuts down, the timer about once per header timeout. So each is polled once to register the
//! task's waker, and afterwards looked at only through a flag that says it has fired (the notice's own, and
//! tokio's `Sleep::is_elapsed`). Polling both on every pass, as `select!` does, cost about 380 instructions per
//! request, 3% of a `/healthz` request (`bench/README.md` point 17). This relies on the waker staying the same from
//! poll to poll, as a tokio task's does: the task polls this with its own context.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::idle::Tracked;

/// How long a connection asked to close may go on without a request in progress (its answer being sent, or a head
/// still coming in) before it is closed: hyper closes a connection idle between requests at once, but one that has
/// begun a head reads on, and a client that sends one byte of a head would keep its slot until the header timeout.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection's task should act.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Its slot is wanted or the server is shutting down: finish the request in progress, if any, then close.
    Close,
    /// No whole request head within the header timeout (a slow head, or a keep-alive connection left idle), or
    /// within [`CLOSE_GRACE`] once asked to close: close now.
    HeaderTimeout,
}

pub struct Watch {
    tracked: Tracked,
    /// How long the connection may go without a request in progress: the header timeout, and once asked to close
    /// the shorter of it and [`CLOSE_GRACE`].
    header_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// The timer was polled since it was last set, so it will wake the task when it fires.
    timer_armed: bool,
    /// The close notice was registered with the task's waker.
    notice_armed: bool,
    close_told: bool,
}

impl Watch {
    pub fn new(tracked: Tracked, header_timeout: Duration) -> Self {
        Self {
            tracked,
            header_timeout,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            timer_armed: false,
            notice_armed: false,
            close_told: false,
        }
    }

    /// The next event, each at most once except a header timeout; pending (with the task's waker registered) until
    /// one comes.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if !self.close_told && self.close_asked(cx) {
            self.close_told = true;
            self.header_timeout = self.header_timeout.min(CLOSE_GRACE);
            let since = self.tracked.waiting_since().unwrap_or_else(Instant::now);
            self.timer.as_mut().reset((since + self.header_timeout).into());
            self.timer_armed = false;
            return Poll::Ready(Event::Close);
        }
        loop {
            if self.timer_armed && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            self.timer_armed = true;
            std::task::ready!(self.timer.as_mut().poll(cx));
            // The timer runs from the last answer; a connection that got a request since is looked at again one
            // header timeout after that request's answer.
            match self.tracked.waiting_since() {
                Some(since) if since.elapsed() >= self.header_timeout => return Poll::Ready(Event::HeaderTimeout),
                since => {
                    let next = since.unwrap_or_else(Instant::now) + self.header_timeout;
                    self.timer.as_mut().reset(next.into());
                    self.timer_armed = false;
                }
            }
        }
    }

    fn close_asked(&mut self, cx: &Context<'_>) -> bool {
        if self.notice_armed {
            return self.tracked.close_asked();
        }
        self.notice_armed = true;
        self.tracked.poll_close_asked(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::idle::OpenConnections;

    #[tokio::test]
    async fn an_idle_connection_times_out_a_header_timeout_after_its_last_request() {
        let open = Arc::new(OpenConnections::default());
        let (tracked, activity) = open.add();
        let mut watch = Watch::new(tracked, Duration::from_millis(100));
        let started = Instant::now();
        let busy = activity.busy();
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(busy); // a request that took 150 ms: idle from now on, so closed at about 250 ms
        let event = std::future::poll_fn(|cx| watch.poll_event(cx)).await;
        assert_eq!(event, Event::HeaderTimeout);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "took {took:?}"
        );
    }

    /// Asked to close, a connection without a request in progress (here: one that has sent part of a head, which
    /// hyper would read on) is closed within [`CLOSE_GRACE`], not at the header timeout.
    #[tokio::test]
    async fn a_connection_asked_to_close_gets_a_short_grace() {
        let open = Arc::new(OpenConnections::default());
        let (tracked, _activity) = open.add();
        let mut watch = Watch::new(tracked, Duration::from_secs(60));
        let started = Instant::now();
        assert!(open.close_longest_idle());
        let first = std::future::poll_fn(|cx| watch.poll_event(cx)).await;
        assert_eq!(first, Event::Close);
        let then = tokio::time::timeout(Duration::from_secs(5), std::future::poll_fn(|cx| watch.poll_event(cx)))
            .await
            .expect("closed within the grace");
        assert_eq!(then, Event::HeaderTimeout);
        assert!(
            started.elapsed() <= CLOSE_GRACE + Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_close_notice_wakes_the_watching_task_once() {
        let open = Arc::new(OpenConnections::default());
        let (tracked, _activity) = open.add();
        let mut watch = Watch::new(tracked, Duration::from_secs(60));
        let watching = tokio::spawn(async move {
            let first = std::future::poll_fn(|cx| watch.poll_event(cx)).await;
            let again = tokio::time::timeout(
                Duration::from_millis(100),
                std::future::poll_fn(|cx| watch.poll_event(cx)),
            )
            .await;
            (first, again.is_err())
        });
        tokio::time::sleep(Duration::from_millis(50)).await; // the task is waiting
        assert!(open.close_longest_idle());
        let (first, then_nothing) = tokio::time::timeout(Duration::from_secs(1), watching)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(first, Event::Close);
        assert!(then_nothing, "told once");
    }
}
