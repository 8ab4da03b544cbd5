//! Errors of the Lua stage, of two kinds that never meet: loading the functions (startup, `luka check`, reload),
//! which names the file and stops startup or keeps the previous version; and running one request, which
//! `server::error` turns into the answer.
//!
//! Request variants carry the function's file and the Lua message for the log; `server::error` decides what the
//! client sees, which for a failing handler is a generic message, never the Lua error.

use std::path::PathBuf;

use crate::kafka::ErrorClass;

/// A file that cannot be served: it cannot be read, does not compile or load, or no request could reach it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{message}")]
    Compile { file: String, message: String },

    /// The file compiled but running it did not give a handler.
    #[error("{file}: {message}")]
    Load { file: String, message: String },

    /// A file no request could reach (it shares a path with another, or with luka's own).
    #[error("{0}")]
    Unreachable(String),

    #[error("cannot watch {} for changes: {message}", path.display())]
    Watch { path: PathBuf, message: String },

    /// A VM to check or serve the files could not be made (`function` says for what: startup, or a changed file).
    #[error("cannot start {function}: {message}")]
    Setup { function: String, message: String },
}

/// Every problem found loading the functions, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);

/// How one request's handler failed.
#[derive(Debug, thiserror::Error)]
pub enum LuaError {
    /// `req:json()` on a body that is not JSON, not caught by the handler.
    #[error("{0}")]
    BadRequest(String),

    #[error("{function} failed: {message}")]
    Runtime { function: String, message: String },

    #[error("{function} returned an unusable response: {problem}")]
    BadResponse { function: String, problem: String },

    #[error("{function} used more than its {limit_ms} ms of CPU time and was stopped")]
    CpuLimit { function: String, limit_ms: u128 },

    #[error("{function} ran out of its VM's {limit_mb} MiB of memory and was stopped")]
    MemoryLimit { function: String, limit_mb: usize },

    #[error("{function} did not finish within {limit_ms} ms")]
    Timeout { function: String, limit_ms: u128 },

    /// `kafka.produce` failed because the cluster was down or slow (`class` is an outage), and the handler did not
    /// catch it.
    #[error("{function}: kafka cluster '{cluster}' is {}", if *class == ErrorClass::Timeout { "slow" } else { "unavailable" })]
    Kafka {
        function: String,
        cluster: String,
        class: ErrorClass,
    },

    /// `kafka.produce` named more messages than `[server] max_messages_per_request`, and the handler did not catch
    /// it.
    #[error("{0}")]
    TooManyMessages(String),

    /// `kafka.produce` was over the route's `records_per_second`, and the handler did not catch it.
    #[error(transparent)]
    RecordsRefused(crate::limits::RecordsRefused),

    /// The VM could not set up the request (for instance, out of memory before the handler ran).
    #[error("cannot start {function}: {message}")]
    Setup { function: String, message: String },

    #[error("the Lua runtime is shutting down")]
    ShuttingDown,
}
