//! The coarse clock Luau's interrupt reads: nanoseconds of the kernel's `CLOCK_MONOTONIC_COARSE`, and how far it may
//! lag the precise clock.
//!
//! The interrupt runs a dozen times in even a trivial handler and millions of times a second in a loop. The coarse
//! clock is the time of the kernel's last scheduler tick (every 1 to 10 ms), read from a page the kernel shares
//! with the process (vDSO): about 7 ns, against 25 ns for the precise clock, with no system call and no thread of
//! luka's own. The 1 ms ticker thread it replaces woke about a thousand times a second while Lua ran, each time
//! taking the core from the request it was timing when both are pinned to one.
//!
//! The coarse clock only tells when to look closer: a budget is checked against the precise clock once the coarse
//! one is within its resolution of the deadline ([`Watch`]), so a handler is stopped neither early nor late.

use std::time::Duration;

/// When to start checking a budget precisely: from the coarse time at which its deadline may already have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch(u64);

impl Watch {
    /// Never: no budget runs.
    pub const NEVER: Self = Self(u64::MAX);

    /// For a budget of `remaining` starting now.
    pub fn from_now(remaining: Duration) -> Self {
        Self::at(now_ns(), remaining, resolution_ns())
    }

    /// For a budget of `remaining` starting when the coarse clock read `coarse_now_ns`. The coarse clock shows a
    /// time up to `resolution_ns` in the past, at the start and at every later look: the deadline can have passed
    /// once it has advanced by `remaining` less one resolution, and not before it has advanced by `remaining` less
    /// two.
    fn at(coarse_now_ns: u64, remaining: Duration, resolution_ns: u64) -> Self {
        let remaining = u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX - 1);
        Self(
            coarse_now_ns
                .saturating_add(remaining)
                .saturating_sub(resolution_ns)
                .min(u64::MAX - 1),
        )
    }

    /// Whether the budget may be spent by now: then the precise clock decides.
    pub fn due(self) -> bool {
        self.0 != u64::MAX && now_ns() >= self.0
    }

    pub fn to_raw(self) -> u64 {
        self.0
    }

    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

#[cfg(target_os = "linux")]
fn now_ns() -> u64 {
    nanos(rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse))
}

/// The coarse clock's step, asked once.
#[cfg(target_os = "linux")]
fn resolution_ns() -> u64 {
    static RESOLUTION: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RESOLUTION.get_or_init(|| nanos(rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse)))
}

#[cfg(target_os = "linux")]
fn nanos(time: rustix::time::Timespec) -> u64 {
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let nanoseconds = u64::try_from(time.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanoseconds)
}

/// Elsewhere the precise clock serves as the coarse one.
#[cfg(not(target_os = "linux"))]
fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(EPOCH.get_or_init(std::time::Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
}

#[cfg(not(target_os = "linux"))]
fn resolution_ns() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// The coarse clock at real time `t` (ns): the last tick of `step` at or before it.
    fn coarse(t: u64, step: u64) -> u64 {
        t / step * step
    }

    #[test]
    fn the_watch_is_due_by_the_deadline_and_not_two_steps_before_it() {
        let step = 4 * MS;
        let budget = Duration::from_millis(50);
        // Starts anywhere within a tick, and is looked at every 100 µs after.
        for start in (0..step).step_by(250_000).map(|offset| 1_000 * MS + offset) {
            let watch = Watch::at(coarse(start, step), budget, step);
            let deadline = start + 50 * MS;
            let first_due = (start..deadline + step)
                .step_by(100_000)
                .find(|&t| coarse(t, step) >= watch.0)
                .expect("due at some point");
            assert!(
                first_due <= deadline,
                "start {start}: due at {first_due}, after the deadline {deadline}"
            );
            assert!(
                first_due + 2 * step > deadline,
                "start {start}: due at {first_due}, two steps before the deadline {deadline}"
            );
        }
    }

    #[test]
    fn a_watch_never_overflows_and_never_is_never_due() {
        assert!(!Watch::NEVER.due());
        let far = Watch::at(u64::MAX - 5, Duration::from_secs(u64::MAX), 4 * MS);
        assert_ne!(far, Watch::NEVER);
        let soon = Watch::at(0, Duration::ZERO, 4 * MS);
        assert_eq!(soon.0, 0);
    }

    #[test]
    fn the_clock_moves_forward_and_its_step_is_known() {
        let first = now_ns();
        std::thread::sleep(Duration::from_millis(30));
        let later = now_ns();
        assert!(later > first, "the coarse clock did not move in 30 ms");
        assert!(resolution_ns() <= 10 * MS, "a step of {} ns", resolution_ns());
    }
}
