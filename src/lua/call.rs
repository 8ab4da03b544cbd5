//! One request running on one VM: the future a connection's task polls to run a handler, on that task itself.
//!
//! ```text
//! poll ─> parked on a produce? poll it (outside the VM) until it is done
//!      ─> lock the VM (home, else any free one, else wait) ─> first time: set up the coroutine
//!      ─> limits on ─> resume (with the produce's outcome) ─> limits off ─> unlock
//!      ─> parked again: poll that ─ finished: read the response, recycle the coroutine
//! ```
//!
//! A module call that waits (`kafka.produce`) parks the coroutine: it leaves its work ([`Parked`]) and yields, and
//! this future polls that work itself, without the VM, as the REST path polls its produce; the coroutine is resumed
//! once, with the outcome, when it is done. So waiting costs the VM nothing, and no async machinery runs in Lua.
//!
//! Each turn charges the time it spends running Lua (and turning the outcome into Lua values, and reading the
//! response) to the request's CPU budget, and so does each poll of parked work (a produce's checks, encoding and
//! schema work, done in Rust on the handler's behalf, which cannot stop it midway: a handler past its budget after
//! one is not resumed); time spent waiting on Kafka or on the VM's lock is not charged. Dropping
//! the future (client gone, timeout) drops the parked work (a produce not yet sent is withdrawn) and releases the
//! coroutine under the VM's lock, now or by the lock's next holder. A request with an `Idempotency-Key` is not
//! dropped while parked when its time runs out: [`Call::overtime`] finishes the produce first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::LuaError;
use super::pool::{Inner, Pool, VmCell, VmGuard};
use super::response::{self, HandlerResponse};
use super::routes::Target;
use super::state::{HttpRequest, Parked, RequestState, Resume};
use super::vm::{Limits, Running, Stopped};

pub struct Call {
    pool: Arc<Inner>,
    cell: Arc<VmCell>,
    /// Until the coroutine is set up.
    target: Option<Target>,
    state: Arc<RequestState>,
    waiting: Option<Pin<Box<dyn Future<Output = VmGuard> + Send>>>,
    running: Option<Running>,
    /// The work the coroutine is parked on.
    parked: Option<Parked>,
    /// What the parked work gave, to resume the coroutine with.
    resume: Option<Resume>,
    /// CPU time the request may still use.
    remaining: Duration,
    exceeded: bool,
    /// The wall-clock limit passed while the coroutine was parked (see [`Call::overtime`]).
    overtime: bool,
}

enum Failure {
    Lua(mlua::Error),
    Response(String),
}

impl Call {
    /// The future that runs `target` for `request` on this thread's home VM of `pool` (or another free one).
    pub(super) fn start(pool: &Pool, target: Target, request: Box<HttpRequest>) -> Self {
        let (pool, home) = pool.home();
        let state = Arc::new(
            RequestState::new(Arc::clone(&target.function.display), request, target.params.clone())
                .noting_body_reads(&target.function.reads_body),
        );
        let remaining = pool.limits().cpu;
        Self {
            pool,
            cell: home,
            target: Some(target),
            state,
            waiting: None,
            running: None,
            parked: None,
            resume: None,
            remaining,
            exceeded: false,
            overtime: false,
        }
    }

    /// After the handler's wall-clock `limit` passed, for a request that waits for its records' real outcome (an
    /// `Idempotency-Key`): the produce the coroutine is parked on runs to its outcome (dropped, it would leave records
    /// already sent to be written with the key given up, and a retry would write them again), and the handler is
    /// resumed with it, to answer. Should it wait again (another produce, or a yield), or if it was not parked, the
    /// limit answers, and parked work not yet started is dropped.
    pub(super) async fn overtime(&mut self, limit: Duration) -> Result<HandlerResponse, LuaError> {
        // A produce that finished while the coroutine waits for its VM's lock counts as parked: its outcome is
        // handed to the handler all the same.
        if self.parked.is_none() && self.resume.is_none() {
            return Err(self.timeout(limit));
        }
        self.overtime = true;
        match self.await {
            Err(LuaError::Timeout { function, .. }) => Err(LuaError::Timeout {
                function,
                limit_ms: limit.as_millis(),
            }),
            other => other,
        }
    }

