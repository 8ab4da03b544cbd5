//! Configuration: `config.toml` in, a checked [`Config`] out.
//!
//! ```text
//! text ─expand─▶ text ─serde─▶ raw tables ─import─▶ raw tables ─check (topics, functions)─▶ Config
//! ```
//!
//! Each step reports every problem it finds to the collector in [`problem`] rather than stopping at the first:
//! `${VAR}` expansion on the text ([`expand`]); serde parsing into the [`raw`] tables with `deny_unknown_fields`
//! (this file); the AsyncAPI documents the config names, folded in as clusters and topics ([`import`]); and the
//! whole-config checks ([`check`], with [`topics`] and [`functions`]) that build the [`checked`] model. Every
//! default lives in [`defaults`].

mod asyncapi;
mod check;
mod checked;
mod choices;
pub mod defaults;
mod expand;
mod functions;
mod import;
mod pattern;
mod problem;
mod raw;
mod tls;
mod topics;

use std::path::{Path, PathBuf};

pub use checked::{Cluster, Config, MetricsSettings, Topic, User};
pub use choices::{Compression, ContentType, LogFormat, SaslMechanism};
pub use functions::{BUILTIN_EXACT, BUILTIN_FOLDERS, LuaSettings, Route, RoutePath, TEST_SUFFIX, is_builtin_path};
pub use pattern::{TopicPattern, is_valid_topic_name};
pub use problem::ConfigProblem;
pub use raw::{SaslConfig, ServerConfig, TlsConfig};

use problem::line_of;

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
        let (expanded, mut problems) = expand::expand_env_all(text, lookup);
        let Some((mut raw, parsed_text)) = parse_raw(&expanded, &mut problems) else {
            return Err(problems);
        };
        problems.extend(import::fold_asyncapi(&mut raw, &parsed_text, base_dir));
        match check::check(raw, &parsed_text, base_dir) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }
}

/// Most problems serde reports in one run before giving up on the file.
const MAX_SHAPE_PROBLEMS: usize = 50;

/// The typed shape of `text`, with every shape problem (unknown key, wrong type, missing key) in `problems`.
///
/// serde stops at the first problem, so after each one the offending lines are blanked (line numbers stay the same)
/// and the text is parsed again, until it parses or blanking would break its syntax. Gives the parsed shape and the
/// text it was parsed from; `None` if the text is not TOML at all.
fn parse_raw(text: &str, problems: &mut Vec<ConfigProblem>) -> Option<(raw::RawConfig, String)> {
    let mut text = text.to_owned();
    for _ in 0..MAX_SHAPE_PROBLEMS {
        let error = match toml::from_str::<raw::RawConfig>(&text) {
            Ok(raw) => return Some((raw, text)),
            Err(error) => error,
        };
        problems.push(toml_problem(&text, &error));
        // A missing key's span is its whole table: blanking that would only turn its other keys into noise.
        let span = error.span().filter(|_| !error.message().starts_with("missing field"))?;
        let blanked = blank_lines(&text, span);
        // Blanking part of a multi-line value, or a syntax error: stop, the rest would be noise.
        if blanked == text || toml::from_str::<toml::Table>(&blanked).is_err() {
            return None;
        }
        text = blanked;
    }
    None
}

/// `text` with every line touched by `span` replaced by an empty line.
fn blank_lines(text: &str, span: std::ops::Range<usize>) -> String {
    let start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let newlines = text[start..end].matches('\n').count();
    format!("{}{}{}", &text[..start], "\n".repeat(newlines), &text[end..])
}

fn toml_problem(text: &str, error: &toml::de::Error) -> ConfigProblem {
    let message = error.message().trim_end().to_owned();
    match error.span() {
        Some(span) => ConfigProblem::at_line(line_of(text, span.start), message),
        None => ConfigProblem::new(message),
    }
}
