//! Which function serves a request: a method and path in, a [`Target`] (function, path parameters, auth, env) out.
//!
//! Explicit `[[routes]]` come first, most specific (fewest parameters) first; then file routes:
//! `functions/hooks/github.lua` serves `/hooks/github` and `index.lua` serves its folder (`/` at the top). A file
//! that an explicit route names is served only through its routes, so `auth = true` on a route cannot be walked
//! around through the file's own path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::compile::{Compiled, FunctionSet};
use crate::config::Route;

/// A function chosen for a request.
#[derive(Debug, Clone)]
pub struct Target {
    pub function: Arc<Compiled>,
    pub params: Vec<(String, String)>,
    pub auth: bool,
    /// The route honours `Idempotency-Key`.
    pub idempotency: bool,
    pub env: Arc<BTreeMap<String, String>>,
    /// The `[[routes]]` entry that chose the function (its place in the config), whose rate limits the request
    /// counts against; none for a file's own path.
    pub route: Option<usize>,
}

#[derive(Debug)]
pub enum Found {
    Target(Target),
    /// The path has routes, none for this method; `allowed` lists those that are.
    MethodNotAllowed {
        allowed: String,
    },
    NotFound,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Most specific first.
    explicit: Vec<Explicit>,
    /// Request path → function.
    files: HashMap<String, Arc<Compiled>>,
    functions: FunctionSet,
    /// Files that could never be reached (two on one path, or on a path luka serves itself), and routes whose file
    /// is not among the functions.
    problems: Vec<String>,
    /// The files of those problems, by name: both of two on one path.
    clashing: BTreeSet<String>,
    /// The `env` of every file route: none.
    no_env: Arc<BTreeMap<String, String>>,
}

/// A `[[routes]]` entry with what it serves, looked up once when the table is made (a table is never changed:
/// a reload makes a new one).
#[derive(Debug)]
struct Explicit {
    route: Route,
    /// The entry's place in the config.
    index: usize,
    env: Arc<BTreeMap<String, String>>,
    /// None: the file is not among the functions (deleted while serving, or behind a symlinked folder); the route
    /// then serves nothing.
    function: Option<Arc<Compiled>>,
}

