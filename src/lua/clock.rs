//! The coarse clock Luau's interrupt reads: nanoseconds of the kernel's `CLOCK_MONOTONIC_COARSE`, and how far it may
//! lag the precise clock.
//!
//! The interrupt runs a dozen times in even a trivial handler and millions of times a second in a loop. The coarse
//! clock is the time the kernel's timekeeping last advanced to, in whole steps of a scheduler tick (1 to 10 ms),
//! read from a page the kernel shares with the process (vDSO): about 7 ns, against 25 ns for the precise clock,
//! with no system call and no thread of luka's own. (Where no vDSO is mapped, rustix makes the system call.) The
//! 1 ms ticker thread it replaces woke about a thousand times a second while Lua ran, each time taking the core from
//! the request it was timing when both are pinned to one.
//!
//! The coarse clock only tells when to look closer: a budget is checked against the precise clock once the coarse
//! one is within [`LAG_STEPS`] steps of the deadline ([`Watch`]). So a handler is never stopped early, and is
//! stopped at the first interrupt past its deadline unless the kernel's ticks come more than a step late.
//!
//! Wall time is only an upper bound of the time a handler ran: it also counts the time the kernel gave the core to
//! another thread, or held the whole process back because its container used up its CPU quota (tens of
//! milliseconds at a time). So once the wall clock says a budget is spent, the thread's own CPU clock decides
//! ([`CpuMark`]); reading it is a system call (about 0.6 µs on the machine of bench/README.md, more than all of a
//! trivial handler's interrupts), so it is read when a turn starts only if the thread's last reading is older
//! than [`SAMPLE_AGE`], and otherwise only once the wall clock has run out (and when a turn longer than that
//! stops, to charge it). Within a turn, a handler is stopped within [`SAMPLE_AGE`] of CPU time after its budget is
//! spent, never before; each turn is charged at most [`SAMPLE_AGE`] more than it spent (a short turn its wall time,
//! a longer one its CPU time rounded up), so a handler that waits for Kafka between turns can be stopped early by
//! that much a turn, and never gets more than its budget.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How many steps the coarse clock may fall behind the precise one between two reads. Timekeeping advances in
/// whole steps, each recorded at the next tick, up to a step after the time it records: the clock shows a time up
/// to a step older at one read than at another, more when a tick comes late. Two more steps are room for that.
const LAG_STEPS: u64 = 3;

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

    /// For a budget of `remaining` starting when the coarse clock read `coarse_now_ns`, in steps of `step_ns`. By
    /// the deadline the coarse clock has advanced by at least `remaining` less [`LAG_STEPS`] steps.
    fn at(coarse_now_ns: u64, remaining: Duration, step_ns: u64) -> Self {
        let remaining = u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX - 1);
        Self(
            coarse_now_ns
                .saturating_add(remaining)
                .saturating_sub(LAG_STEPS.saturating_mul(step_ns))
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

/// How old the thread's CPU-time reading may be when a turn starts. A turn's CPU time is known to within this.
pub const SAMPLE_AGE: Duration = Duration::from_millis(1);

thread_local! {
    /// The calling thread's last CPU-time reading, and when it was taken.
    static SAMPLE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Where the running thread's CPU clock stood when a turn started, to within [`SAMPLE_AGE`]: a reading `cpu_ns`
/// taken `lead_ns` of wall time before the start. Only meaningful on the thread that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMark {
    pub cpu_ns: u64,
    pub lead_ns: u64,
}

impl CpuMark {
    /// For a turn starting at `now` on the calling thread.
    pub fn at(now: Instant) -> Self {
        SAMPLE.with(|sample| {
            let (taken, cpu_ns) = match sample.get() {
                Some((taken, cpu_ns)) if now.saturating_duration_since(taken) <= SAMPLE_AGE => (taken, cpu_ns),
                _ => {
                    let fresh = (now, thread_cpu_ns());
                    sample.set(Some(fresh));
                    fresh
                }
            };
            Self {
                cpu_ns,
                lead_ns: duration_ns(now.saturating_duration_since(taken)),
            }
        })
    }

    /// CPU time the calling thread has certainly spent since the turn started: all it spent since the reading,
    /// less the wall time between the reading and the start (it cannot have spent more in that time).
    pub fn spent_at_least(self) -> u64 {
        self.spent_at_most().saturating_sub(self.lead_ns)
    }

    /// CPU time the calling thread may have spent since the turn started: all it spent since the reading.
    pub fn spent_at_most(self) -> u64 {
        thread_cpu_ns().saturating_sub(self.cpu_ns)
    }

    /// What a turn that took `wall_ns` since its start is charged: its wall time when that is at most
    /// [`SAMPLE_AGE`], else the CPU time its thread may have spent (rounded up by under [`SAMPLE_AGE`], so that no run
    /// of turns is charged less than it spent), never more than its wall time.
    pub fn charge(self, wall_ns: u64) -> u64 {
        if wall_ns > duration_ns(SAMPLE_AGE) {
            self.spent_at_most().min(wall_ns)
        } else {
            wall_ns
        }
    }
}

/// Runs `work` (done in Rust on a handler's behalf, between its turns) and charges it to `remaining` as a turn is
/// charged ([`CpuMark::charge`]). True when that spends the budget.
pub fn charged<T>(remaining: &mut Duration, work: impl FnOnce() -> T) -> (T, bool) {
    let start = Instant::now();
    let mark = CpuMark::at(start);
    let output = work();
    let spent = Duration::from_nanos(mark.charge(duration_ns(start.elapsed())));
    let spent_all = spent >= *remaining;
    *remaining = remaining.saturating_sub(spent);
    (output, spent_all)
}

/// `duration` in nanoseconds, short of `u64::MAX` (which stands for "never" beside it).
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX - 1)
        .min(u64::MAX - 1)
}