    /// The error of a handler past its wall-clock `limit`.
    pub(super) fn timeout(&self, limit: Duration) -> LuaError {
        LuaError::Timeout {
            function: self.state.function.to_string(),
            limit_ms: limit.as_millis(),
        }
    }

    /// The VM's lock: at once when it is free; a request not yet started takes any free VM rather than wait.
    fn acquire(&mut self, cx: &mut Context<'_>) -> Poll<VmGuard> {
        if let Some(waiting) = &mut self.waiting {
            let guard = std::task::ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
            return Poll::Ready(guard);
        }
        if let Some(guard) = self.cell.try_lock() {
            return Poll::Ready(guard);
        }
        if self.running.is_none()
            && let Some((cell, guard)) = self.pool.any_free(&self.cell)
        {
            self.cell = cell;
            return Poll::Ready(guard);
        }
        let mut waiting = Box::pin(self.cell.lock());
        match waiting.as_mut().poll(cx) {
            Poll::Ready(guard) => Poll::Ready(guard),
            Poll::Pending => {
                self.waiting = Some(waiting);
                Poll::Pending
            }
        }
    }

    fn setup_error(&self, error: &mlua::Error) -> LuaError {
        LuaError::Setup {
            function: self.state.function.to_string(),
            message: error.to_string(),
        }
    }
}

/// How one turn under the VM's lock ended.
enum Turn {
    /// Parked on work now in `Call::parked`.
    Parked,
    /// The handler yielded by itself: resumed at the next poll.
    Yielded,
    Done(Result<HandlerResponse, LuaError>),
}

impl Call {
    /// Locks the VM and resumes the coroutine once (setting it up the first time), with what it was parked on.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<Turn> {
        let mut vm = std::task::ready!(self.acquire(cx));
        self.cell.bury(&vm);
        if self.running.is_none() {
            let target = self.target.take().expect("a finished Call is not polled again");
            match vm.start(&target, &self.state.request) {
                Ok(running) => self.running = Some(running),
                Err(e) => return Poll::Ready(Turn::Done(Err(self.setup_error(&e)))),
            }
        }
        if self.exceeded {
            // Past its budget in the work it was parked on: not resumed with the outcome.
            self.resume = None;
            let result = Err(cpu_limit(&self.state, vm.limits()));
            return Poll::Ready(Turn::Done(self.finish(vm, result)));
        }
        let running = self.running.as_mut().expect("set up above");
        vm.enter(&self.state, Some(running), self.remaining);
        let stopped = vm.resume(running, self.resume.take());
        vm.pause();
        let outcome = match stopped {
            Ok(Stopped::Parked(parked)) => {
                self.parked = Some(parked);
                None
            }
            Ok(Stopped::Yielded) => None,
            Ok(Stopped::Returned(returned)) => {
                Some(response::read(returned, &mut vm.budget()).map_err(Failure::Response))
            }
            Ok(Stopped::ReturnedJson(text)) => Some(response::read_json(text).map_err(Failure::Response)),
            Err(e) => Some(Err(Failure::Lua(e))),
        };
        let left = vm.leave();
        self.exceeded |= left.exceeded;
        self.remaining = self.remaining.saturating_sub(left.spent);
        let result = match outcome {
            Some(outcome) => classify(outcome, self.exceeded, &self.state, vm.limits()),
            // Past its budget as it stopped: the limit answers now, and parked work (not started yet) is dropped.
            None if self.exceeded => {
                self.parked = None;
                Err(cpu_limit(&self.state, vm.limits()))
            }
            None if self.parked.is_some() => return Poll::Ready(Turn::Parked),
            None => return Poll::Ready(Turn::Yielded),
        };
        Poll::Ready(Turn::Done(self.finish(vm, result)))
    }

    /// Recycles the finished coroutine and reports the VM's memory; a VM whose handler ran out of memory is retired.
    fn finish(
        &mut self,
        mut vm: VmGuard,
        result: Result<HandlerResponse, LuaError>,
    ) -> Result<HandlerResponse, LuaError> {
        let used = match self.running.take() {
            Some(running) => vm.finish(running),
            None => vm.used_memory(),
        };
        self.cell.report_memory(used);
        if matches!(result, Err(LuaError::MemoryLimit { .. })) {
            vm.collect();
            drop(vm);
            self.pool.retire(&self.cell);
        }
        result
    }
}

