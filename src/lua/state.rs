//! What a VM, its interrupt handler and its module callbacks share: the request whose coroutine is running now,
//! and its CPU budget.
//!
//! A VM runs one coroutine at a time (its lock is held for each resume), so "the current request" is well
//! defined: [`VmShared::enter`] sets it before a coroutine is resumed and [`VmShared::leave`] clears it after. The
//! interrupt (called by Luau at calls, returns and loop back-edges) stops the coroutine once its budget is spent,
//! and keeps stopping it, so a `pcall` around a runaway loop cannot swallow the limit.
//!
//! The interrupt runs a dozen times in even a trivial handler and millions of times a second in a loop, so it
//! reads the kernel's coarse clock ([`super::clock`]), and the precise one only once the coarse one says the
//! deadline is near. The budget is CPU time: wall time, read when a coroutine is resumed and when it stops, bounds
//! it from above, and once the wall clock says the budget is spent (or a turn ran longer than a millisecond) the
//! thread's CPU clock decides, so time the kernel took the core away for is not charged.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::clock::{CpuMark, Watch, duration_ns};
use crate::kafka::ErrorClass;

/// An HTTP request as the server hands it to a function: its method and URI as hyper parsed them (moved here, not
/// copied).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: hyper::Method,
    pub uri: hyper::Uri,
    /// As received (names lower-case); repeated names keep every value.
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub remote_addr: SocketAddr,
    /// The `[[users]]` name, on routes with `auth = true`.
    pub user: Option<String>,
}

impl HttpRequest {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

/// The request a coroutine serves, as its module callbacks see it.
#[derive(Debug)]
pub struct RequestState {
    /// The handler file, for logs.
    pub function: Arc<str>,
    /// What the lazily built fields of `req` (body, headers, query, params, ...) are made from.
    pub request: Box<HttpRequest>,
    /// The route's path parameters.
    pub params: Vec<(String, String)>,
    /// The handler file's [`Compiled::reads_body`](super::compile::Compiled::reads_body), set when `req.body` is made
    /// on first read.
    pub reads_body: Option<Arc<AtomicBool>>,
    outcome: Mutex<Outcome>,
}

/// Facts a handler's module calls leave behind, used to answer when the handler then fails without catching.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// `req:json()` failed: the client sent a bad body (400).
    pub bad_request: Option<String>,
    /// `kafka.produce` failed because a cluster was down (503) or slow (504).
    pub kafka_outage: Option<KafkaOutage>,
    /// `kafka.produce` was refused by the route's `records_per_second` (429, or 413 past the burst), with the error
    /// the handler was given.
    pub records_refused: Option<(crate::limits::RecordsRefused, String)>,
    /// `kafka.produce` named more messages than `[server] max_messages_per_request` (413), with the error the
    /// handler was given.
    pub too_many: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KafkaOutage {
    pub cluster: String,
    /// [`ErrorClass::Unavailable`] or [`ErrorClass::Timeout`], as the Kafka error classed itself.
    pub class: ErrorClass,
    /// The error the handler was given, to recognise it if the handler fails with it.
    pub message: String,
}

impl RequestState {
    pub fn new(function: Arc<str>, request: impl Into<Box<HttpRequest>>, params: Vec<(String, String)>) -> Self {
        Self {
            function,
            request: request.into(),
            params,
            reads_body: None,
            outcome: Mutex::new(Outcome::default()),
        }
    }

    /// Notes reads of `req.body` in `reads_body`, the handler file's flag.
    pub fn noting_body_reads(mut self, reads_body: &Arc<AtomicBool>) -> Self {
        self.reads_body = Some(Arc::clone(reads_body));
        self
    }

