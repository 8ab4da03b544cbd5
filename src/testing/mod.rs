//! `luka test`: a checked config and `*_test.lua` files in, a report (one line per test, a diff for each failure,
//! `N passed, M failed`) and a verdict out.
//!
//! Each cluster of the config gets its own embedded broker on a free port for the run (or, with
//! [`Options::config_clusters`], the run writes to the clusters the config names), so the real router, the real
//! handlers and the real produce path run unchanged; `send` in a test file calls the router in memory and reads
//! back, from the broker, every record the request wrote.

mod send;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mlua::{Function, Lua, Table};

use crate::App;
use crate::broker::EmbeddedBroker;
use crate::config::{Config, TEST_SUFFIX};

pub(crate) const PRELUDE: &str = include_str!("prelude.lua");

/// What to run.
#[derive(Debug)]
pub struct Options {
    /// Test files or folders; empty: the config's `[lua] tests` folder.
    pub paths: Vec<PathBuf>,
    /// Only tests whose name contains this.
    pub filter: Option<String>,
    /// How long one test (or the loading of one file) may run, its requests included.
    pub timeout: Duration,
    /// Write to the config's own clusters instead of an embedded broker per cluster.
    pub config_clusters: bool,
}

/// How a run went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub filtered_out: usize,
}

impl Summary {
    /// Whether the run counts as a pass: something ran and nothing failed.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("cannot start a broker for the test run: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    #[error("{0}")]
    Functions(#[from] crate::lua::LoadErrors),
    #[error("cannot find test files: {0}")]
    Scan(String),
    #[error("no test files (named *{TEST_SUFFIX}) in {}", .0.display())]
    NoTests(PathBuf),
    #[error("{} does not exist{}", path.display(), if *given { "" } else { " (the [lua] tests folder of the config)" })]
    Missing { path: PathBuf, given: bool },
    #[error("{} is not a test file: test files are named *{TEST_SUFFIX}", .0.display())]
    NotATest(PathBuf),
    #[error("no free port for a test broker: {0}")]
    Port(std::io::Error),
    #[error("cannot set up the test API: {0}")]
    Setup(#[from] mlua::Error),
}

/// Runs the tests, writing the report to `out`.
pub async fn run(mut config: Config, options: &Options, out: &mut impl Write) -> Result<Summary, TestError> {
    let files = test_files(&config, &options.paths)?;
    let _brokers = if options.config_clusters {
        crate::broker::start_configured(&config).await?
    } else {
        start_brokers(&mut config).await?
    };
    config.lua.watch = false;
    config.server.access_log = false;
    let app = App::new(config).map_err(TestError::Functions)?;
    let runner = Runner::new(&app, options)?;
    let mut summary = Summary::default();
    for (display, path) in files {
        let _ = writeln!(out, "{display}");
        runner.run_file(&display, &path, &mut summary, out).await?;
    }
    let filtered = match summary.filtered_out {
        0 => String::new(),
        n => format!(" ({n} filtered out)"),
    };
    let _ = writeln!(out, "{} passed, {} failed{filtered}", summary.passed, summary.failed);
    Ok(summary)
}

/// The Lua state test files run in, with the test API installed.
struct Runner<'o> {
    lua: Lua,
    /// `run(fn)`: calls a test protected, giving `true` or `false, message`.
    run: Function,
    /// `take_tests()`: the tests the last loaded file registered.
    take_tests: Function,
    options: &'o Options,
    clock: Arc<Clock>,
}

/// The running test's time limit, checked by Lua's interrupt so a busy loop stops too.
#[derive(Default)]
struct Clock {
    deadline: Mutex<Option<Instant>>,
    /// Set by the interrupt when it stopped the test.
    fired: AtomicBool,
}

impl Clock {
    fn start(&self, limit: Duration) {
        self.fired.store(false, Ordering::Relaxed);
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + limit);
    }

    /// Stops the clock; whether the limit was reached.
    fn stop(&self) -> bool {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.fired.load(Ordering::Relaxed)
    }

    fn check(&self) -> mlua::Result<mlua::VmState> {
        match *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(at) if Instant::now() > at => {
                self.fired.store(true, Ordering::Relaxed);
                Err(mlua::Error::runtime("the test ran out of time"))
            }
            _ => Ok(mlua::VmState::Continue),
        }
    }
}

impl<'o> Runner<'o> {
    fn new(app: &Arc<App>, options: &'o Options) -> Result<Self, TestError> {
        let lua = crate::lua::tooling_lua(Arc::clone(&app.config), Arc::clone(&app.producer))?;
        let clock = Arc::new(Clock::default());
        let interrupt = Arc::clone(&clock);
        lua.set_interrupt(move |_| interrupt.check());
        let (api, run, take_tests): (Table, Function, Function) = lua.load(PRELUDE).set_name("=luka.test").call((
            send::raw_send(&lua, Arc::clone(app))?,
            lua.globals().get::<Table>("json")?,
            lua.create_function(|_, name: String| Ok(std::env::var(name).ok()))?,
        ))?;
        for pair in api.pairs::<String, mlua::Value>() {
            let (name, value) = pair?;
            lua.globals().set(name, value)?;
        }
        // `print` in a test file is the test's own output, not a server log line.
        lua.globals().set(
            "print",
            lua.create_function(|_, args: mlua::MultiValue| {
                let line: Vec<String> = args.iter().map(|v| v.to_string().unwrap_or_default()).collect();
                println!("{}", line.join("\t"));
                Ok(())
            })?,
        )?;
        Ok(Self {
            lua,
            run,
            take_tests,
            options,
            clock,
        })
    }

