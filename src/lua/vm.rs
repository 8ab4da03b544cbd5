//! One Luau VM: a request's target in, a coroutine ready to resume out (and back in, to be recycled).
//!
//! ```text
//! start: the file's chunk (loaded once per VM and version) ─> cloned, with the request's own environment and a
//!        runner holding both ─> a recycled coroutine set to run that runner
//! resume: first with (the route's values, method, path, small body), then with what the call it parked on gave
//!         ─> returned or yielded
//! finish: a finished coroutine ─> reset ─> kept for the next request
//! ```
//!
//! A `Vm` is only ever touched by the holder of its lock ([`super::pool::VmCell`]), one poll at a time, so the
//! VM runs one coroutine at a time and the interrupt knows whose budget to charge. The memory limit is switched
//! on only while Lua runs ([`Vm::enter`]): with a limit set, mlua wraps every allocating call in a protected call,
//! which would make setting up a request several times dearer, and setup allocates only what the request's own
//! size bounds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, LuaString, MultiValue, Returns, StdLib, Table, Thread, Value, ValueView};

use super::LoadError;
use super::compile::Compiled;
use super::convert;
use super::modules::{self, KafkaContext};
use super::request;
use super::response::Returned;
use super::routes::Target;
use super::state::{Left, Parked, RequestState, Resume, VmShared, park_token, unlimited};

/// Limits every request of a VM runs under (the wall-clock limit is kept by [`super::Functions::call`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cpu: Duration,
    pub memory_bytes: usize,
}

/// Globals a handler must not reach: files (`require`), new code (`loadstring`) and other functions'
/// environments (`getfenv`/`setfenv`). `debug` and `io` are never loaded.
const REMOVED_GLOBALS: [&str; 4] = ["require", "loadstring", "getfenv", "setfenv"];

/// Makes, for a clone of a file's chunk and its environment, the runner that runs the chunk (which returns the
/// handler) and the handler inside the request's coroutine, so both are metered and may wait on Kafka. A runner is
/// made once per clone and kept with it, so a request's first resume passes only what is its own. The route's
/// values become the global `env` of the chunk's environment here (a table write Luau does in a few instructions,
/// where a call through the API to do it cost about as much as running a constant handler's Lua). `req` starts
/// with method, path and the body when [`Vm::start`] made it ([`EAGER_BODY_BYTES`], else nil); its metatable makes
/// the other fields on first use. `body` and `headers`, the fields most handlers read, are named in its constructor
/// so that the table is made with room for them: storing a field it has no room for makes Luau resize the table (a
/// thousand instructions, on every webhook's `req.body`).
/// A returned table is split into its fields here, in the form [`response::Returned`] describes. When `keep` (the
/// file's [`Compiled::handler_kept`]), the handler the chunk returns is kept for the next requests on this copy of
/// the chunk: its top level has nothing to do but make it, and making it again per request cost about 700 of a
/// constant handler's 27k instructions (a Lua call, a closure made and collected).
const RUNNER: &str = r#"
local req_meta = ...
return function(chunk, globals, keep) local kept return function(env, method, path, body)
  globals.env = env
  local req = setmetatable({ method = method, path = path, body = body, headers = nil }, req_meta)
  local handler = kept
  if handler == nil then
    handler = chunk()
    if type(handler) ~= "function" then
      error("the file must return a function(req), not a " .. type(handler), 0)
    end
    if keep then kept = handler end
  end
  local res = handler(req)
  if type(res) ~= "table" then return nil, res end
  -- The usual answer, `json` alone, is told by its keys: the other fields are neither read nor passed.
  local json_only = true
  for key in next, res do
    if key ~= "json" then
      if key ~= "status" and key ~= "headers" and key ~= "body" then return false, key end
      json_only = false
    end
  end
  if json_only then return true, rawget(res, "json") end
  return true, rawget(res, "json"), rawget(res, "body"), rawget(res, "headers"), rawget(res, "status")
end end
"#;

/// The CPU limit is checked at one of this many of Luau's safe points (calls, returns, loop back edges); the rest
/// cost a countdown (vendor/mlua patch 1). Each check goes through mlua's error and panic guard (about 80
/// instructions, seven times in a constant handler's request), while the deadline it checks moves in ticks of a
/// millisecond: eight safe points apart, an over-budget handler is stopped within the same tick.
const INTERRUPT_EVERY: std::num::NonZeroU32 = std::num::NonZeroU32::new(8).unwrap();

