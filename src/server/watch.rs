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

/// How long a connection asked to close may take over a request head it has begun, or over taking in an answer,
/// before it is closed: hyper closes a connection idle between requests at once, and finishes the request it is
/// serving, but reads on a head begun and writes on an answer its client does not read, so a client that sent one
/// byte of a head, or never reads, would keep its slot until the header timeout (and a few such addresses could
/// hold every slot, none of them closed to make room).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection's task should act.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Its slot is wanted or the server is shutting down: finish the request in progress, if any, then close.
    Close,
    /// No whole request head within the header timeout (a slow head, or a keep-alive connection left idle), or a
    /// head begun or an answer unread when asked to close not finished within [`CLOSE_GRACE`]: close now.
    HeaderTimeout,
}

pub struct Watch {
    tracked: Tracked,
    header_timeout: Duration,
    /// Asked to close while lingering ([`Tracked::lingering`]): by when it must be over.
    head_by: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// The timer was polled since it was last set, so it will wake the task when it fires.
    timer_armed: bool,
    /// The close notice was registered with the task's waker.
    notice_armed: bool,
    close_told: bool,
    /// Set when a grace first starts (asked to close, once lingering): a client taking in its answer may go on
    /// until then, however slowly (a client reading a few kilobytes a second would otherwise keep its slot for as
    /// long as its answers last).
    latest_by: Option<Instant>,
}

impl Watch {
    pub fn new(tracked: Tracked, header_timeout: Duration) -> Self {
        Self {
            tracked,
            header_timeout,
            head_by: None,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            timer_armed: false,
            notice_armed: false,
            close_told: false,
            latest_by: None,
        }
    }

