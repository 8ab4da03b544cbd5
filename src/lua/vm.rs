//! One Luau VM and the task that owns it: jobs in, each run as its own coroutine, answers out.
//!
//! ```text
//! job ─> load the file's chunk (cached per VM) ─> clone it with a fresh environment ─> coroutine(runner, chunk, req)
//!     ─> polled by this task only, metered (CPU budget), timed (wall clock) ─> response ─> reply
//! ```
//!
//! All coroutines of a VM are polled by its one task, so only one runs at a time and the interrupt knows whose
//! budget to charge. While one waits on Kafka the others run. After a request hits the CPU or memory limit the VM
//! retires: it finishes what it has, takes no new jobs, and the pool puts a fresh VM in its place.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};
use tokio::sync::{mpsc, oneshot};

use super::LuaError;
use super::compile::Compiled;
use super::convert;
use super::modules::{self, KafkaContext};
use super::request::{self, HttpRequest, RequestParts};
use super::response::{self, HandlerResponse};
use super::routes::Target;
use super::state::{RequestState, VmShared};

/// Limits every request of a VM runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cpu: Duration,
    pub timeout: Duration,
    pub memory_bytes: usize,
}

pub struct Job {
    pub target: Target,
    pub request: HttpRequest,
    pub reply: oneshot::Sender<Result<HandlerResponse, LuaError>>,
}

/// Globals a handler must not reach: files (`require`), new code (`loadstring`) and other functions'
/// environments (`getfenv`/`setfenv`). `debug` and `io` are never loaded.
const REMOVED_GLOBALS: [&str; 4] = ["require", "loadstring", "getfenv", "setfenv"];

/// Runs a file's chunk (which returns the handler) and the handler, inside the request's coroutine, so both are
/// metered and may wait on Kafka.
const RUNNER: &str = r#"
local chunk, req = ...
local handler = chunk()
if type(handler) ~= "function" then
  error("the file must return a function(req), not a " .. type(handler), 0)
end
return handler(req)
"#;

pub struct Vm {
    lua: Lua,
    shared: Arc<VmShared>,
    /// `{__index = globals}`: each request's environment reads the (read-only) globals and writes its own table.
    request_meta: Table,
    parts: RequestParts,
    runner: Function,
    loaded: HashMap<Arc<str>, (u64, Function)>,
    limits: Limits,
}

impl Vm {
    pub fn new(context: &Arc<KafkaContext>, limits: Limits) -> mlua::Result<Self> {
        let libs = StdLib::COROUTINE
            | StdLib::TABLE
            | StdLib::OS
            | StdLib::STRING
            | StdLib::UTF8
            | StdLib::BIT
            | StdLib::MATH
            | StdLib::BUFFER;
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        let globals = lua.globals();
        for name in REMOVED_GLOBALS {
            globals.raw_remove(name)?;
        }
        let shared = Arc::new(VmShared::new());
        modules::install(&lua, context, &shared)?;
        let for_json = Arc::clone(&shared);
        let json = lua.create_function(move |lua, req: Table| req_json(lua, req, &for_json))?;
        let json = modules::raising(&lua, json)?;
        let parts = RequestParts::new(&lua, json)?;
        let runner = lua.load(RUNNER).set_name("=luka").into_function()?;
        // Makes the globals and the standard library read-only, so no request can change what another sees.
        lua.sandbox(true)?;
        let request_meta = lua.create_table()?;
        // The frozen globals themselves, not the writable proxy `sandbox` puts in front of them.
        request_meta.set("__index", globals)?;
        request_meta.set_readonly(true);
        let interrupt = Arc::clone(&shared);
        lua.set_interrupt(move |_| interrupt.check());
        lua.set_memory_limit(limits.memory_bytes)?;
        Ok(Self {
            lua,
            shared,
            request_meta,
            parts,
            runner,
            loaded: HashMap::new(),
            limits,
        })
    }

    /// A fresh copy of the file's chunk, loaded once per VM and version.
    fn chunk(&mut self, compiled: &Compiled) -> mlua::Result<Function> {
        if let Some((id, chunk)) = self.loaded.get(&compiled.name)
            && *id == compiled.id
        {
            return chunk.deep_clone();
        }
        let chunk = self
            .lua
            .load(&compiled.bytecode)
            .set_name(format!("@{}", compiled.display))
            .set_mode(ChunkMode::Binary)
            .into_function()?;
        self.loaded
            .insert(Arc::clone(&compiled.name), (compiled.id, chunk.clone()));
        chunk.deep_clone()
    }

    /// The request's own global environment: reads fall through to the shared globals, writes stay here.
    fn environment(&self, values: Table) -> mlua::Result<Table> {
        let env = self.lua.create_table()?;
        env.set_metatable(Some(self.request_meta.clone()))?;
        values.set_readonly(true);
        env.raw_set("env", values)?;
        Ok(env)
    }