    /// Runs `work` under the time limit; `Err` says why it did not finish.
    async fn timed<T>(&self, work: impl Future<Output = mlua::Result<T>>) -> Result<T, String> {
        self.clock.start(self.options.timeout);
        let outcome = tokio::time::timeout(self.options.timeout, work).await;
        let fired = self.clock.stop();
        match outcome {
            Ok(Ok(value)) if !fired => Ok(value),
            Ok(Err(e)) if !fired => Err(e.to_string()),
            _ => Err(format!(
                "the test did not finish within {} s",
                self.options.timeout.as_secs()
            )),
        }
    }

    /// Loads one file (which registers its tests) in an environment of its own, then runs each test that passes
    /// the filter.
    async fn run_file(
        &self,
        display: &str,
        path: &Path,
        summary: &mut Summary,
        out: &mut impl Write,
    ) -> Result<(), TestError> {
        let env = self.lua.create_table()?;
        let meta = self.lua.create_table()?;
        meta.set("__index", self.lua.globals())?;
        env.set_metatable(Some(meta))?;
        let loaded = match std::fs::read(path) {
            Ok(source) => {
                let chunk = self
                    .lua
                    .load(source)
                    .set_name(format!("@{display}"))
                    .set_environment(env);
                self.timed(chunk.exec_async()).await
            }
            Err(e) => Err(format!("cannot read {display}: {e}")),
        };
        let tests: Table = self.take_tests.call(())?;
        if let Err(why) = loaded {
            summary.failed += 1;
            let _ = writeln!(out, "  FAIL (the file does not load)\n{}", indent(&why));
            return Ok(());
        }
        for test in tests.sequence_values::<Table>() {
            let test = test?;
            let name: String = test.get("name")?;
            if self.options.filter.as_deref().is_some_and(|f| !name.contains(f)) {
                summary.filtered_out += 1;
                continue;
            }
            let started = Instant::now();
            let call = self
                .run
                .call_async::<(bool, Option<String>)>(test.get::<Function>("fn")?);
            let failure = match self.timed(call).await {
                Ok((true, _)) => None,
                Ok((false, message)) => Some(message.unwrap_or_default()),
                Err(why) => Some(why),
            };
            let ms = started.elapsed().as_millis();
            match failure {
                None => {
                    summary.passed += 1;
                    let _ = writeln!(out, "  ok    {name} ({ms} ms)");
                }
                Some(why) => {
                    summary.failed += 1;
                    let _ = writeln!(out, "  FAIL  {name} ({ms} ms)\n{}", indent(&why));
                }
            }
        }
        Ok(())
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("        {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The test files to run, each with the name it is reported under, in a stable order.
fn test_files(config: &Config, paths: &[PathBuf]) -> Result<Vec<(String, PathBuf)>, TestError> {
    let (paths, given) = if paths.is_empty() {
        (vec![config.lua.tests_dir.clone()], false)
    } else {
        (paths.to_vec(), true)
    };
    let here = std::env::current_dir().unwrap_or_default();
    let shown = |path: &Path| path.strip_prefix(&here).unwrap_or(path).display().to_string();
    let mut files = Vec::new();
    for path in &paths {
        if path.is_file() {
            if !path.to_string_lossy().ends_with(TEST_SUFFIX) {
                return Err(TestError::NotATest(path.clone()));
            }
            files.push((shown(path), path.clone()));
        } else if path.is_dir() {
            let found = crate::lua::compile::scan_tests(path).map_err(|e| TestError::Scan(e.to_string()))?;
            files.extend(found.into_values().map(|file| (shown(&file), file)));
        } else {
            return Err(TestError::Missing {
                path: path.clone(),
                given,
            });
        }
    }
    if files.is_empty() {
        return Err(TestError::NoTests(paths.into_iter().next().unwrap_or_default()));
    }
    Ok(files)
}

/// One embedded broker per cluster, on free ports, with every cluster pointed at its own: the run touches no
/// broker the config names, and a luka already serving the config keeps its ports.
async fn start_brokers(config: &mut Config) -> Result<Vec<EmbeddedBroker>, TestError> {
    let mut brokers = Vec::new();
    for cluster in config.clusters.values_mut() {
        let broker = EmbeddedBroker::start(free_port()?).await?;
        let cluster = Arc::make_mut(cluster);
        cluster.bootstrap = vec![broker.addr().to_string()];
        cluster.embedded = None;
        cluster.tls = None;
        cluster.sasl = None;
        brokers.push(broker);
    }
    Ok(brokers)
}

fn free_port() -> Result<std::net::SocketAddr, TestError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(TestError::Port)
}
