//! Lua edge functions: a request the router did not keep for itself in, the handler's response out.
//!
//! ```text
//! functions/*.lua ─> compile (once, bytecode shared) ─> route table (files + [[routes]])
//! request ─> find (method, path) ─> pool (least busy VM) ─> VM task: coroutine per request ─> response
//!                                                              └─ kafka.produce ─> produce core (shared with REST)
//! ```
//!
//! Why Luau (mlua's `luau` feature) and not Lua 5.4: Luau was built to run untrusted scripts. Its sandbox mode
//! makes the globals and standard library read-only; it has no `io`, `os.execute` or bytecode loading to remove;
//! its interrupt callback is cheap enough to check a CPU budget at every loop back-edge and call; and mlua gives
//! it a hard memory limit. Lua 5.4 would need each of these rebuilt by hand, with more ways to get one wrong.
//!
//! Why a few VMs with many coroutines each, and not a VM per request or a VM per thread behind a lock: a VM costs
//! about a millisecond and a few hundred KiB to create, too much per request; and most of a handler's life is
//! spent waiting for Kafka's acknowledgement, during which its VM should serve other requests. So there are a
//! few VMs (one per core by default), each owned by one tokio task that runs every request as its own coroutine.
//! The pool sends each request to the least busy VM.
//!
//! Isolation: each request runs a fresh clone of its file's chunk with its own global table, whose reads fall
//! through to the shared read-only globals. A global written by one request is invisible to every other, and
//! top-level locals of a file are per request too. The modules (`kafka`, `json`, `crypto`, ...) are the only
//! way out of the sandbox: no files, processes, sockets, `require`, `loadstring` or `debug`.

mod compile;
mod convert;
mod error;
mod modules;
mod pool;
mod reload;
mod request;
mod response;
mod routes;
mod state;
mod vm;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub use error::{LoadErrors, LuaError};
pub use request::HttpRequest;
pub use response::HandlerResponse;
pub use routes::{Found, Target};

use crate::config::Config;
use crate::produce::Producer;
use compile::FunctionSet;
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
        timeout: config.lua.timeout,
        memory_bytes: config.lua.memory_bytes,
    }
}

/// Compiles every function, checks that each file gives a handler and that each can be reached; every problem
/// is reported.
fn load_all(config: &Config, context: &Arc<KafkaContext>) -> Result<RouteTable, LoadErrors> {
    let set: FunctionSet = compile::compile_all(&config.lua.functions_dir).map_err(LoadErrors)?;
    let mut checker = Vm::new(context, limits(config)).map_err(setup_error)?;
    let mut errors: Vec<LuaError> = set
        .values()
        .filter_map(|compiled| checker.check_loads(compiled).err())
        .collect();
    let table = RouteTable::new(&config.routes, set);
    errors.extend(
        table
            .problems()
            .iter()
            .map(|problem| LuaError::Unreachable(problem.clone())),
    );
    if errors.is_empty() {
        Ok(table)
    } else {
        Err(LoadErrors(errors))
    }
}

fn setup_error(error: mlua::Error) -> LoadErrors {
    LoadErrors(vec![LuaError::Setup {
        function: "(startup)".into(),
        message: error.to_string(),
    }])
}

/// `luka check`: compiles and loads every function without serving; gives how many there are.
pub fn check(config: Arc<Config>, producer: Arc<Producer>) -> Result<usize, LoadErrors> {
    let context = Arc::new(KafkaContext { config, producer });
    load_all(&context.config, &context).map(|table| table.functions().len())
}

impl Functions {
    /// Compiles every function (any error stops startup), starts the VMs and, if configured, the file watcher.
    /// Must run inside the tokio runtime.
    pub fn start(config: Arc<Config>, producer: Arc<Producer>) -> Result<Arc<Self>, LoadErrors> {
        let context = Arc::new(KafkaContext {
            config: Arc::clone(&config),
            producer,
        });
        let table = load_all(&config, &context)?;
        let pool = Pool::start(config.lua.vms, Arc::clone(&context), limits(&config)).map_err(setup_error)?;
        let functions = Arc::new(Self {
            config,
            context,
            table: RwLock::new(Arc::new(table)),
            pool,
            watcher: Mutex::new(None),
        });
        if functions.config.lua.watch && functions.config.lua.functions_dir.is_dir() {
            let watcher = reload::watch(&functions).map_err(|e| LoadErrors(vec![e]))?;
            *functions.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
        }
        Ok(functions)
    }

    pub fn find(&self, method: &str, path: &str) -> Found {
        self.table().find(method, path)
    }

    pub async fn call(&self, target: Target, request: HttpRequest) -> Result<HandlerResponse, LuaError> {
        self.pool.call(target, request).await
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
