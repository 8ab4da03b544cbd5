//! Lua edge functions: a request the router did not keep for itself in, the handler's response out.
//!
//! ```text
//! functions/*.lua ─> compile (once, bytecode shared) ─> route table (files + [[routes]])
//! request ─> find (method, path) ─> pool (this thread's VM) ─> call: a recycled coroutine, resumed on the
//!                                                            connection's own task ─> response
//!                                                              └─ kafka.produce ─> produce core (shared with REST)
//! ```
//!
//! Why Luau (mlua's `luau` feature) and not Lua 5.4: Luau was built to run untrusted scripts. Its sandbox mode
//! makes the globals and standard library read-only; it has no `io`, `os.execute` or bytecode loading to remove;
//! its interrupt callback is cheap enough to check a CPU budget at every loop back-edge and call; and mlua gives
//! it a hard memory limit. Lua 5.4 would need each of these rebuilt by hand, with more ways to get one wrong.
//!
//! Why a few VMs with many coroutines each, and not a VM per request: a VM costs about a millisecond and a few
//! hundred KiB to create, too much per request; and most of a handler's life is spent waiting for Kafka's
//! acknowledgement, during which its VM should serve other requests. So there is one VM per worker thread by
//! default, and every request runs as its own coroutine on its thread's VM, resumed by the connection's own task
//! (as OpenResty runs a handler in the worker that accepted it): no hand-off to another task and back. A VM is
//! held through an async lock for one poll at a time, so a VM is never used by two threads at once and a request
//! whose VM is busy waits without blocking its thread.
//!
//! What a request costs (measured with `perf record -g` on a constant handler, see `bench/README.md`): before
//! this design, about 45% of the CPU went to mlua and Luau, most of it in mlua's protected calls (with a memory
//! limit set, every table and string made from Rust runs under `lua_pcall`), its per-call lock, the hand-off
//! between tasks, and building every field of `req`. Now the memory limit is on only while Lua runs, `req` is
//! built lazily, coroutines and route environments are reused, and the environment keeps Luau's `safeenv` fast
//! paths.
//!
//! Isolation: each request runs a fresh clone of its file's chunk with its own global table, whose reads fall
//! through to the shared read-only globals. A global written by one request is invisible to every other, and
//! top-level locals of a file are per request too. The modules (`kafka`, `json`, `crypto`, ...) are the only
//! way out of the sandbox: no files, processes, sockets, `require`, `loadstring` or `debug`.

mod call;
mod clock;
pub mod compile;
mod convert;
mod error;
mod modules;
mod pool;
mod reload;
mod request;
mod response;
mod routes;
mod state;
pub mod types;
mod vm;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub use error::{LoadError, LoadErrors, LuaError};
pub use response::HandlerResponse;
pub use routes::{Found, Target};
pub use state::HttpRequest;

use crate::config::Config;
use crate::context::RequestContext;
use crate::produce::Producer;
use modules::KafkaContext;
use pool::Pool;
use routes::RouteTable;
use vm::{Limits, Vm};