/// The environment a file's top level is checked in ([`Vm::check_loads`]): the globals read as they are, except
/// `env`, whose every name reads as "" (which route's values the file will see is not known here, so a file that
/// checks `assert(env.SECRET)` at its top level still loads); any read or write of a global is noted. Not
/// `safeenv`, so that Luau's cached imports and builtin calls take the slow path, through `__index`, too.
const WATCHED_ENV: &str = r#"
local globals = ...
local touched = false
local values = setmetatable({}, { __index = function() return "" end })
local env = setmetatable({}, {
  __index = function(_, key)
    touched = true
    if key == "env" then return values end
    return globals[key]
  end,
  __newindex = function(env, key, value)
    touched = true
    rawset(env, key, value)
  end,
})
return env, function() return touched end
"#;

/// A request body up to this size is `req.body` from the start, made with the request's other fields, once a
/// request of the same file has read its body ([`Compiled::reads_body`]): making it on first read, through `req`'s
/// `__index` and a call into Rust, cost about 1,700 instructions more per webhook request. Larger bodies, empty
/// ones, and those of handlers that have not read one are made when first read.
const EAGER_BODY_BYTES: usize = 16 * 1024;

/// Finished coroutines kept for reuse; more than this many requests in flight on one VM is rare.
const IDLE_THREADS: usize = 256;

/// Route environments kept per VM; reloads make new ones, so the cache is dropped when it grows past this.
const ROUTE_ENVS: usize = 256;

/// Cloned chunks (each with its environment table) kept per function for reuse.
const SPARE_CHUNKS: usize = 64;

/// Versions of files a VM compiles to native code (Luau's code generator, mlua's `luau-jit`); later ones run in
/// Luau's interpreter. Luau never reuses the code space of a replaced version (`CodeAllocator::deallocate` leaves
/// its pages, up to 256 MiB per VM), so without this a server whose files are edited without end would grow. Each
/// version takes whole pages (its code and its data start on page boundaries; a small handler's are one 4 KiB page
/// each), so this many versions stay within a few MiB. Each file's first version counts too, so a folder of more
/// files than this runs its later files interpreted from the start.
const NATIVE_VERSIONS: usize = 512;

/// Methods whose Lua strings a VM keeps, so most requests do not make (hash and intern) their method's string.
const COMMON_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A request's coroutine; the thread, the chunk and its environment are kept to be reused by a later request once
/// this one finishes.
pub struct Running {
    thread: Thread,
    /// The thread's Luau state, for [`Vm::enter`] (asking mlua for it takes its lock each turn).
    address: usize,
    chunk: Chunk,
    /// Until the first resume: where the VM keeps the route's values and the method it passes, and the body made
    /// for it (the runner holds the chunk and its environment).
    first: Option<First>,
    /// The coroutine returned or failed: its thread may be reset and reused.
    ended: bool,
}

/// The route's values, method and path for a request's first resume, as places in the VM's caches rather than
/// references of their own: the first resume follows [`Vm::start`] under the same lock, so the caches still hold
/// them, and pushing the VM's own references saves making and dropping one each per request. The body, when made,
/// is the request's own string.
struct First {
    /// The key of the route's `env` table in `Vm::route_envs`; none: the empty one.
    values: Option<usize>,
    method: Method,
    // The path is always `Vm::last_path`: `start` sets it.
    /// `req.body` when the request has a small one ([`EAGER_BODY_BYTES`]); else it is made if the handler reads it.
    body: Option<LuaString>,
}

enum Method {
    /// An index into `Vm::methods`.
    Common(usize),
    Other(LuaString),
}

/// How one turn of a coroutine ended.
pub enum Stopped {
    /// The handler returned.
    Returned(Returned),
    /// The handler returned a table with a table as `json` and nothing else (the usual answer): its JSON text, or
    /// why it has none, written where the coroutine gave it back (no reference made for it).
    ReturnedJson(Result<Vec<u8>, String>),
    /// A module call parked the coroutine on this work.
    Parked(Parked),
    /// The handler yielded by itself (`coroutine.yield()`): it is resumed again at once, with no values.
    Yielded,
}

