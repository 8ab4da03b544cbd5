//! One request running on one VM: the future a connection's task polls to run a handler, on that task itself.
//!
//! ```text
//! poll ─> lock the VM (home, else any free one, else wait) ─> first time: set up the coroutine
//!      ─> limits on ─> resume ─> limits off ─> finished: read the response, recycle the coroutine ─> unlock
//! ```
//!
//! Each poll charges the time it spends running Lua (and reading the response) to the request's CPU budget; time
//! spent waiting on Kafka or on the VM's lock is not charged. Dropping the future (client gone, timeout) releases
//! the coroutine under the VM's lock, now or by the lock's next holder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::LuaError;
use super::pool::{Inner, Pool, VmCell, VmGuard};
use super::response::{self, HandlerResponse};
use super::routes::Target;
use super::state::{HttpRequest, RequestState};
use super::vm::{Limits, Running};

pub struct Call {
    pool: Arc<Inner>,
    cell: Arc<VmCell>,
    /// Until the coroutine is set up.
    target: Option<Target>,
    state: Arc<RequestState>,
    waiting: Option<Pin<Box<dyn Future<Output = VmGuard> + Send>>>,
    running: Option<Running>,
    /// CPU time the request may still use.
    remaining: Duration,
    exceeded: bool,
}

enum Failure {
    Lua(mlua::Error),
    Response(String),
}

impl Call {
    /// The future that runs `target` for `request` on this thread's home VM of `pool` (or another free one).
    pub(super) fn start(pool: &Pool, target: Target, request: HttpRequest) -> Self {
        let (pool, home) = pool.home();
        let state = Arc::new(RequestState::new(
            Arc::clone(&target.function.display),
            request,
            target.params.clone(),
        ));
        let remaining = pool.limits().cpu;
        Self {
            pool,
            cell: home,
            target: Some(target),
            state,
            waiting: None,
            running: None,
            remaining,
            exceeded: false,
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

impl Future for Call {
    type Output = Result<HandlerResponse, LuaError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut vm = std::task::ready!(this.acquire(cx));
        this.cell.bury(&vm);
        if this.running.is_none() {
            let target = this.target.take().expect("a finished Call is not polled again");
            match vm.start(&target, &this.state) {
                Ok(running) => this.running = Some(running),
                Err(e) => return Poll::Ready(Err(this.setup_error(&e))),
            }
        }
        let running = this.running.as_mut().expect("set up above");
        let started = vm.enter(&this.state, this.remaining);
        let polled = Pin::new(&mut running.future).poll(cx);
        vm.pause();
        let outcome = match polled {
            Poll::Pending => None,
            Poll::Ready(Ok(returned)) => Some(response::read(returned, &mut vm.budget()).map_err(Failure::Response)),
            Poll::Ready(Err(e)) => Some(Err(Failure::Lua(e))),
        };
        this.exceeded |= vm.leave();
        this.remaining = this.remaining.saturating_sub(started.elapsed());
        let Some(outcome) = outcome else {
            return Poll::Pending;
        };
        let result = classify(outcome, this.exceeded, &this.state, vm.limits());
        if let Some(running) = this.running.take() {
            vm.finish(running);
        }
        this.cell.report_memory(vm.used_memory());
        if matches!(result, Err(LuaError::MemoryLimit { .. })) {
            vm.collect();
            drop(vm);
            this.pool.retire(&this.cell);
        }
        Poll::Ready(result)
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
    let function = state.function.to_string();
    if cpu_exceeded {
        return Err(LuaError::CpuLimit {
            function,
            limit_ms: limits.cpu.as_millis(),
        });
    }
    let error = match result {
        Ok(response) => return Ok(response),
        Err(Failure::Response(problem)) => return Err(LuaError::BadResponse { function, problem }),
        Err(Failure::Lua(error)) => error,
    };
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

/// Only Luau's own out-of-memory status counts: `error("not enough memory")` from a handler is a plain error.
fn is_memory_error(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}