/// The running edge functions.
#[derive(Debug)]
pub struct Functions {
    config: Arc<Config>,
    context: Arc<KafkaContext>,
    table: RwLock<Arc<RouteTable>>,
    pool: Pool,
    /// Kept alive while serving; dropping it stops the reloads.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

fn limits(config: &Config) -> Limits {
    Limits {
        cpu: config.lua.cpu,
        memory_bytes: config.lua.memory_bytes,
    }
}

/// Compiles every function, checks that each file gives a handler and that each can be reached; every problem
/// is reported: each file that does not compile beside each that compiles but does not load. Which paths clash or
/// are missing is told once every file compiles (a file that does not would show as missing).
fn load_all(config: &Config, context: &Arc<KafkaContext>) -> Result<RouteTable, LoadErrors> {
    let (set, mut errors) = compile::compile_all(&config.lua.functions_dir);
    let compiled = errors.is_empty();
    let mut checker = Vm::new(context, limits(config)).map_err(setup_error)?;
    errors.extend(set.values().filter_map(|compiled| checker.check_loads(compiled).err()));
    let table = RouteTable::new(&config.routes, set);
    if compiled {
        errors.extend(
            table
                .problems()
                .iter()
                .map(|problem| LoadError::Unreachable(problem.clone())),
        );
    }
    if errors.is_empty() {
        Ok(table)
    } else {
        Err(LoadErrors(errors))
    }
}

fn setup_error(error: mlua::Error) -> LoadErrors {
    LoadErrors(vec![LoadError::Setup {
        function: "(startup)".into(),
        message: error.to_string(),
    }])
}

/// `luka check`: compiles and loads every function without serving; gives how many there are.
pub fn check(config: Arc<Config>, producer: Arc<Producer>) -> Result<usize, LoadErrors> {
    let context = KafkaContext::new(config, producer);
    load_all(&context.config, &context).map(|table| table.functions().len())
}

/// A Luau state for `luka test` files: the standard libraries and the modules handlers see (`json`, `schema`,
/// `crypto`, `webhook`, ...) except `kafka` (a test writes through its requests), without the sandbox or limits:
/// test files are the developer's own code.
pub fn tooling_lua(config: Arc<Config>, producer: Arc<Producer>) -> mlua::Result<mlua::Lua> {
    let lua = mlua::Lua::new_with(mlua::StdLib::ALL_SAFE, mlua::LuaOptions::new())?;
    let context = KafkaContext::new(config, producer);
    modules::install(&lua, &context, &Arc::new(state::VmShared::default()))?;
    lua.globals().raw_remove("kafka")?;
    Ok(lua)
}

impl Functions {
    /// Compiles every function (any error stops startup), starts the VMs and, if configured, the file watcher.
    /// Must run inside the tokio runtime.
    pub fn start(
        config: Arc<Config>,
        producer: Arc<Producer>,
        rates: Arc<crate::limits::Limits>,
    ) -> Result<Arc<Self>, LoadErrors> {
        let context = KafkaContext::with_limits(Arc::clone(&config), producer, rates);
        let table = load_all(&config, &context)?;
        let pool = Pool::start(config.lua.vms, Arc::clone(&context), limits(&config)).map_err(setup_error)?;
        let functions = Arc::new(Self {
            config,
            context,
            table: RwLock::new(Arc::new(table)),
            pool,
            watcher: Mutex::new(None),
        });
        if functions.config.lua.watch {
            let watcher = reload::watch(&functions).map_err(|e| LoadErrors(vec![e]))?;
            *functions.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
        }
        Ok(functions)
    }

    pub fn find(&self, method: &str, path: &str) -> Found {
        self.table().find(method, path)
    }

    /// Runs `target` for `request` on the caller's own task, within the wall-clock limit.
    pub async fn call(&self, target: Target, request: Box<HttpRequest>) -> Result<HandlerResponse, LuaError> {
        let limit = self.config.lua.timeout;
        let mut call = std::pin::pin!(crate::timeout::within(
            limit,
            call::Call::start(&self.pool, target, request)
        ));
        let result = match call.as_mut().await {
            Ok(result) => result,
            // A request with an Idempotency-Key holds its key until its records' real outcome is known: a produce
            // its handler waits on is finished, and the handler with it (see `Call::overtime`).
            Err(_) if RequestContext::current().is_some_and(|context| context.awaits_outcome()) => {
                Box::pin(call.future().get_mut().overtime(limit)).await
            }
            Err(_) => Err(call.as_mut().future().timeout(limit)),
        };
        let limit_hit = match &result {
            Err(LuaError::CpuLimit { .. }) => Some("cpu"),
            Err(LuaError::MemoryLimit { .. }) => Some("memory"),
            Err(LuaError::Timeout { .. }) => Some("timeout"),
            _ => None,
        };
        if let Some(kind) = limit_hit {
            crate::metrics::metrics().lua_limit_hit(kind);
        }
        result
    }

    fn table(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Number of functions being served.
    pub fn len(&self) -> usize {
        self.table().functions().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A handler context over a cluster nobody listens on, for unit tests that make VMs.
#[cfg(test)]
pub(crate) fn test_context() -> Arc<KafkaContext> {
    let config = crate::config::Config::from_toml(
        "[clusters.local]\nbootstrap = [\"127.0.0.1:1\"]\n",
        std::path::Path::new("."),
        |_| None,
    )
    .unwrap();
    let config = Arc::new(config);
    KafkaContext::new(Arc::clone(&config), crate::producer(&config))
}
