//! Command line: arguments in, the command to run out.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// luka serves HTTP: Lua edge functions and a REST produce API that write to the Kafka clusters config.toml names.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Config file to read.
    #[arg(long, short, global = true, default_value = "config.toml", env = "LUKA_CONFIG")]
    pub config: PathBuf,

    /// Address to serve HTTP on, overriding [server] listen (for `serve`, the default command).
    #[arg(long)]
    pub listen: Option<SocketAddr>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default): start embedded brokers, then answer requests until ctrl-c or SIGTERM.
    Serve {
        /// Address to serve HTTP on, overriding [server] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Load and check the whole config without serving; lists every problem and exits non-zero if there is one.
    Check,
    /// Run the `*_test.lua` files (default: those in [lua] tests, else the functions folder) against the real
    /// router and handlers, with an embedded broker per cluster (or the config's clusters); exits non-zero if any
    /// test fails.
    Test {
        /// Test files or folders to run instead.
        paths: Vec<PathBuf>,
        /// Run only the tests whose name contains this text.
        #[arg(long, short)]
        filter: Option<String>,
        /// Seconds one test may run, its requests included.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: u64,
        /// Write to the clusters as the config names them (a staging Kafka, say) instead of an embedded broker per
        /// cluster; an `embedded` cluster's broker starts on its address, as in serve. What the tests write stays.
        #[arg(long)]
        config_clusters: bool,
    },
    /// Write the editor types (lua-language-server annotations) into DIR/.luka/types, and DIR/.luarc.json unless
    /// DIR has its own.
    Types {
        /// The folder your functions are in; default: [lua] functions of the config.
        dir: Option<PathBuf>,
    },
    /// Run only the embedded development broker (no HTTP), e.g. for benchmarks.
    Broker {
        /// Address the Kafka-protocol broker listens on and advertises.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
    },
}
