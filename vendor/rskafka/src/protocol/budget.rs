//! luka patch: a limit on what reading one response may take: the bytes its batches decompress to, and the records
//! and headers it makes.
//!
//! A fetch asks the broker for at most so many bytes, but those are compressed: a batch of a few hundred bytes can
//! decompress to gigabytes (a gzip or zstd bomb written by any producer with access to the topic), or hold millions
//! of empty records or headers, each far larger in memory than on the wire. The reader of a response sets a budget
//! ([`within`]) for the synchronous decode of that response. Each compressed batch's decompressed bytes are spent
//! from it ([`Budgeted`], [`spend`]), and each record and header read its size in memory; a zstd frame may ask for
//! a window of at most [`zstd_window_log`]. A batch that would go past it is left unread: its records are
//! [`OverBudget`](super::record::ControlBatchOrRecords::OverBudget) and its header is kept.
//! [`Records`](super::primitives::Records) keeps the batches read before it, and it only when it is the first.
//!
//! The budget is kept per thread: a response is decoded in one synchronous call (no `.await` inside), so it cannot
//! be seen by another response's decode.

use std::cell::Cell;
use std::io::Read;

#[derive(Clone, Copy)]
struct Budget {
    limit: usize,
    left: usize,
    spent_past: bool,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Runs `read` within a budget of `limit` bytes (`None`: no limit, as upstream).
pub(crate) fn within<T>(limit: Option<usize>, read: impl FnOnce() -> T) -> T {
    let budget = limit.map(|limit| Budget {
        limit,
        left: limit,
        spent_past: false,
    });
    /// Puts the outer budget back, also when `read` panics.
    struct Restore(Option<Budget>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUDGET.with(|b| b.replace(budget)));
    read()
}

/// Spends `bytes` of the budget; an error once the budget is spent past.
pub(crate) fn spend(bytes: usize) -> std::io::Result<()> {
    BUDGET.with(|b| {
        let Some(mut budget) = b.get() else {
            return Ok(());
        };
        if budget.spent_past || bytes > budget.left {
            b.set(Some(Budget {
                left: 0,
                spent_past: true,
                ..budget
            }));
            return Err(std::io::Error::other(format!(
                "more than {} bytes decompressed",
                budget.limit
            )));
        }
        budget.left -= bytes;
        b.set(Some(budget));
        Ok(())
    })
}

/// The budget's limit, if a read failed because the budget was spent past.
pub(crate) fn spent_past() -> Option<usize> {
    BUDGET.with(|b| {
        b.get()
            .filter(|budget| budget.spent_past)
            .map(|budget| budget.limit)
    })
}

/// Marks the budget spent past: the read needs more than it allows in a way counted elsewhere (a zstd window).
pub(crate) fn spend_all() {
    let _ = spend(usize::MAX);
}

/// The largest window (log2 of its bytes) a zstd frame may ask for within the budget, if there is one: zstd makes
/// the window a frame asks for before it decodes a byte of it, up to 2^27 bytes by its own limit. The budget rounded
/// up to a power of two, and at least 2^23 (8 MiB: zstd's levels up to 19 ask for no more).
pub(crate) fn zstd_window_log() -> Option<u32> {
    BUDGET.with(|b| {
        b.get().map(|budget| {
            let log = usize::BITS - budget.limit.saturating_sub(1).leading_zeros();
            log.clamp(23, 27)
        })
    })
}

/// What is left of the budget (`usize::MAX` without one).
fn left() -> usize {
    BUDGET.with(|b| b.get().map_or(usize::MAX, |budget| budget.left))
}

/// A decompressing reader whose output is spent from the budget.
pub(crate) struct Budgeted<R>(pub(crate) R);

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // No more than one byte past what is left, so a large read cannot decompress far past the budget first.
        let most = buf.len().min(left().saturating_add(1));
        let n = self.0.read(&mut buf[..most])?;
        spend(n)?;
        Ok(n)
    }
}
