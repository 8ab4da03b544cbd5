//! What a VM's task, its interrupt handler and its module callbacks share: the request whose coroutine is
//! running now, and its CPU budget.
//!
//! A VM runs one coroutine at a time, so "the current request" is well defined: the task sets it before it resumes
//! a coroutine and clears it after. The interrupt (called by Luau at loop back-edges and calls) stops the coroutine
//! once its budget is spent, and keeps stopping it, so a `pcall` around a runaway loop cannot swallow the limit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The request a coroutine serves, as its module callbacks see it.
#[derive(Debug)]
pub struct RequestState {
    /// The handler file, for logs.
    pub function: Arc<str>,
    outcome: Mutex<Outcome>,
}

/// Facts a handler's module calls leave behind, used to answer when the handler then fails without catching.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// `req:json()` failed: the client sent a bad body (400).
    pub bad_request: Option<String>,
    /// `kafka.produce` failed because a cluster was down (503) or slow (504).
    pub kafka_outage: Option<KafkaOutage>,
}

#[derive(Debug, Clone)]
pub struct KafkaOutage {
    pub cluster: String,
    pub timed_out: bool,
    /// The error the handler was given, to recognise it if the handler fails with it.
    pub message: String,
}

impl RequestState {
    pub fn new(function: Arc<str>) -> Self {
        Self {
            function,
            outcome: Mutex::new(Outcome::default()),
        }
    }

    pub fn record(&self, change: impl FnOnce(&mut Outcome)) {
        change(&mut self.outcome.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Debug)]
pub struct VmShared {
    epoch: Instant,
    /// Nanoseconds since `epoch` when the running coroutine's budget ends; `u64::MAX` when none runs.
    deadline_ns: AtomicU64,
    exceeded: AtomicBool,
    current: Mutex<Option<Arc<RequestState>>>,
}

/// Raised inside Lua when a request's CPU budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit exceeded")]
pub struct CpuLimitHit;

impl VmShared {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
            exceeded: AtomicBool::new(false),
            current: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Option<Arc<RequestState>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Before resuming `state`'s coroutine, which may run for `remaining` more.
    pub fn enter(&self, state: &Arc<RequestState>, remaining: Duration) -> Instant {
        let now = Instant::now();
        let deadline = (now - self.epoch + remaining).as_nanos().min(u128::from(u64::MAX - 1)) as u64;
        self.deadline_ns.store(deadline, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(state));
        now
    }

    /// After the coroutine yielded or finished; tells whether it ran past its budget.
    pub fn leave(&self) -> bool {
        self.deadline_ns.store(u64::MAX, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.exceeded.swap(false, Ordering::Relaxed)
    }

    /// The interrupt handler: an error once the budget is spent.
    pub fn check(&self) -> mlua::Result<mlua::VmState> {
        if self.out_of_time() {
            return Err(mlua::Error::external(CpuLimitHit));
        }
        Ok(mlua::VmState::Continue)
    }

    /// Whether the running request has spent its budget (and marks it so); Rust work done for a handler (JSON
    /// conversion) asks this too, since the interrupt cannot reach it.
    pub fn out_of_time(&self) -> bool {
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline != u64::MAX && self.epoch.elapsed().as_nanos() > u128::from(deadline) {
            self.exceeded.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}