impl RouteTable {
    pub fn new(routes: &[Route], functions: FunctionSet) -> Self {
        let mut explicit: Vec<Explicit> = routes
            .iter()
            .enumerate()
            .map(|(index, route)| Explicit {
                route: route.clone(),
                index,
                env: Arc::new(route.env.clone()),
                function: functions.get(&route.function).cloned(),
            })
            .collect();
        explicit.sort_by_key(|e| e.route.path.param_count());
        let routed: BTreeSet<&str> = routes.iter().map(|r| r.function.as_str()).collect();
        let mut files: HashMap<String, Arc<Compiled>> = HashMap::new();
        // A route whose file is not among the functions (a file behind a symlinked folder, which the scan does not
        // follow, or one deleted since the config was checked) serves nothing.
        let mut problems: Vec<String> = explicit
            .iter()
            .filter(|e| e.function.is_none())
            .map(|e| {
                format!(
                    "[[routes]] path '{}' names {}, which is not among the functions (symlinked folders are not \
                     read); the route serves nothing",
                    e.route.path.as_str(),
                    e.route.function
                )
            })
            .collect();
        let mut clashing = BTreeSet::new();
        for (name, compiled) in functions.iter().filter(|(name, _)| !routed.contains(name.as_str())) {
            let path = file_path(name);
            if is_builtin(&path) {
                problems.push(format!(
                    "{} would serve {path}, which luka serves itself; rename it",
                    compiled.display
                ));
                clashing.insert(name.clone());
            } else if let Some(other) = files.insert(path.clone(), Arc::clone(compiled)) {
                problems.push(format!(
                    "{} and {} both serve {path}; rename one",
                    other.display, compiled.display
                ));
                clashing.extend([other.name.to_string(), name.clone()]);
            }
        }
        Self {
            explicit,
            files,
            functions,
            problems,
            clashing,
            no_env: Arc::default(),
        }
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The files of the [`RouteTable::problems`] of paths: two on one path (both), or one on a path luka serves.
    pub fn clashing(&self) -> impl Iterator<Item = &str> {
        self.clashing.iter().map(String::as_str)
    }

    pub fn functions(&self) -> &FunctionSet {
        &self.functions
    }

    pub fn find(&self, method: &str, path: &str) -> Found {
        let mut allowed: Vec<&str> = Vec::new();
        for Explicit {
            route,
            index,
            env,
            function,
        } in &self.explicit
        {
            let Some(params) = route.path.matches(path) else {
                continue;
            };
            let Some(function) = function else {
                continue; // The file was deleted while serving.
            };
            if route.allows(method) {
                return Found::Target(Target {
                    function: Arc::clone(function),
                    params,
                    auth: route.auth,
                    idempotency: route.idempotency,
                    env: Arc::clone(env),
                    route: Some(*index),
                });
            }
            allowed.extend(route.methods.iter().map(String::as_str));
        }
        let normalized = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        if let Some(function) = self.files.get(normalized) {
            return Found::Target(Target {
                function: Arc::clone(function),
                params: Vec::new(),
                auth: false,
                idempotency: false,
                env: Arc::clone(&self.no_env),
                route: None,
            });
        }
        if allowed.is_empty() {
            Found::NotFound
        } else {
            allowed.sort_unstable();
            allowed.dedup();
            Found::MethodNotAllowed {
                allowed: allowed.join(", "),
            }
        }
    }
}

fn is_builtin(path: &str) -> bool {
    crate::config::is_builtin_path(path)
}

/// `hooks/github.lua` → `/hooks/github`; `index.lua` → `/`; `hooks/index.lua` → `/hooks`.
fn file_path(name: &str) -> String {
    let stem = name.strip_suffix(".lua").unwrap_or(name);
    let stem = match stem.strip_suffix("index") {
        Some(folder) if folder.is_empty() || folder.ends_with('/') => folder.trim_end_matches('/'),
        _ => stem,
    };
    format!("/{stem}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutePath;
    use crate::lua::compile::compile;

    fn set(names: &[&str]) -> FunctionSet {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Arc::new(compile(n, n, b"return function() end").unwrap()),
                )
            })
            .collect()
    }

    fn route(path: &str, function: &str, methods: &[&str]) -> Route {
        Route {
            path: RoutePath::parse(path).unwrap(),
            function: function.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            auth: false,
            idempotency: false,
            env: BTreeMap::new(),
            requests_per_second: None,
            records_per_second: None,
            burst_seconds: 1,
        }
    }

    fn name(found: Found) -> String {
        match found {
            Found::Target(t) => t.function.name.to_string(),
            Found::MethodNotAllowed { allowed } => format!("405 {allowed}"),
            Found::NotFound => "404".into(),
        }
    }

    #[test]
    fn files_map_to_paths() {
        assert_eq!(file_path("hooks/github.lua"), "/hooks/github");
        assert_eq!(file_path("index.lua"), "/");
        assert_eq!(file_path("hooks/index.lua"), "/hooks");
        assert_eq!(file_path("reindex.lua"), "/reindex");
        let table = RouteTable::new(&[], set(&["index.lua", "hooks/github.lua"]));
        assert_eq!(name(table.find("POST", "/hooks/github/")), "hooks/github.lua");
        assert_eq!(name(table.find("GET", "/")), "index.lua");
        assert_eq!(name(table.find("GET", "/nope")), "404");
        assert!(table.problems().is_empty());
        let clashing = RouteTable::new(&[], set(&["hooks.lua", "hooks/index.lua", "healthz.lua"]));
        assert_eq!(clashing.problems().len(), 2, "{:?}", clashing.problems());
    }

    #[test]
    fn explicit_routes_win_and_hide_their_file() {
        let routes = [
            route("/orders/{id}", "orders.lua", &["GET"]),
            route("/orders/new", "new.lua", &["POST"]),
        ];
        let table = RouteTable::new(&routes, set(&["orders.lua", "new.lua", "other.lua"]));
        assert_eq!(name(table.find("GET", "/orders/7")), "orders.lua");
        assert_eq!(name(table.find("POST", "/orders/new")), "new.lua");
        assert_eq!(name(table.find("DELETE", "/orders/7")), "405 GET");
        assert_eq!(name(table.find("GET", "/orders")), "404");
        assert_eq!(name(table.find("GET", "/new")), "404");
        assert_eq!(name(table.find("GET", "/other")), "other.lua");
    }
}
