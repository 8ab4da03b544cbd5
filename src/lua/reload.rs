//! Reload on change: file events under the functions folder in, a new route table out.
//!
//! Events are gathered for a short quiet period (editors write a file in several steps), then the folder is
//! scanned again. A file whose source changed is compiled and loaded once; if that fails, the previous version keeps
//! serving and the error is logged. New files start serving, deleted files stop. The folder's parent is watched for
//! the folder itself: one replaced while serving (removed and written again, or a symlink to a release folder
//! swapped), or absent at startup and made later, is watched from then on.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::compile::{self, FunctionSet};
use super::routes::RouteTable;
use super::vm::Vm;
use super::{Functions, LoadError, limits};

/// Quiet time after the last event before reloading: editors save in several writes (temp file, rename).
const SETTLE: Duration = Duration::from_millis(150);

pub fn watch(functions: &Arc<Functions>) -> Result<notify::RecommendedWatcher, LoadError> {
    let configured = &functions.config.lua.functions_dir;
    // Absolute without resolving symlinks: the folder may be a link to a release folder, swapped at deploys.
    let dir = std::path::absolute(configured).unwrap_or_else(|_| configured.clone());
    let (events, mut received) = mpsc::unbounded_channel();
    let ours = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // The parent folder is watched only for the functions folder's own entry: made, removed or renamed, the
        // folder was replaced (or the link to it swapped). Events of the parent's other entries are not ours. No
        // path: the system lost events (a rescan), so anything may have happened.
        let entry_changed = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
        );
        let replaced = event.paths.is_empty() || (entry_changed && event.paths.contains(&ours));
        if replaced || event.paths.iter().any(|p| p.starts_with(&ours)) {
            let _ = events.send(replaced);
        }
    })
    .map_err(|e| watch_error(&dir, &e))?;
    // Without it (a parent that does not exist, or cannot be read) the folder is still watched, as it is now.
    if let Some(parent) = dir.parent()
        && let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive)
    {
        tracing::warn!(folder = %parent.display(), error = %e, "cannot watch the functions folder's parent; a functions folder replaced while serving will not be seen");
    }
    if dir.is_dir() {
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| watch_error(&dir, &e))?;
    }
    let weak: Weak<Functions> = Arc::downgrade(functions);
    tokio::spawn(async move {
        while let Some(mut replaced) = received.recv().await {
            // Wait until events stop arriving, then reload once.
            while let Ok(Some(also_replaced)) = tokio::time::timeout(SETTLE, received.recv()).await {
                replaced |= also_replaced;
            }
            let Some(functions) = weak.upgrade() else { break };
            let dir = dir.clone();
            // Compiling and running top-level code, and watching a folder (notify walks it), is blocking work: keep
            // it off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                // Before the scan: files written into the new folder after it are seen by the new watch.
                if replaced {
                    watch_again(&functions, &dir);
                }
                // Gone for a moment, as while a deploy writes it again: nothing to reload from.
                if !dir.is_dir() {
                    tracing::warn!(folder = %dir.display(), "the functions folder is gone; the functions loaded keep serving until it is back");
                    return;
                }
                reload(&functions);
            })
            .await;
        }
    });
    // Events flow only while `watcher` is alive; the caller keeps it.
    Ok(watcher)
}

fn watch_error(path: &std::path::Path, e: &notify::Error) -> LoadError {
    LoadError::Watch {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The functions folder was replaced (or the link to it swapped, or it is gone): the folder now at `dir`, if any, is
/// watched instead of the one that was there (a watch follows the folder it was made on, wherever it goes; a folder
/// gone is watched again on the parent's event when it is back).
fn watch_again(functions: &Functions, dir: &std::path::Path) {
    let mut watcher = functions.watcher.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(watcher) = watcher.as_mut() else { return };
    // Not found when the old folder's watch ended with it.
    let _ = watcher.unwatch(dir);
    if dir.is_dir() {
        match watcher.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => {
                tracing::info!(folder = %dir.display(), "the functions folder was replaced; watching the new one")
            }
            Err(e) => {
                tracing::error!(folder = %dir.display(), error = %e, "cannot watch the new functions folder; its edits are not reloaded")
            }
        }
    }
}

/// Scans the folder again and swaps in the new table; broken edits keep their previous version.
pub fn reload(functions: &Functions) {
    let config = &functions.config;
    let dir = &config.lua.functions_dir;
    let files = match compile::scan(dir) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(error = %e, "cannot reload functions; the current ones keep serving");
            return;
        }
    };
    let current = functions.table();
    let mut checker: Option<Vm> = None;
    let prefix = compile::display_prefix(dir);
    let mut next = FunctionSet::new();
    for (name, path) in files {
        let previous = current.functions().get(&name);
        let source = match compile::read(&path) {
            Ok(source) => source,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a changed function; keeping its previous version");
                next.extend(previous.map(|p| (name.clone(), Arc::clone(p))));
                continue;
            }
        };
        if let Some(previous) = previous.filter(|p| p.source_hash == compile::hash(&source)) {
            next.insert(name, Arc::clone(previous));
            continue;
        }
        let label = format!("{prefix}/{name}");
        let checked = compile::compile(&name, &label, &source).and_then(|compiled| {
            let vm = match &mut checker {
                Some(vm) => vm,
                None => checker.insert(
                    Vm::new(&functions.context, limits(config)).map_err(|e| LoadError::Setup {
                        function: label.clone(),
                        message: e.to_string(),
                    })?,
                ),
            };
            vm.check_loads(&compiled).map(|()| compiled)
        });
        match (checked, previous) {
            (Ok(compiled), _) => {
                tracing::info!(function = %label, "loaded");
                next.insert(name, Arc::new(compiled));
            }
            (Err(e), Some(previous)) => {
                tracing::error!(function = %label, error = %e, "the edit does not load; the previous version keeps serving");
                next.insert(name, Arc::clone(previous));
            }
            (Err(e), None) => {
                tracing::error!(function = %label, error = %e, "the new file does not load; not serving it")
            }
        }
    }
    for name in current.functions().keys().filter(|n| !next.contains_key(*n)) {
        tracing::info!(function = %format!("{prefix}/{name}"), "removed");
    }
    let mut table = RouteTable::new(&config.routes, next.clone());
    // A new file on a path another function serves (or luka itself) is not served: the same files would stop
    // startup, and while serving, the path keeps the function it has (which one won went by their names). Two new
    // files on one path are both left out.
    let newcomers: Vec<String> = table
        .clashing()
        .filter(|name| !current.functions().contains_key(*name))
        .map(str::to_owned)
        .collect();
    if !newcomers.is_empty() {
        for name in &newcomers {
            tracing::error!(function = %format!("{prefix}/{name}"), "the new file shares its path with another function (or luka's own); not serving it");
            next.remove(name);
        }
        table = RouteTable::new(&config.routes, next);
    }
    for problem in table.problems() {
        tracing::error!("{problem}");
    }
    let table = Arc::new(table);
    *functions.table.write().unwrap_or_else(PoisonError::into_inner) = table;
}