    pub fn record(&self, change: impl FnOnce(&mut Outcome)) {
        change(&mut self.outcome.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Puts what a parked call waited for into Lua: the values its coroutine is resumed with (run under the VM's lock).
pub type Resume = Box<dyn FnOnce(&mlua::Lua) -> mlua::Result<mlua::MultiValue> + Send>;

/// What a module call leaves its request's task to wait on (a produce waiting for Kafka) while the coroutine is
/// suspended: polled outside the VM, its output resumes the coroutine.
pub type Parked = Pin<Box<dyn Future<Output = Resume> + Send>>;

pub struct VmShared {
    epoch: Instant,
    /// Nanoseconds since `epoch` when the running coroutine's budget ends if it keeps its core till then;
    /// `u64::MAX` when none runs.
    deadline_ns: AtomicU64,
    /// Nanoseconds since `epoch` when the running turn started, and its budget.
    turn_start_ns: AtomicU64,
    budget_ns: AtomicU64,
    /// The running thread's CPU clock at the turn's start ([`CpuMark`]'s two fields).
    cpu_mark_ns: AtomicU64,
    cpu_lead_ns: AtomicU64,
    /// From when on the coarse clock the interrupt checks `deadline_ns` (a [`Watch`]).
    watch: AtomicU64,
    exceeded: AtomicBool,
    current: Mutex<Option<Arc<RequestState>>>,
    /// The running request's coroutine (its Luau state's address; 0 when none runs): only its own calls may park.
    thread: AtomicUsize,
    parked: Mutex<Option<Parked>>,
}

impl std::fmt::Debug for VmShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmShared")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// A request for unit tests of code that charges the running request.
#[cfg(test)]
pub(crate) mod tests_support {
    pub fn request() -> std::sync::Arc<super::RequestState> {
        let request = super::HttpRequest {
            method: hyper::Method::GET,
            uri: hyper::Uri::from_static("/"),
            headers: hyper::HeaderMap::new(),
            body: bytes::Bytes::new(),
            remote_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            user: None,
        };
        std::sync::Arc::new(super::RequestState::new("test.lua".into(), request, Vec::new()))
    }
}

/// Raised inside Lua when a request's CPU budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit exceeded")]
pub struct CpuLimitHit;

impl Default for VmShared {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
            turn_start_ns: AtomicU64::new(0),
            budget_ns: AtomicU64::new(0),
            cpu_mark_ns: AtomicU64::new(0),
            cpu_lead_ns: AtomicU64::new(0),
            watch: AtomicU64::new(Watch::NEVER.to_raw()),
            exceeded: AtomicBool::new(false),
            current: Mutex::new(None),
            thread: AtomicUsize::new(0),
            parked: Mutex::new(None),
        }
    }
}

/// What a module call that parked the coroutine yields (see [`VmShared::park`]): parked work runs only when the
/// coroutine stopped for it, not when the call could not yield (inside a metamethod or a C function's callback,
/// where the yield raised an error instead) and the handler later yielded by itself. Handlers cannot make a light
/// userdata, so they cannot yield this.
pub fn park_token() -> mlua::LightUserData {
    static TOKEN: u8 = 0;
    mlua::LightUserData(std::ptr::addr_of!(TOKEN).cast_mut().cast())
}

impl VmShared {
    pub fn current(&self) -> Option<Arc<RequestState>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Parks the running request's coroutine on `work`: the caller (a module function, called by the handler)
    /// yields next, and the request's task resumes it with what `work` gives. Only the request's own coroutine can
    /// be parked: a coroutine the handler made would yield to the handler instead.
    pub fn park(&self, lua: &mlua::Lua, work: Parked) -> Result<(), String> {
        let running = self.thread.load(Ordering::Relaxed);
        if running == 0 || lua.current_thread().to_pointer() as usize != running {
            return Err(
                "it waits for Kafka, so it must be called by the handler itself, not inside a coroutine the handler made"
                    .into(),
            );
        }
        *self.parked.lock().unwrap_or_else(PoisonError::into_inner) = Some(work);
        Ok(())
    }

    /// What the coroutine that just stopped parked on, if it did.
    pub fn take_parked(&self) -> Option<Parked> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Before resuming `state`'s coroutine `thread` (as [`mlua::Thread::to_pointer`] gives it; null when the code
    /// runs outside a request's coroutine), which may run for `remaining` more CPU time. The turn runs on the
    /// calling thread until [`VmShared::leave`].
    pub fn enter(&self, state: &Arc<RequestState>, thread: *const std::ffi::c_void, remaining: Duration) {
        self.thread.store(thread as usize, Ordering::Relaxed);
        let now = Instant::now();
        let (start, budget) = (duration_ns(now - self.epoch), duration_ns(remaining));
        let mark = CpuMark::at(now);
        self.turn_start_ns.store(start, Ordering::Relaxed);
        self.budget_ns.store(budget, Ordering::Relaxed);
        self.cpu_mark_ns.store(mark.cpu_ns, Ordering::Relaxed);
        self.cpu_lead_ns.store(mark.lead_ns, Ordering::Relaxed);
        self.arm(start, budget);
        self.exceeded.store(false, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(state));
    }

    /// After the coroutine yielded or finished: whether it ran past its budget, and the CPU time it spent.
    pub fn leave(&self) -> Left {
        let wall = self.now_ns().saturating_sub(self.turn_start_ns.load(Ordering::Relaxed));
        let spent = self.cpu_mark().charge(wall);
        self.thread.store(0, Ordering::Relaxed);
        self.deadline_ns.store(u64::MAX, Ordering::Relaxed);
        self.watch.store(Watch::NEVER.to_raw(), Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Left {
            exceeded: self.exceeded.swap(false, Ordering::Relaxed),
            spent: Duration::from_nanos(spent),
        }
    }

    /// The running turn may spend `left` more from `now_ns` (since `epoch`): from when the wall clock, and the coarse
    /// one before it, say to look.
    fn arm(&self, now_ns: u64, left: u64) {
        self.deadline_ns
            .store(now_ns.saturating_add(left).min(u64::MAX - 1), Ordering::Relaxed);
        self.watch
            .store(Watch::from_now(Duration::from_nanos(left)).to_raw(), Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    fn cpu_mark(&self) -> CpuMark {
        CpuMark {
            cpu_ns: self.cpu_mark_ns.load(Ordering::Relaxed),
            lead_ns: self.cpu_lead_ns.load(Ordering::Relaxed),
        }
    }

    /// For a Rust loop that makes Lua values from a request's input (one call, where Luau's interrupt cannot
    /// run): at every 16th `step`, the CPU-limit error once the running request's budget is spent.
    pub fn charge_step(&self, step: usize) -> mlua::Result<()> {
        if step.is_multiple_of(16) && self.out_of_time() {
            return Err(mlua::Error::external(CpuLimitHit));
        }
        Ok(())
    }

    /// The interrupt handler: an error once the budget is spent.
    pub fn check(&self) -> mlua::Result<mlua::VmState> {
        if Watch::from_raw(self.watch.load(Ordering::Relaxed)).due() && self.out_of_time() {
            return Err(mlua::Error::external(CpuLimitHit));
        }
        Ok(mlua::VmState::Continue)
    }

    /// Whether the running request has spent its budget (and marks it so); Rust work done for a handler (JSON
    /// conversion) asks this too, since the interrupt cannot reach it. Called on the thread running the turn.
    pub fn out_of_time(&self) -> bool {
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline == u64::MAX {
            return false;
        }
        let now = self.now_ns();
        if now <= deadline {
            return false;
        }
        // The wall clock ran out, but it also counts time the thread was not running: its CPU clock decides.
        let budget = self.budget_ns.load(Ordering::Relaxed);
        let spent = self.cpu_mark().spent_at_least();
        if spent >= budget {
            self.exceeded.store(true, Ordering::Relaxed);
            return true;
        }
        // Not spent yet: it cannot be before the wall clock has advanced by what is left.
        self.arm(now, budget - spent);
        false
    }
}

/// How a turn ended ([`VmShared::leave`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// It ran past its budget.
    pub exceeded: bool,
    /// The CPU time it spent, to charge to the request's budget.
    pub spent: Duration,
}

/// Work of at most this many bytes may run with the memory limit lifted: far below any VM's limit, and above what a
/// typical webhook body, its headers or its parsed JSON take.
const UNLIMITED_UP_TO: usize = 64 * 1024;

/// Runs `work` with the VM's memory limit lifted when `size` (what the work allocates, roughly) is small and the VM
/// has room for it: for Rust-side work whose size the request bounds (its body, headers, parsed JSON), which would
/// otherwise pay for a protected call at every allocation. What it allocates still counts: once the VM is over its
/// limit, the next allocation in Lua fails, and the next work runs under the limit (so calls made in a loop cannot
/// pile up past it). Larger work runs under the limit.
pub fn unlimited<T>(lua: &mlua::Lua, size: usize, work: impl FnOnce() -> mlua::Result<T>) -> mlua::Result<T> {
    if size > UNLIMITED_UP_TO {
        return work();
    }
    let limit = lua.set_memory_limit(0)?;
    if limit != 0 && lua.used_memory().saturating_add(size.max(UNLIMITED_UP_TO)) > limit {
        lua.set_memory_limit(limit)?;
        return work();
    }
    let result = work();
    lua.set_memory_limit(limit)?;
    result
}

#[cfg(test)]
mod tests {
    use super::super::clock::thread_cpu_ns;
    use super::*;

    const MS: u64 = 1_000_000;

    /// Rust-side work lifts the memory limit only while the VM has room: called again and again (results kept), it
    /// cannot pile up past the limit; near it, the work runs under the limit and fails there.
    #[test]
    fn lifted_work_cannot_pile_up_past_the_memory_limit() {
        let lua = mlua::Lua::new();
        lua.set_memory_limit(lua.used_memory() + 4 * 1024 * 1024).unwrap();
        let kept = lua.create_table().unwrap();
        let mut failed_at = None;
        for i in 1..=64 {
            // Distinct strings: equal ones are one string in Luau.
            let mut bytes = vec![b'x'; 256 * 1024];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let made = unlimited(&lua, 1024, || lua.create_string(&bytes));
            match made {
                Ok(string) => kept.raw_set(i, string).unwrap(),
                Err(e) => {
                    assert!(matches!(e, mlua::Error::MemoryError(_)), "{e}");
                    failed_at = Some(i);
                    break;
                }
            }
        }
        assert!(
            failed_at.is_some_and(|i| i <= 17),
            "made {failed_at:?} quarter-megabytes under 4 MiB"
        );
    }

    /// A turn whose thread sleeps past its budget (as when the kernel gives the core to another process, or holds
    /// a container back that used up its CPU quota) is neither stopped nor charged the time it did not run.
    #[test]
    fn time_the_thread_does_not_run_is_not_charged() {
        let shared = VmShared::default();
        shared.enter(&tests_support::request(), std::ptr::null(), Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!shared.out_of_time(), "stopped after 60 ms asleep on a 20 ms budget");
        let left = shared.leave();
        assert!(!left.exceeded);
        assert!(
            left.spent < Duration::from_millis(10),
            "charged {:?} for a sleep",
            left.spent
        );
    }

    /// A turn that runs is stopped once its thread has spent the budget, never before, also after the wall clock
    /// ran out while it slept.
    #[test]
    fn a_running_turn_is_stopped_once_its_cpu_time_is_spent() {
        let shared = VmShared::default();
        shared.enter(&tests_support::request(), std::ptr::null(), Duration::from_millis(30));
        let start = thread_cpu_ns();
        std::thread::sleep(Duration::from_millis(40));
        let mut checks = 0u64;
        while !shared.out_of_time() {
            checks += 1;
        }
        let ran = thread_cpu_ns() - start;
        assert!(checks > 0, "stopped at once, after a sleep and no work");
        assert!(ran >= 29 * MS, "stopped after {ran} ns of CPU time on a 30 ms budget");
        // Every check after the first stop says so too, so a caught error cannot step over the limit.
        assert!(shared.out_of_time());
        assert!(shared.leave().exceeded);
    }

    /// A long turn is charged what its thread ran: the next turn's budget is what is left of it.
    #[test]
    fn a_long_turn_is_charged_its_cpu_time() {
        let shared = VmShared::default();
        shared.enter(&tests_support::request(), std::ptr::null(), Duration::from_secs(1));
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < 20 * MS {}
        std::thread::sleep(Duration::from_millis(30));
        let left = shared.leave();
        assert!(!left.exceeded);
        assert!(
            left.spent >= Duration::from_millis(19) && left.spent < Duration::from_millis(40),
            "charged {:?} for 20 ms of work and 30 ms asleep",
            left.spent
        );
    }
}