/// What a coroutine gave back at the end of a turn, read where it was on the stack ([`Vm::resume`]).
enum Back {
    /// `(true, table)`: the handler returned `{ json = table }` alone; the table's JSON text.
    Json(Result<Vec<u8>, String>),
    /// Anything else, as values, and whether the handler returned (rather than yielded) them.
    Values(bool, Returned),
}

/// A clone of a file's chunk with the environment it runs in, and the runner that runs it there.
struct Chunk {
    name: Arc<str>,
    id: u64,
    env: Table,
    runner: Function,
}

pub struct Vm {
    lua: Lua,
    shared: Arc<VmShared>,
    /// `{__index = globals}`: each request's environment reads the (read-only) globals and writes its own table.
    env_meta: Table,
    /// Makes a chunk's runner ([`RUNNER`]).
    make_runner: Function,
    loaded: HashMap<Arc<str>, (u64, Function)>,
    /// Versions of files loaded so far (see [`NATIVE_VERSIONS`]).
    versions: usize,
    /// Chunks of finished requests, their environments emptied, by function name: ordered, not hashed (two
    /// look-ups per request, and comparing a few names costs less than hashing one).
    spare: BTreeMap<Arc<str>, Vec<Chunk>>,
    /// The `env` table of each route, read-only, by the address of the route's values.
    route_envs: HashMap<usize, (Arc<BTreeMap<String, String>>, Table)>,
    no_env: Table,
    /// The last request's path with its Lua string: most requests repeat the path before them, and making the string
    /// (hashed, looked up among Luau's interned strings, referenced) is dearer than comparing the bytes.
    last_path: Option<(String, LuaString)>,
    /// [`COMMON_METHODS`] with their Lua strings.
    methods: Vec<(&'static str, LuaString)>,
    /// With each its Luau state's address (see [`Running::address`]).
    idle: Vec<(Thread, usize)>,
    limits: Limits,
}

/// A Luau state with the standard libraries a handler may use and nothing else.
pub(super) fn standard_lua() -> mlua::Result<Lua> {
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
    // One generator serves every request of a VM (Luau seeds it when the VM starts): a handler that seeded it would
    // choose the numbers every later request on the VM gets, other routes' included.
    let math: Table = globals.raw_get("math")?;
    let refuse =
        lua.create_function(|_, _: MultiValue| -> mlua::Result<()> { Err(mlua::Error::runtime(RANDOMSEED_REFUSED)) })?;
    math.raw_set("randomseed", refuse)?;
    Ok(lua)
}

/// What `math.randomseed` raises.
const RANDOMSEED_REFUSED: &str = "math.randomseed is not available: math.random's generator is shared by every \
                                  request of the VM, and is seeded when the VM starts";

/// [`standard_lua`] with the handler modules installed: the globals every handler sees (before the sandbox).
///
/// luka's own Lua (the modules' wrappers, the runner, `req`'s metatable) is compiled at level 2, as the handlers are
/// (`compile.rs`): it inlines the small local functions `kafka.produce` checks its call with, on every produce. None
/// of them raises an error, so no error's level can shift to another frame.
pub(super) fn handler_lua(context: &Arc<KafkaContext>, shared: &Arc<VmShared>) -> mlua::Result<Lua> {
    let lua = standard_lua()?;
    lua.set_compiler(mlua::chunk::Compiler::new().set_optimization_level(2));
    modules::install(&lua, context, shared)?;
    Ok(lua)
}

impl Vm {
    pub fn new(context: &Arc<KafkaContext>, limits: Limits) -> mlua::Result<Self> {
        let shared = Arc::new(VmShared::default());
        let lua = handler_lua(context, &shared)?;
        let globals = lua.globals();
        let for_json = Arc::clone(&shared);
        let json = lua.create_function(move |lua, ()| req_json(lua, &for_json))?;
        let json = modules::raising(&lua, json)?;
        let req_meta = request::metatable(&lua, &shared, json)?;
        // Makes the globals and the standard library read-only, so no request can change what another sees.
        lua.sandbox(true)?;
        // Loaded after `sandbox`, so its builtins (`type`, `rawget`, ...) are Luau fast calls.
        let make_runner: Function = lua.load(RUNNER).set_name("=luka").call(req_meta)?;
        let env_meta = lua.create_table()?;
        // The frozen globals themselves, not the writable proxy `sandbox` puts in front of them.
        env_meta.set("__index", globals)?;
        env_meta.set_readonly(true);
        let no_env = lua.create_table()?;
        no_env.set_readonly(true);
        let methods = COMMON_METHODS
            .iter()
            .map(|method| Ok((*method, lua.create_string(method)?)))
            .collect::<mlua::Result<_>>()?;
        let interrupt = Arc::clone(&shared);
        lua.set_interrupt_every(INTERRUPT_EVERY, move |_| interrupt.check());
        Ok(Self {
            lua,
            shared,
            env_meta,
            make_runner,
            loaded: HashMap::new(),
            versions: 0,
            spare: BTreeMap::new(),
            route_envs: HashMap::new(),
            no_env,
            last_path: None,
            methods,
            idle: Vec::new(),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh copy of the file's chunk, loaded once per VM and version.
    fn chunk(&mut self, compiled: &Compiled) -> mlua::Result<Function> {
        if let Some((id, chunk)) = self.loaded.get(&compiled.name)
            && *id == compiled.id
        {
            return chunk.deep_clone();
        }
        if !self.compiles_natively() {
            self.lua.enable_jit(false);
        }
        self.versions += 1;
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

    /// `safeenv` keeps Luau's fast paths (cached imports such as `string.format`, builtin fast calls): the globals
    /// behind the table are frozen, and Luau's compiler never caches a global that the file itself assigns. The
    /// flag survives emptying the table for reuse.
    fn empty_environment(&self) -> mlua::Result<Table> {
        let env = self.lua.create_table_with_capacity(0, 1)?;
        env.set_metatable(Some(self.env_meta.clone()))?;
        env.set_safeenv(true);
        Ok(env)
    }

    /// A chunk of `compiled` with an empty environment: a spare one, else a new clone.
    fn fresh_chunk(&mut self, compiled: &Compiled) -> mlua::Result<Chunk> {
        if let Some(spare) = self.spare.get_mut(&compiled.name)
            && let Some(chunk) = spare.pop()
        {
            if chunk.id == compiled.id {
                return Ok(chunk);
            }
            // A reload replaced the file: its old spares go.
            spare.clear();
        }
        let function = self.chunk(compiled)?;
        let env = self.empty_environment()?;
        function.set_environment(env.clone())?;
        let keep = compiled.handler_kept.load(std::sync::atomic::Ordering::Relaxed);
        let runner = self.make_runner.call((function, &env, keep))?;
        Ok(Chunk {
            name: Arc::clone(&compiled.name),
            id: compiled.id,
            env,
            runner,
        })
    }

    /// The key in `route_envs` of the route's `env` values (read-only, built once per VM); none: no values.
    fn route_env(&mut self, target: &Target) -> mlua::Result<Option<usize>> {
        if target.env.is_empty() {
            return Ok(None);
        }
        let key = Arc::as_ptr(&target.env) as usize;
        if self.route_envs.contains_key(&key) {
            return Ok(Some(key));
        }
        if self.route_envs.len() >= ROUTE_ENVS {
            self.route_envs.clear();
        }
        let table = self
            .lua
            .create_table_from(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        table.set_readonly(true);
        self.route_envs.insert(key, (Arc::clone(&target.env), table));
        Ok(Some(key))
    }

    /// Checks that a file, run once, gives a handler (at startup and on reload), without running the handler; and
    /// whether its top level touches no global and its handler captures no local, so that the handler may be kept
    /// between requests ([`Compiled::handler_kept`]).
    pub fn check_loads(&mut self, compiled: &Compiled) -> Result<(), LoadError> {
        let load_error = |message: String| LoadError::Load {
            file: compiled.display.to_string(),
            message,
        };
        let chunk = self.chunk(compiled).map_err(|e| load_error(e.to_string()))?;
        let (env, touched) = self
            .env_meta
            .raw_get::<Table>("__index")
            .and_then(|globals| {
                self.lua
                    .load(WATCHED_ENV)
                    .set_name("=luka")
                    .call::<(Table, Function)>(globals)
            })
            .map_err(|e| load_error(first_line(&e.to_string())))?;
        let request = super::state::HttpRequest {
            method: hyper::Method::GET,
            uri: hyper::Uri::from_static("/"),
            headers: hyper::HeaderMap::new(),
            body: bytes::Bytes::new(),
            remote_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            user: None,
        };
        let state = Arc::new(RequestState::new(Arc::clone(&compiled.display), request, Vec::new()));
        self.enter(&state, None, self.limits.cpu);
        let result = chunk.set_environment(env).and_then(|_| chunk.call::<Value>(()));
        self.pause();
        self.leave();
        match result {
            Ok(Value::Function(handler)) => {
                // A top level that read a global could return another handler another time (`env` differs by
                // route); one that wrote a global leaves what its handler may read, and the environment is
                // emptied after every request; a local the handler captures is state that must not outlive one.
                let untouched = matches!(touched.call::<bool>(()), Ok(false));
                let kept = untouched && handler.info().num_upvalues == 0;
                compiled.handler_kept.store(kept, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Ok(other) => Err(load_error(format!(
                "the file must return a function(req), not a {}",
                other.type_name()
            ))),
            Err(e) => Err(load_error(first_line(&e.to_string()))),
        }
    }

    /// Sets up a request's coroutine: its chunk with its own (empty) environment, on a recycled thread, and the
    /// method, path and small body it starts with. Made here, with the memory limit off, as unprotected calls: with
    /// the limit on, mlua makes each string under a protected call, which cost more than running a constant
    /// handler's Lua. Their size is the client's, bounded by hyper's limit on a request head (which already holds
    /// them) and by [`EAGER_BODY_BYTES`], not the handler's.
    pub fn start(&mut self, target: &Target, request: &super::state::HttpRequest) -> mlua::Result<Running> {
        let chunk = self.fresh_chunk(&target.function)?;
        let values = self.route_env(target)?;
        let (thread, address) = match self.idle.pop() {
            Some((thread, address)) => {
                thread.reset(chunk.runner.clone())?;
                (thread, address)
            }
            None => {
                let thread = self.lua.create_thread(chunk.runner.clone())?;
                let address = thread.to_pointer() as usize;
                (thread, address)
            }
        };
        let method = request.method.as_str();
        let method = match self.methods.iter().position(|(name, _)| *name == method) {
            Some(index) => Method::Common(index),
            None => Method::Other(self.lua.create_string(method)?),
        };
        self.set_path(request.path())?;
        let eager = target.function.reads_body.load(std::sync::atomic::Ordering::Relaxed);
        let body = match request.body.len() {
            1..=EAGER_BODY_BYTES if eager => Some(self.lua.create_string(&request.body)?),
            _ => None,
        };
        Ok(Running {
            thread,
            address,
            chunk,
            first: Some(First { values, method, body }),
            ended: false,
        })
    }

    /// Makes `last_path` hold `path`: the last request's string if it had the same path, else a new one.
    fn set_path(&mut self, path: &str) -> mlua::Result<()> {
        if let Some((last, _)) = &self.last_path
            && last == path
        {
            return Ok(());
        }
        let string = self.lua.create_string(path)?;
        let mut text = self.last_path.take().map(|(text, _)| text).unwrap_or_default();
        text.clear();
        text.push_str(path);
        self.last_path = Some((text, string));
        Ok(())
    }

    /// Runs `running`'s coroutine until it returns or yields: the first time with the route's values, method, path
    /// and the body [`Vm::start`] made, if any (its runner holds the chunk and its environment), then with the values
    /// `resume` (what it parked on) gives. Between [`Vm::enter`] and [`Vm::pause`]; a `{ json = table }` answer is
    /// encoded here, where the coroutine gave it back, after this pauses the memory limit itself.
    pub fn resume(&self, running: &mut Running, resume: Option<Resume>) -> mlua::Result<Stopped> {
        let read = |finished: bool, returns: Returns<'_>| -> mlua::Result<Back> {
            if finished
                && returns.len() == 2
                && matches!(returns.view(0)?, ValueView::Boolean(true))
                && let ValueView::Table(json) = returns.view(1)?
            {
                // Read with the memory limit off, as every answer is (`Call::turn` pauses after the turn too).
                self.pause();
                return Ok(Back::Json(convert::encode_view(json, &mut self.budget())));
            }
            Ok(Back::Values(finished, returns.into_values()?))
        };
        let back = match running.first.take() {
            Some(First { values, method, body }) => {
                let values = match values {
                    Some(key) => &self.route_envs.get(&key).ok_or_else(|| moved("route values"))?.1,
                    None => &self.no_env,
                };
                let method = match &method {
                    Method::Common(index) => &self.methods[*index].1,
                    Method::Other(string) => string,
                };
                let path = &self.last_path.as_ref().ok_or_else(|| moved("path"))?.1;
                running.thread.resume_read((values, method, path, body), read)
            }
            None => {
                let values = match resume {
                    Some(resume) => resume(&self.lua)?,
                    None => MultiValue::new(),
                };
                running.thread.resume_read(values, read)
            }
        };
        // Taken whatever happened: a call that parked and then could not yield (inside a metamethod, say) leaves
        // work that must not run.
        let parked = self.shared.take_parked();
        let returned = match back.and_then(|back| back).inspect_err(|_| running.ended = true)? {
            Back::Json(text) => {
                running.ended = true;
                return Ok(Stopped::ReturnedJson(text));
            }
            Back::Values(true, returned) => {
                running.ended = true;
                return Ok(Stopped::Returned(returned));
            }
            Back::Values(false, yielded) => yielded,
        };
        Ok(match parked {
            // Work whose call raised an error instead of yielding (the handler may have caught it and yielded by
            // itself since) was refused to the handler: it is dropped, never sent.
            Some(parked) if matches!(returned.0, Value::LightUserData(token) if token == park_token()) => {
                Stopped::Parked(parked)
            }
            _ => Stopped::Yielded,
        })
    }

    /// Before resuming `state`'s coroutine `running` (none: code run outside a request's coroutine), which may run
    /// for `remaining` more: the limits go on.
    pub fn enter(&self, state: &Arc<RequestState>, running: Option<&Running>, remaining: Duration) {
        let _ = self.lua.set_memory_limit(self.limits.memory_bytes);
        let thread = running.map_or(std::ptr::null(), |running| running.address as *const std::ffi::c_void);
        self.shared.enter(state, thread, remaining)
    }

    /// Lua stopped running (the coroutine yielded or finished): the memory limit goes off. Work still to be
    /// charged to the request's CPU budget (reading its response) may follow before [`Vm::leave`].
    pub fn pause(&self) {
        let _ = self.lua.set_memory_limit(0);
    }

    /// After the request's turn, once [`Vm::pause`]d: whether it ran past its CPU budget, and the CPU time it spent.
    pub fn leave(&self) -> Left {
        self.shared.leave()
    }

    /// A budget for Rust-side work done for the request now running, charged to its CPU time.
    pub fn budget(&self) -> convert::Budget {
        convert::Budget::metered(&self.shared)
    }

    /// After a request ended: its coroutine, chunk and emptied environment are kept for reuse, and garbage is
    /// collected while there is still room (Luau does not collect when an allocation fails, so garbage left by a
    /// finished request could make the next one fail).
    ///
    /// Reuse carries nothing over: the thread is reset before it runs again, the environment (the only table a
    /// request's globals live in) is emptied here, and the chunk's top level runs again for each request. Nothing
    /// a request made can be reached afterwards: every table it could have stored a value in is read-only.
    ///
    /// Gives the memory the VM uses afterwards.
    pub fn finish(&mut self, running: Running) -> usize {
        let Running {
            thread,
            address,
            chunk,
            ended,
            ..
        } = running;
        if !ended {
            return self.lua.used_memory();
        }
        if self.idle.len() < IDLE_THREADS {
            self.idle.push((thread, address));
        }
        // Looked up before inserting: the name's list is almost always there, and `entry` wants its own copy of
        // the key.
        let spare = match self.spare.get_mut(&chunk.name) {
            Some(spare) => spare,
            None => self.spare.entry(Arc::clone(&chunk.name)).or_default(),
        };
        if spare.len() < SPARE_CHUNKS && chunk.env.clear().is_ok() {
            spare.push(chunk);
        }
        let used = self.lua.used_memory();
        if used <= self.limits.memory_bytes / 2 {
            return used;
        }
        let _ = self.lua.gc_collect();
        self.lua.used_memory()
    }

    /// Frees what a stopped request held, before the VM is retired or reused.
    pub fn collect(&self) {
        let _ = self.lua.gc_collect();
    }

    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// Whether the next version of a file loaded will be compiled to native code.
    fn compiles_natively(&self) -> bool {
        self.versions < NATIVE_VERSIONS
    }
}

/// `what` for a first resume was not where [`Vm::start`] left it: a resume that did not follow its start.
fn moved(what: &str) -> mlua::Error {
    mlua::Error::runtime(format!(
        "the request's {what} left the VM's cache before its first resume"
    ))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_owned()
}

/// `req:json()`: the body parsed as JSON; a body that is not JSON is the client's fault (400 unless caught).
fn req_json(lua: &Lua, shared: &VmShared) -> mlua::Result<(bool, Value)> {
    let Some(state) = shared.current() else {
        return modules::answer(lua, Err::<Value, _>("req:json() called outside a request".to_owned()));
    };
    // Parsed JSON takes a few times its text in Lua values.
    let size = state.request.body.len().saturating_mul(4);
    match unlimited(lua, size, || {
        convert::decode_json(lua, Some(shared), &state.request.body)
    }) {
        Ok(Ok(value)) => modules::answer(lua, Ok(value)),
        Ok(Err(e)) => {
            let message = format!("the request body is not valid JSON: {e}");
            state.record(|o| o.bad_request = Some(message.clone()));
            modules::answer(lua, Err::<Value, _>(message))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::lua::compile;

    fn test_vm() -> Vm {
        let limits = Limits {
            cpu: Duration::from_secs(1),
            memory_bytes: 16 << 20,
        };
        Vm::new(&crate::lua::test_context(), limits).unwrap()
    }

    /// `source` as a new version of `f.lua`, loaded (and its top level run) on `vm`.
    fn load(vm: &mut Vm, source: &str) -> Compiled {
        let compiled = compile::compile("f.lua", "functions/f.lua", source.as_bytes()).unwrap();
        vm.check_loads(&compiled).unwrap();
        compiled
    }

    fn kept(source: &str) -> bool {
        load(&mut test_vm(), source).handler_kept.load(Ordering::Relaxed)
    }

    #[test]
    fn a_vm_compiles_a_bounded_number_of_versions_natively_and_loads_the_rest_interpreted() {
        let mut vm = test_vm();
        for version in 0..NATIVE_VERSIONS + 3 {
            assert_eq!(
                vm.compiles_natively(),
                version < NATIVE_VERSIONS,
                "before version {version}"
            );
            load(
                &mut vm,
                &format!("local n = {version} return function(req) return {{ json = {{ n = n }} }} end"),
            );
        }
        assert_eq!(vm.versions, NATIVE_VERSIONS + 3);
    }

    #[test]
    fn a_handler_is_kept_only_when_its_top_level_touches_no_global_and_it_captures_no_local() {
        assert!(kept("return function(req) return { json = { ok = true } } end"));
        assert!(kept(
            "local LIMIT = 10 return function(req) return { json = { n = LIMIT } } end"
        ));
        assert!(kept(
            "local t = {} for i = 1, 3 do t[i] = i end return function(req) return kafka end"
        ));
        // Each of these would give another request something else than running the top level again does.
        assert!(!kept(
            "local n = 0 return function(req) n = n + 1 return { json = { n = n } } end"
        ));
        assert!(!kept("greeting = 'hi' return function(req) return greeting end"));
        assert!(!kept(
            "if env.MODE == 'a' then return function() return 'a' end end return function() return 'b' end"
        ));
        assert!(!kept("print('loaded') return function(req) return 'x' end"));
        assert!(!kept("local f = string.format return function(req) return 'x' end"));
        assert!(!kept(
            "return setmetatable({}, { __call = function() end }) and function(req) return 'x' end"
        ));
    }
}