/// The CPU time the calling thread has used.
#[cfg(target_os = "linux")]
pub fn thread_cpu_ns() -> u64 {
    nanos(rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime))
}

/// Elsewhere the precise wall clock stands in for it: a turn's CPU time is then its wall time, as before.
#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_ns() -> u64 {
    now_ns()
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

/// Elsewhere the precise clock serves as the coarse one (a few nanoseconds more per interrupt).
#[cfg(not(target_os = "linux"))]
fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    duration_ns(EPOCH.get_or_init(Instant::now).elapsed())
}

#[cfg(not(target_os = "linux"))]
fn resolution_ns() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// The coarse clock at real time `t` (ns), as Linux keeps it: timekeeping advances to the points `phase + k *
    /// step`, each made visible `delay` after it (at the next tick, up to a step later, or later still when the
    /// tick comes late).
    fn coarse(t: u64, step: u64, phase: u64, delay: u64) -> u64 {
        phase + (t - phase - delay) / step * step
    }

    #[test]
    fn the_watch_is_due_by_the_deadline_however_the_clock_lags() {
        let step = 4 * MS;
        let budget = Duration::from_millis(50);
        let mut longest_lead = 0;
        for phase in (0..step).step_by(1_000_000) {
            // The tick that showed the start may have been on time, and the ticks after it late, or the other way.
            for (start_delay, later_delay) in (0..2 * step)
                .step_by(500_000)
                .flat_map(|d0| (0..2 * step).step_by(500_000).map(move |d1| (d0, d1)))
            {
                for start in (0..step).step_by(500_000).map(|offset| 1_000 * MS + offset) {
                    let watch = Watch::at(coarse(start, step, phase, start_delay), budget, step);
                    let deadline = start + 50 * MS;
                    let first_due = (deadline - 8 * step..=deadline + 4 * step)
                        .step_by(100_000)
                        .find(|&t| coarse(t, step, phase, later_delay) >= watch.0)
                        .expect("due at some point");
                    assert!(
                        first_due <= deadline,
                        "phase {phase}, delays {start_delay} and {later_delay}, start {start}: due at {first_due}, \
                         after the deadline {deadline}"
                    );
                    longest_lead = longest_lead.max(deadline - first_due);
                }
            }
        }
        // The precise clock is read only near the deadline: from at most six steps before it.
        assert!(
            longest_lead < 6 * step,
            "precise reads from {longest_lead} ns before the deadline"
        );
    }

    #[test]
    fn a_watch_never_overflows_and_never_is_never_due() {
        assert!(!Watch::NEVER.due());
        let far = Watch::at(u64::MAX - 5, Duration::from_secs(u64::MAX), 4 * MS);
        assert_ne!(far, Watch::NEVER);
        let soon = Watch::at(0, Duration::ZERO, 4 * MS);
        assert_eq!(soon.0, 0);
        let huge_step = Watch::at(10, Duration::from_secs(1), u64::MAX);
        assert_eq!(huge_step.0, 0);
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