    /// The route's `env` values.
    fn route_env(&self, target: &Target) -> mlua::Result<Table> {
        self.lua
            .create_table_from(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Checks that a file, run once, gives a handler (at startup and on reload), without running the handler.
    pub fn check_loads(&mut self, compiled: &Compiled) -> Result<(), LuaError> {
        let load_error = |message: String| LuaError::Load {
            file: compiled.display.to_string(),
            message,
        };
        let chunk = self.chunk(compiled).map_err(|e| load_error(e.to_string()))?;
        // Which route's env the file will see is not known here: every name reads as "", so a file that checks
        // `assert(env.SECRET)` at its top level still loads.
        let env = self
            .lua
            .load("return setmetatable({}, { __index = function() return '' end })")
            .eval::<Table>()
            .and_then(|values| self.environment(values));
        let state = Arc::new(RequestState::new(Arc::clone(&compiled.display)));
        self.shared.enter(&state, self.limits.cpu);
        let result = env
            .and_then(|env| chunk.set_environment(env))
            .and_then(|_| chunk.call::<Value>(()));
        self.shared.leave();
        match result {
            Ok(Value::Function(_)) => Ok(()),
            Ok(other) => Err(load_error(format!(
                "the file must return a function(req), not a {}",
                other.type_name()
            ))),
            Err(e) => Err(load_error(first_line(&e.to_string()))),
        }
    }

    /// Sets up `job` and gives the future that runs it; the future tells whether this VM should retire.
    fn start(&mut self, job: Job) -> Option<impl Future<Output = bool> + Send + 'static> {
        let Job { target, request, reply } = job;
        let function = Arc::clone(&target.function.display);
        let prepared = self.chunk(&target.function).and_then(|chunk| {
            chunk.set_environment(self.environment(self.route_env(&target)?)?)?;
            let req = request::build(&self.lua, &self.parts, &request, &target)?;
            let thread = self.lua.create_thread(self.runner.clone())?;
            thread.into_async::<Value>((chunk, req))
        });
        let call = match prepared {
            Ok(call) => call,
            Err(e) => {
                let _ = reply.send(Err(LuaError::Setup {
                    function: function.to_string(),
                    message: e.to_string(),
                }));
                return None;
            }
        };
        let state = Arc::new(RequestState::new(Arc::clone(&function)));
        let clock = Arc::clone(&self.shared);
        let metered = Metered {
            inner: Box::pin(async move {
                let value = call.await.map_err(Failure::Lua)?;
                response::from_lua(value, &mut convert::Budget::metered(&clock)).map_err(Failure::Response)
            }),
            shared: Arc::clone(&self.shared),
            state: Arc::clone(&state),
            remaining: self.limits.cpu,
            exceeded: false,
        };
        let limits = self.limits;
        Some(async move {
            let mut reply = reply;
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(limits.timeout, metered) => outcome,
                // The client went away (or the server's own timeout fired): stop the coroutine.
                () = reply.closed() => return false,
            };
            let result = match outcome {
                Err(_) => Err(LuaError::Timeout {
                    function: function.to_string(),
                    limit_ms: limits.timeout.as_millis(),
                }),
                Ok((result, exceeded)) => classify(result, exceeded, &state, &limits),
            };
            // A stopped coroutine leaves nothing shared half-changed (globals and libraries are read-only), but
            // memory exhaustion may have failed an allocation anywhere, so only then is the VM replaced.
            let retire = matches!(result, Err(LuaError::MemoryLimit { .. }));
            let _ = reply.send(result);
            retire
        })
    }

    /// Serves jobs until the channel closes; calls `retire` once, when a limit hit makes this VM untrustworthy.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>, retire: impl FnOnce()) {
        let mut running = FuturesUnordered::new();
        let mut retire = Some(retire);
        let mut open = true;
        while open || !running.is_empty() {
            tokio::select! {
                job = jobs.recv(), if open => match job {
                    Some(job) => running.extend(self.start(job)),
                    None => open = false,
                },
                Some(limit_hit) = running.next(), if !running.is_empty() => {
                    if limit_hit && let Some(retire) = retire.take() {
                        // Free what the stopped request held before the others go on, then stop taking work;
                        // jobs already queued here still run.
                        let _ = self.lua.gc_collect();
                        retire();
                        jobs.close();
                    } else if self.lua.used_memory() > self.limits.memory_bytes / 2 {
                        // Luau does not collect when an allocation fails, so garbage left by a finished request
                        // could make the next one fail: collect while there is still room.
                        let _ = self.lua.gc_collect();
                    }
                }
            }
        }
    }
}

enum Failure {
    Lua(mlua::Error),
    Response(String),
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
    let message = error.to_string();
    let outcome = state.outcome();
    if let Some(bad) = outcome.bad_request.filter(|m| message.contains(m.as_str())) {
        return Err(LuaError::BadRequest(bad));
    }
    if let Some(outage) = outcome.kafka_outage.filter(|o| message.contains(o.message.as_str())) {
        return Err(LuaError::Kafka {
            function,
            cluster: outage.cluster,
            timed_out: outage.timed_out,
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

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_owned()
}

/// `req:json()`: the body parsed as JSON; a body that is not JSON is the client's fault (400 unless caught).
fn req_json(lua: &Lua, req: Table, shared: &VmShared) -> mlua::Result<(bool, Value)> {
    let body: mlua::LuaString = req.raw_get("body")?;
    match serde_json::from_slice::<serde_json::Value>(&body.as_bytes()) {
        Ok(value) => modules::answer(lua, Ok(convert::from_json(lua, &value)?)),
        Err(e) => {
            let message = format!("the request body is not valid JSON: {e}");
            if let Some(state) = shared.current() {
                state.record(|o| o.bad_request = Some(message.clone()));
            }
            modules::answer(lua, Err::<Value, _>(message))
        }
    }
}

/// Charges the time spent inside each poll to the request's CPU budget.
struct Metered<F> {
    inner: Pin<Box<F>>,
    shared: Arc<VmShared>,
    state: Arc<RequestState>,
    remaining: Duration,
    exceeded: bool,
}

impl<F: Future> Future for Metered<F> {
    type Output = (F::Output, bool);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let started = this.shared.enter(&this.state, this.remaining);
        let poll = this.inner.as_mut().poll(cx);
        this.exceeded |= this.shared.leave();
        this.remaining = this.remaining.saturating_sub(started.elapsed());
        poll.map(|output| (output, this.exceeded))
    }
}
