//! A time limit for a future that costs nothing when the future finishes at once.
//!
//! Registering a tokio timer takes a lock on the timer wheel and a deregistration when dropped; most requests
//! (a handler that answers without waiting, a body already in the buffer) never need one. So the timer is made
//! only when the future first has to wait, with the deadline counted from the start.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The limit passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `future`'s output, or [`Elapsed`] if it did not finish within `limit`.
pub fn within<F: Future>(limit: Duration, future: F) -> Within<F> {
    until(Instant::now() + limit, future)
}

/// Like [`within`], with `limit` counted from `started`, a time the caller has already read (one clock read less per
/// request on the server's path).
pub fn within_since<F: Future>(started: std::time::Instant, limit: Duration, future: F) -> Within<F> {
    until(Instant::from_std(started) + limit, future)
}

fn until<F: Future>(deadline: Instant, future: F) -> Within<F> {
    Within {
        future,
        deadline,
        timer: None,
    }
}

pin_project_lite::pin_project! {
    /// The future [`within`] gives.
    pub struct Within<F> {
        #[pin]
        future: F,
        deadline: Instant,
        // Made the first time the future has to wait.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Within<F> {
    /// The future itself, to go on with after the limit passed.
    pub fn future(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().future
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| Err(Elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_futures_pass_and_slow_ones_time_out() {
        assert_eq!(within(Duration::from_millis(10), async { 7 }).await, Ok(7));
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let started = std::time::Instant::now();
        assert_eq!(within(Duration::from_millis(20), slow).await, Err(Elapsed));
        assert!(started.elapsed() < Duration::from_secs(2));
        let in_time = tokio::time::sleep(Duration::from_millis(5));
        assert_eq!(within(Duration::from_secs(2), in_time).await, Ok(()));
        // Counted from a time already past: the limit is shorter by what has elapsed.
        let earlier = std::time::Instant::now() - Duration::from_millis(50);
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let started = std::time::Instant::now();
        assert_eq!(
            within_since(earlier, Duration::from_millis(60), slow).await,
            Err(Elapsed)
        );
        assert!(started.elapsed() < Duration::from_millis(1000));
    }
}
