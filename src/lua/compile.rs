//! The functions folder in, Luau bytecode out: one [`Compiled`] per `.lua` file, shared by every VM.
//!
//! Compiling is separate from loading so a file is parsed once, however many VMs run it, and so a reload can
//! compile a changed file and keep the previous bytecode when the new text does not compile.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::LoadError;
use crate::metrics::FunctionRequests;

/// One handler file, compiled.
#[derive(Debug)]
pub struct Compiled {
    /// Unique per compilation, so a VM knows when its loaded copy is stale.
    pub id: u64,
    /// Path inside the functions folder, with `/` separators: `hooks/github.lua`.
    pub name: Arc<str>,
    /// Its series in `luka_http_requests_total`, under `name`.
    pub requests: Arc<FunctionRequests>,
    /// The name used in error messages and logs: `functions/hooks/github.lua`.
    pub display: Arc<str>,
    pub bytecode: Vec<u8>,
    /// Hash of the source, to tell a real edit from a touch.
    pub source_hash: u64,
    /// The file's top level was found, when it was checked, to read and write no global and to return a handler
    /// that captures no local ([`super::vm::Vm::check_loads`]): running it again would make the same handler in the
    /// same environment, so a VM makes it once per copy of the chunk and keeps it. Off until checked.
    pub handler_kept: AtomicBool,
    /// A request of this file's handler read `req.body`: later requests get a small body as a field from the start
    /// (`vm::EAGER_BODY_BYTES`), since making it on first read costs more. Off until a handler reads one, so a
    /// handler that never does (one that only calls `req:json()`, say) pays nothing for it.
    pub reads_body: Arc<AtomicBool>,
}

/// Every compiled file, by name.
pub type FunctionSet = BTreeMap<String, Arc<Compiled>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The display prefix: the folder's own name, as users see it beside config.toml.
pub fn display_prefix(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| "functions".to_owned(), |n| n.to_string_lossy().into_owned())
}

pub use crate::config::TEST_SUFFIX;

/// Every handler file under `dir`: `.lua` files, not tests, by name (hidden files and folders skipped). An absent
/// folder has none.
pub fn scan(dir: &Path) -> Result<BTreeMap<String, PathBuf>, LoadError> {
    scan_where(dir, |name| !name.ends_with(TEST_SUFFIX))
}

/// Every `*_test.lua` file under `dir`, by name.
pub fn scan_tests(dir: &Path) -> Result<BTreeMap<String, PathBuf>, LoadError> {
    scan_where(dir, |name| name.ends_with(TEST_SUFFIX))
}

fn scan_where(dir: &Path, wanted: fn(&str) -> bool) -> Result<BTreeMap<String, PathBuf>, LoadError> {
    let mut found = BTreeMap::new();
    if dir.is_dir() {
        walk(dir, dir, wanted, &mut found)?;
    }
    Ok(found)
}

fn walk(
    root: &Path,
    dir: &Path,
    wanted: fn(&str) -> bool,
    found: &mut BTreeMap<String, PathBuf>,
) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Symlinked folders are not followed (a link to a parent would loop); symlinked files are.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            walk(root, &path, wanted, found)?;
        } else if path.extension().is_some_and(|e| e == "lua") && path.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if wanted(&name) {
                found.insert(name, path);
            }
        }
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn hash(source: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    hasher.finish()
}

/// Compiles one file's source; a syntax error names the file and line.
pub fn compile(name: &str, display: &str, source: &[u8]) -> Result<Compiled, LoadError> {
    // Level 2 also inlines local functions and unrolls loops; its one assumption, that the standard library is
    // not changed, holds because the globals are frozen.
    let bytecode = mlua::chunk::Compiler::new()
        .set_optimization_level(2)
        .compile(source)
        .map_err(|e| LoadError::Compile {
            file: display.to_owned(),
            message: syntax_message(display, &e),
        })?;
    let name = Arc::<str>::from(name);
    Ok(Compiled {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        requests: Arc::new(FunctionRequests::new(Arc::clone(&name))),
        name,
        display: Arc::from(display),
        bytecode,
        source_hash: hash(source),
        handler_kept: AtomicBool::new(false),
        reads_body: Arc::new(AtomicBool::new(false)),
    })
}

/// Luau reports `<line>: <problem>`; users want `<file>:<line>: <problem>`.
fn syntax_message(display: &str, error: &mlua::Error) -> String {
    let message = match error {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let message = message.trim().trim_start_matches(':');
    if message.starts_with(|c: char| c.is_ascii_digit()) {
        format!("{display}:{message}")
    } else {
        format!("{display}: {message}")
    }
}

/// Compiles every file under `dir`; all syntax errors are reported, not just the first.
/// Every function under `dir` that compiles, and the error of each that does not.
pub fn compile_all(dir: &Path) -> (FunctionSet, Vec<LoadError>) {
    let prefix = display_prefix(dir);
    let files = match scan(dir) {
        Ok(files) => files,
        Err(e) => return (FunctionSet::new(), vec![e]),
    };
    let mut set = FunctionSet::new();
    let mut errors = Vec::new();
    for (name, path) in files {
        let display = format!("{prefix}/{name}");
        match read(&path).and_then(|source| compile(&name, &display, &source)) {
            Ok(compiled) => {
                set.insert(name, Arc::new(compiled));
            }
            Err(e) => errors.push(e),
        }
    }
    (set, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_file_and_line() {
        let error = compile("x.lua", "functions/x.lua", b"return function(req)\n  local = 1\nend").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("functions/x.lua:2:"), "{text}");
    }

    #[test]
    fn valid_files_compile_with_unique_ids() {
        let a = compile("a.lua", "functions/a.lua", b"return function() return 'a' end").unwrap();
        let b = compile("a.lua", "functions/a.lua", b"return function() return 'a' end").unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.source_hash, b.source_hash);
        assert!(!a.bytecode.is_empty());
    }
}
