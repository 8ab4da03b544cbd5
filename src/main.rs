//! The `luka` binary: parse the command line, load the config, run the chosen command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use luka::cli::{Cli, Command};
use luka::config::{Config, ConfigError};
use luka::logging;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: a request allocates and frees many small blocks (hyper's buffers,
/// header maps, Luau's objects, which mlua allocates through Rust's allocator), and glibc's malloc took several per
/// cent of the server's CPU in the profile beside nginx (`bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    match cli.command {
        Some(Command::Check) => check(&cli),
        Some(Command::Types { ref dir }) => types(&cli, dir.as_deref()),
        Some(Command::Test {
            ref paths,
            ref filter,
            timeout,
            config_clusters,
        }) => {
            // The test report is stdout; the embedded brokers' errors go to stderr, beside it.
            let _log = init_tracing_at(false, "error", std::io::stderr());
            let timeout = Duration::from_secs(timeout);
            runtime.block_on(test(&cli, paths, filter.clone(), timeout, config_clusters))
        }
        Some(Command::Broker { listen }) => {
            let _log = init_tracing(false);
            runtime.block_on(broker(listen))
        }
        Some(Command::Serve { listen }) => runtime.block_on(serve(&cli, listen.or(cli.listen))),
        None => runtime.block_on(serve(&cli, cli.listen)),
    }
}

fn check(cli: &Cli) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => std::sync::Arc::new(config),
        Err(e) => return report(&e),
    };
    match luka::lua::check(std::sync::Arc::clone(&config), luka::producer(&config)) {
        Ok(functions) => {
            println!(
                "{}: ok ({} clusters, {} topics, {} users, {} functions, {} routes)",
                cli.config.display(),
                config.clusters.len(),
                config.topics.len(),
                config.users.len(),
                functions,
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn types(cli: &Cli, dir: Option<&std::path::Path>) -> ExitCode {
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => match Config::load(&cli.config) {
            Ok(config) => config.lua.functions_dir.clone(),
            Err(e) => return report(&e),
        },
    };
    if !dir.is_dir() {
        eprintln!(
            "{} is not a folder; give the folder your functions are in",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    let written = match luka::lua::types::write(&dir) {
        Ok(written) => written,
        Err(e) => {
            eprintln!("cannot write the types into {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    match written.luarc {
        luka::lua::types::Luarc::Written(path) => println!("wrote {}", path.display()),
        luka::lua::types::Luarc::Kept(path) => println!(
            "kept your {}: add \"{}\" to its \"workspace.library\" so the language server reads the types",
            path.display(),
            luka::lua::types::FOLDER
        ),
    }
    ExitCode::SUCCESS
}

async fn serve(cli: &Cli, listen: Option<std::net::SocketAddr>) -> ExitCode {
    let mut config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return report(&e),
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let _log = init_tracing(config.server.log_format == luka::config::LogFormat::Json);
    #[cfg(feature = "embedded-broker")]
    let _brokers = match luka::broker::start_configured(&config).await {
        Ok(brokers) => brokers,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(
                "cannot listen on {}: {e} (pass --listen ADDR to use another address)",
                config.server.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let app = match luka::App::new(config) {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("serving {} functions", app.functions.len());
    app.producer.pool().warm_up();
    tracing::info!("luka listening on http://{}", app.config.server.listen);
    luka::server::run(listener, app, luka::server::shutdown_signal()).await;
    ExitCode::SUCCESS
}

#[cfg(feature = "embedded-broker")]
async fn test(
    cli: &Cli,
    paths: &[PathBuf],
    filter: Option<String>,
    timeout: Duration,
    config_clusters: bool,
) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return report(&e),
    };
    let options = luka::testing::Options {
        paths: paths.to_vec(),
        filter,
        timeout,
        config_clusters,
    };
    match luka::testing::run(config, &options, &mut std::io::stdout()).await {
        Ok(summary) if summary.success() => ExitCode::SUCCESS,
        Ok(summary) => {
            if summary.passed + summary.failed == 0 {
                match summary.filtered_out {
                    0 => eprintln!("the test files register no tests: call test(\"name\", function() ... end)"),
                    _ => eprintln!("no test matched the filter"),
                }
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "embedded-broker"))]
async fn test(_cli: &Cli, _paths: &[PathBuf], _filter: Option<String>, _timeout: Duration, _config: bool) -> ExitCode {
    eprintln!("`luka test` needs the embedded-broker feature; rebuild with default features");
    ExitCode::FAILURE
}

#[cfg(feature = "embedded-broker")]
async fn broker(listen: std::net::SocketAddr) -> ExitCode {
    match luka::broker::EmbeddedBroker::start(listen).await {
        Ok(_broker) => {
            println!("kafka broker listening on {listen}; ctrl-c to stop");
            luka::server::shutdown_signal().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "embedded-broker"))]
async fn broker(_listen: std::net::SocketAddr) -> ExitCode {
    eprintln!("this luka was built without the embedded-broker feature; rebuild with default features");
    ExitCode::FAILURE
}

fn report(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::FAILURE
}

/// `RUST_LOG` overrides the default: luka at info, its dependencies at warn.
fn init_tracing(json: bool) -> logging::Guard {
    init_tracing_at(json, "warn,luka=info", std::io::stdout())
}

/// Log lines (the access log among them) go to `out` in batches from a thread of their own (`luka::logging`), so a
/// request never waits for a pipe or disk; what is left is written when the returned guard drops, at exit.
fn init_tracing_at(
    json: bool,
    default: &str,
    out: impl std::io::Write + IsTerminal + Send + 'static,
) -> logging::Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let colours = out.is_terminal();
    let (writer, guard) = logging::batched(out, json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(writer.clone());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    // Asked once: the filter is fixed for the process's life, and asking it per request showed in the profile.
    // Without the writer, the router's lines go through `tracing`, which the filter silences.
    if tracing::enabled!(target: "luka::access", tracing::Level::INFO) {
        logging::access::install(writer, json);
    }
    guard
}
