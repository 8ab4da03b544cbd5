//! The open connections, each with whether it is serving a request and since when it has been idle: when every
//! connection slot is taken, the connection idle the longest is asked to close (a keep-alive connection that a
//! client re-uses every few seconds would otherwise hold its slot for ever); on shutdown, all of them are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Context;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

/// Every open connection, by a number of its own.
#[derive(Debug, Default)]
pub struct OpenConnections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// One connection's state, shared with the requests it serves.
#[derive(Debug)]
pub struct Activity {
    /// Requests in progress on it.
    busy: AtomicUsize,
    /// Since when it has had none (only meaningful while `busy` is 0).
    idle_since: Mutex<Instant>,
    /// Asked to close: set before `close_waker` is woken, and never cleared.
    close_asked: AtomicBool,
    /// Bytes came in while no request was in progress nor its answer being written, and no request has begun since:
    /// a head is on its way.
    head_begun: AtomicBool,
    /// An answer was made and not yet flushed to the socket (bytes read meanwhile may be its request's own, or a
    /// pipelined request's, not a head begun on an idle connection).
    answering: AtomicBool,
    /// Bytes were written since the connection's watch last looked ([`Tracked::taking_in_answer`]), or since the
    /// answer going out was made.
    wrote: AtomicBool,
    /// The watch found an answer still going out: once it is out, the connection is idle from then, not from when
    /// the answer was made.
    slow_answer: AtomicBool,
    close_waker: AtomicWaker,
}

/// A request in progress on its connection; the connection is idle again when it is dropped.
pub struct Busy(Arc<Activity>);

/// A connection's entry in [`OpenConnections`], removed when dropped.
pub struct Tracked {
    id: u64,
    open: Arc<OpenConnections>,
    activity: Arc<Activity>,
}

impl OpenConnections {
    /// Tracks a new connection (idle until its first request).
    pub fn add(self: &Arc<Self>) -> (Tracked, Arc<Activity>) {
        let activity = Arc::new(Activity {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close_asked: AtomicBool::new(false),
            head_begun: AtomicBool::new(false),
            answering: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            slow_answer: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::clone(&activity));
        let tracked = Tracked {
            id,
            open: Arc::clone(self),
            activity: Arc::clone(&activity),
        };
        (tracked, activity)
    }

    /// Asks the connection idle the longest to close (one writing an answer only when none is idle), of those not
    /// asked yet (one asked closes within a second,
    /// [`super::watch`]; asking it again would only delay asking the next); gives whether there was one.
    pub fn close_longest_idle(&self) -> bool {
        let open = self.lock();
        let longest = open
            .values()
            .filter(|a| !a.close_asked.load(Ordering::SeqCst))
            .filter_map(|a| Some((a.waiting_since()?, a)))
            // One still writing an answer only when none is idle between requests: its client may be taking it in.
            .min_by_key(|(since, a)| (a.answering.load(Ordering::Relaxed), *since));
        match longest {
            Some((_, activity)) => {
                activity.ask_to_close();
                true
            }
            None => false,
        }
    }

    /// Asks every connection to close (each finishes the request it is serving), then waits up to `grace` for them.
    pub async fn close_all(&self, grace: Duration) -> bool {
        for activity in self.lock().values() {
            activity.ask_to_close();
        }
        let deadline = Instant::now() + grace;
        while !self.lock().is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Activity {
    /// Since when the connection has been waiting for its next request (opened, or last request answered); `None`
    /// while it serves one.
    fn waiting_since(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn ask_to_close(&self) {
        self.close_asked.store(true, Ordering::SeqCst);
        self.close_waker.wake();
    }

    /// Bytes came in on the connection (see [`Tracked::head_begun`]).
    pub fn read_some(&self) {
        if self.busy.load(Ordering::Relaxed) == 0
            && !self.answering.load(Ordering::Relaxed)
            && !self.head_begun.load(Ordering::Relaxed)
        {
            self.head_begun.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the connection has been asked to close.
    pub fn close_asked(&self) -> bool {
        self.close_asked.load(Ordering::SeqCst)
    }

    /// Bytes were written to the connection's socket: its client is taking them in.
    pub fn wrote_some(&self) {
        if !self.wrote.load(Ordering::Relaxed) {
            self.wrote.store(true, Ordering::Relaxed);
        }
    }

    /// What was written to the connection has reached the socket: an answer made before is out.
    pub fn flushed(&self) {
        if self.answering.load(Ordering::Relaxed) {
            self.answering.store(false, Ordering::Relaxed);
            if self.slow_answer.swap(false, Ordering::Relaxed) {
                *self.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            }
        }
    }

    /// Marks a request in progress until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.head_begun.store(false, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.wrote.store(false, Ordering::Relaxed);
        self.0.answering.store(true, Ordering::Relaxed);
        *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracked {
    /// Whether the connection has been asked to close; the task of `cx` is woken when it is (from now on).
    pub fn poll_close_asked(&self, cx: &Context<'_>) -> bool {
        self.activity.close_waker.register(cx.waker());
        self.close_asked()
    }

    /// Whether the connection has been asked to close (a flag, nothing registered: see [`Self::poll_close_asked`]).
    pub fn close_asked(&self) -> bool {
        self.activity.close_asked.load(Ordering::SeqCst)
    }

    /// Whether bytes of a request head have come in since the connection's last request began (or since it
    /// opened): it is not idle between requests, but not serving one either.
    #[cfg(test)]
    pub fn head_begun(&self) -> bool {
        self.activity.head_begun.load(Ordering::Relaxed)
    }

    /// Whether the connection is between requests but not idle: bytes of a request head have come in since its last
    /// request began (or since it opened), or an answer is not out yet (its client may not be reading it).
    pub fn lingering(&self) -> bool {
        let activity = &self.activity;
        activity.busy.load(Ordering::Relaxed) == 0
            && (activity.head_begun.load(Ordering::Relaxed) || activity.answering.load(Ordering::Relaxed))
    }

    /// Whether an answer is going out and its client took in some of it since the last look: it is not idle, and
    /// counts as active from now (for the header timeout, and for which connection is asked to close first).
    pub fn taking_in_answer(&self) -> bool {
        let activity = &self.activity;
        let going = activity.answering.load(Ordering::Relaxed) && activity.wrote.swap(false, Ordering::Relaxed);
        if going {
            *activity.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            activity.slow_answer.store(true, Ordering::Relaxed);
        }
        going
    }

    /// See [`Activity::waiting_since`].
    pub fn waiting_since(&self) -> Option<Instant> {
        self.activity.waiting_since()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_connection_idle_longest_is_closed_first_and_busy_ones_never() {
        let open = Arc::new(OpenConnections::default());
        let (first, first_activity) = open.add();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (second, _) = open.add();
        let busy = first_activity.busy();
        drop(busy); // the first was busy a moment ago: the second has been idle longer now
        let woken = Arc::new(Woken::default());
        let waker = std::task::Waker::from(Arc::clone(&woken));
        assert!(!second.poll_close_asked(&Context::from_waker(&waker)));
        assert!(open.close_longest_idle());
        assert!(woken.0.load(Ordering::SeqCst), "the task waiting on it is woken");
        assert!(second.close_asked() && !first.close_asked());
        let _busy = first_activity.busy();
        drop(second);
        assert!(!open.close_longest_idle(), "the only connection left is busy");
        drop(first);
        assert!(open.close_all(Duration::from_millis(10)).await);
    }
}