impl Future for Call {
    type Output = Result<HandlerResponse, LuaError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(parked) = &mut this.parked {
                let (polled, spent_all) = super::clock::charged(&mut this.remaining, || parked.as_mut().poll(cx));
                this.exceeded |= spent_all;
                this.resume = Some(std::task::ready!(polled));
                this.parked = None;
            }
            match std::task::ready!(this.turn(cx)) {
                // Its limit (which `overtime` puts in the error) passed: the handler is not resumed again.
                Turn::Parked | Turn::Yielded if this.overtime => {
                    this.parked = None;
                    return Poll::Ready(Err(this.timeout(Duration::ZERO)));
                }
                Turn::Parked => continue,
                Turn::Yielded => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Turn::Done(result) => return Poll::Ready(result),
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.cell.release(running);
        }
    }
}

/// Turns how a request ended into its answer.
fn classify(
    result: Result<HandlerResponse, Failure>,
    cpu_exceeded: bool,
    state: &RequestState,
    limits: &Limits,
) -> Result<HandlerResponse, LuaError> {
    if cpu_exceeded {
        return Err(cpu_limit(state, limits));
    }
    let error = match result {
        Ok(response) => return Ok(response),
        Err(Failure::Response(problem)) => {
            return Err(LuaError::BadResponse {
                function: state.function.to_string(),
                problem,
            });
        }
        Err(Failure::Lua(error)) => error,
    };
    let function = state.function.to_string();
    if is_memory_error(&error) {
        return Err(LuaError::MemoryLimit {
            function,
            limit_mb: limits.memory_bytes / (1024 * 1024),
        });
    }
    // A failure the handler caught and then failed differently is not the cause: the final error must carry it.
    // Handlers get module errors as plain strings (to print, concatenate, return), so which failure a module
    // raised is recognised in the final error by its text; what it means was recorded typed beside it.
    let message = error.to_string();
    let outcome = state.outcome();
    if let Some(bad) = outcome.bad_request.filter(|m| message.contains(m.as_str())) {
        return Err(LuaError::BadRequest(bad));
    }
    if let Some(too_many) = outcome.too_many.filter(|m| message.contains(m.as_str())) {
        return Err(LuaError::TooManyMessages(too_many));
    }
    if let Some((refused, _)) = outcome.records_refused.filter(|(_, m)| message.contains(m.as_str())) {
        return Err(LuaError::RecordsRefused(refused));
    }
    if let Some(outage) = outcome.kafka_outage.filter(|o| message.contains(o.message.as_str())) {
        return Err(LuaError::Kafka {
            function,
            cluster: outage.cluster,
            class: outage.class,
        });
    }
    Err(LuaError::Runtime { function, message })
}

fn cpu_limit(state: &RequestState, limits: &Limits) -> LuaError {
    LuaError::CpuLimit {
        function: state.function.to_string(),
        limit_ms: limits.cpu.as_millis(),
    }
}

/// Only Luau's own out-of-memory status counts: `error("not enough memory")` from a handler is a plain error.
fn is_memory_error(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}