    /// The next event, each at most once except a header timeout; pending (with the task's waker registered) until
    /// one comes.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if !self.close_told && self.close_asked(cx) {
            self.close_told = true;
            self.grace_if_lingering();
            return Poll::Ready(Event::Close);
        }
        if self.close_told && self.head_by.is_none() {
            // Asked while serving a request whose answer is now made: the grace starts as the answer does.
            self.grace_if_lingering();
        }
        loop {
            if self.timer_armed && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            self.timer_armed = true;
            std::task::ready!(self.timer.as_mut().poll(cx));
            // The timer runs from the last answer; a connection that got a request since is looked at again one
            // header timeout after that request's answer. One lingering when asked to close has until `head_by` (a
            // head that became a request, or an answer that went out, is over). A client taking in its answer,
            // however slowly, is not cut: each look that finds some of it taken moves both deadlines on (once asked
            // to close, up to `latest_by`).
            let now = Instant::now();
            if self.tracked.taking_in_answer() && self.head_by.is_some() {
                self.head_by = Some(self.grace_from(now));
            }
            self.head_by = self.head_by.filter(|_| self.tracked.lingering());
            let head_by = self.head_by;
            match self.tracked.waiting_since() {
                Some(since) if since.elapsed() >= self.header_timeout || head_by.is_some_and(|by| now >= by) => {
                    return Poll::Ready(Event::HeaderTimeout);
                }
                since => {
                    let mut next = since.unwrap_or(now) + self.header_timeout;
                    if let Some(by) = head_by {
                        next = next.min(by.max(now));
                    }
                    self.timer.as_mut().reset(next.into());
                    self.timer_armed = false;
                }
            }
        }
    }

    /// When a grace starting `now` ends: [`CLOSE_GRACE`] on, and no later than `latest_by`.
    fn grace_from(&self, now: Instant) -> Instant {
        let by = now + CLOSE_GRACE.min(self.header_timeout);
        self.latest_by.map_or(by, |latest_by| by.min(latest_by))
    }

    /// Asked to close: a connection lingering between requests has [`CLOSE_GRACE`] to be done (moved on while it
    /// takes in its answer, up to a header timeout from now).
    fn grace_if_lingering(&mut self) {
        if self.tracked.lingering() {
            let now = Instant::now();
            self.latest_by.get_or_insert(now + self.header_timeout);
            let by = self.grace_from(now);
            self.head_by = Some(by);
            self.timer.as_mut().reset(by.into());
            self.timer_armed = false;
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

    /// Asked to close with a head begun (which hyper would read on), or an answer not out yet (which hyper would
    /// go on writing to a client that does not read), a connection is closed within [`CLOSE_GRACE`], not at the
    /// header timeout; so is one asked while serving a request, once its answer is made and not taken in. One idle
    /// between requests is left to hyper (which closes it at once).
    #[tokio::test]
    async fn a_connection_lingering_when_asked_to_close_gets_a_short_grace() {
        let open = Arc::new(OpenConnections::default());
        let (begun, begun_activity) = open.add();
        let (unread, unread_activity) = open.add();
        let (serving, serving_activity) = open.add();
        let (idle, _) = open.add();
        begun_activity.read_some();
        drop(unread_activity.busy());
        let request = serving_activity.busy();
        let mut watches: Vec<Watch> = [begun, unread, serving, idle]
            .into_iter()
            .map(|tracked| Watch::new(tracked, Duration::from_secs(60)))
            .collect();
        let started = Instant::now();
        assert!(
            !open.close_all(Duration::ZERO).await,
            "every one asked, none closed yet"
        );
        for watch in &mut watches {
            assert_eq!(std::future::poll_fn(|cx| watch.poll_event(cx)).await, Event::Close);
        }
        drop(request); // its answer is made, and never read
        for (name, watch) in ["a head begun", "an answer unread", "an answer made after"]
            .into_iter()
            .zip(&mut watches)
        {
            let then = tokio::time::timeout(Duration::from_secs(30), std::future::poll_fn(|cx| watch.poll_event(cx)))
                .await
                .expect(name);
            assert_eq!(then, Event::HeaderTimeout, "{name}");
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        let idle = &mut watches[3];
        let left = tokio::time::timeout(Duration::from_secs(2), std::future::poll_fn(|cx| idle.poll_event(cx))).await;
        assert!(left.is_err(), "idle between requests: left to hyper");
    }

    /// Asks a connection whose answer goes out slowly (some of it every 250 ms, for 3 s) to close, with `header`
    /// as its header timeout; how long until it was cut, and whether its client was still taking the answer in.
    async fn cut_while_taking_in(header: Duration) -> (Duration, bool) {
        let open = Arc::new(OpenConnections::default());
        let (tracked, activity) = open.add();
        let mut watch = Watch::new(tracked, header);
        drop(activity.busy()); // the answer is made, and goes out slowly
        let taking = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                for _ in 0..12 {
                    activity.wrote_some();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        assert!(!open.close_all(Duration::ZERO).await);
        assert_eq!(std::future::poll_fn(|cx| watch.poll_event(cx)).await, Event::Close);
        let started = Instant::now();
        let event = tokio::time::timeout(Duration::from_secs(10), std::future::poll_fn(|cx| watch.poll_event(cx)))
            .await
            .expect("cut at last");
        assert_eq!(event, Event::HeaderTimeout);
        (started.elapsed(), !taking.is_finished())
    }

    /// A client taking in its answer slowly is not cut when its connection is asked to close, only once it stops
    /// taking it in; but not later than a header timeout after it was asked, however it goes on.
    #[tokio::test]
    async fn a_client_taking_in_its_answer_slowly_is_cut_only_when_it_stops_or_at_last() {
        let (took, still_taking) = cut_while_taking_in(Duration::from_secs(5)).await;
        assert!(!still_taking && took >= Duration::from_millis(2500), "{took:?}");
        let (took, still_taking) = cut_while_taking_in(Duration::from_millis(1200)).await;
        assert!(still_taking && took < Duration::from_millis(2500), "{took:?}");
    }

    /// A request served for longer than the header timeout after its connection was asked to close (a produce
    /// waiting on a slow cluster at shutdown) still gets its grace once its answer is made: the answer goes out.
    #[tokio::test]
    async fn an_answer_made_long_after_the_close_was_asked_gets_its_grace() {
        let open = Arc::new(OpenConnections::default());
        let (tracked, activity) = open.add();
        let mut watch = Watch::new(tracked, Duration::from_millis(300));
        let request = activity.busy();
        assert!(!open.close_all(Duration::ZERO).await);
        assert_eq!(std::future::poll_fn(|cx| watch.poll_event(cx)).await, Event::Close);
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(request); // the answer is made
        let at_once = tokio::time::timeout(
            Duration::from_millis(150),
            std::future::poll_fn(|cx| watch.poll_event(cx)),
        )
        .await;
        assert!(at_once.is_err(), "not cut as its answer is made: {at_once:?}");
    }

    /// Bytes read while an answer is still being written (its request's rest, or a pipelined request) are no head
    /// begun on an idle connection: once its answer is out, they are.
    #[test]
    fn bytes_read_before_an_answer_is_out_are_no_head_begun() {
        let open = Arc::new(OpenConnections::default());
        let (tracked, activity) = open.add();
        drop(activity.busy());
        activity.read_some();
        assert!(!tracked.head_begun(), "the answer is not out yet");
        activity.flushed();
        activity.read_some();
        assert!(tracked.head_begun());
        drop(activity.busy());
        assert!(!tracked.head_begun(), "a request began");
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
