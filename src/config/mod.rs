//! Configuration: `config.toml` in, a checked [`Config`] out.
//!
//! Loading runs in three steps, each reporting every problem it finds rather than stopping at the first:
//! `${VAR}` expansion on the text ([`expand`]), serde parsing with `deny_unknown_fields` (this file), and whole-config
//! checks such as undefined clusters and overlapping defaults ([`check`]). Every default lives in [`defaults`].

mod asyncapi;
mod check;
pub mod defaults;
mod expand;
mod import;
mod pattern;
mod routes;
mod types;

use std::fmt;
use std::path::{Path, PathBuf};

pub use check::{Cluster, Config, Topic, User};
pub use pattern::{TopicPattern, is_valid_topic_name};
pub use routes::{LuaSettings, Route, RoutePath};
pub use types::{Compression, ContentType, LogFormat, SaslConfig, SaslMechanism, ServerConfig, TlsConfig};

/// One thing wrong with the config, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigProblem {
    pub fn at_line(line: usize, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
        }
    }

    pub fn new(message: impl Into<String>) -> Self {
        Self {
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a config could not be loaded: the file, and every problem found in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (pass --config PATH to use another file)")]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{}", format_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

fn format_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = format!(
        "{} problem{} in {}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        path.display()
    );
    for problem in problems {
        out.push_str(&format!("\n  {}:{problem}", path.display()));
    }
    out
}

impl Config {
    /// Reads, expands, parses and checks the config file at `path`, taking `${VAR}` values from the process
    /// environment. Relative paths inside the config are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::from_toml(&text, &base_dir, |name| std::env::var(name).ok()).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and checks config text; `lookup` resolves `${VAR}` references.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let expanded = expand::expand_env(text, lookup)?;
        let mut raw: types::RawConfig = toml::from_str(&expanded).map_err(|e| vec![toml_problem(&expanded, &e)])?;
        let import_problems = import::fold_asyncapi(&mut raw, &expanded, base_dir);
        let checked = check::check(raw, &expanded, base_dir);
        match (checked, import_problems) {
            (Ok(config), problems) if problems.is_empty() => Ok(config),
            (Ok(_), problems) => Err(problems),
            (Err(mut problems), mut more) => {
                more.append(&mut problems);
                Err(more)
            }
        }
    }
}

fn toml_problem(text: &str, error: &toml::de::Error) -> ConfigProblem {
    let message = error.message().trim_end().to_owned();
    match error.span() {
        Some(span) => ConfigProblem::at_line(line_of(text, span.start), message),
        None => ConfigProblem::new(message),
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
