//! The edge functions' config, `[lua]` and `[[routes]]`: takes the raw tables, gives the checked [`LuaSettings`]
//! (where the handler files are, the limits they run under) and [`Route`]s.
//!
//! A route path is literal segments and `{name}` parameter segments; a route names a handler file inside the
//! functions folder. Paths luka serves itself (`/produce...`, `/healthz`, `/readyz`) cannot be taken by a route.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::problem::Checker;
use super::raw::{LuaConfig, RawRoute, ServerConfig};

/// How a test file's name ends: `luka test` runs such files, luka never serves them.
pub const TEST_SUFFIX: &str = "_test.lua";

/// Methods a route may list.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Checked `[lua]` settings.
#[derive(Debug, Clone)]
pub struct LuaSettings {
    /// Absolute path of the functions folder.
    pub functions_dir: PathBuf,
    /// Absolute path of the folder `luka test` looks for `*_test.lua` files in.
    pub tests_dir: PathBuf,
    pub cpu: Duration,
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Number of VMs; `0`: one per worker thread of the runtime that starts them.
    pub vms: usize,
    pub watch: bool,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: RoutePath,
    /// Handler file relative to the functions folder, with `/` separators (`hooks/github.lua`).
    pub function: String,
    /// Upper-case methods; empty serves every method.
    pub methods: Vec<String>,
    pub auth: bool,
    /// Repeats with the same `Idempotency-Key` replay the first successful answer.
    pub idempotency: bool,
    pub env: BTreeMap<String, String>,
    /// Requests per second the route's function serves, all callers together.
    pub requests_per_second: Option<u32>,
    /// Records per second the route's function writes with `kafka.produce`, all callers together.
    pub records_per_second: Option<u32>,
    pub burst_seconds: u32,
}

impl Route {
    pub fn allows(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A route path such as `/orders/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    text: String,
    segments: Vec<Segment>,
}

impl RoutePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("route path '{text}' must start with '/'"));
        };
        let mut segments = Vec::new();
        let mut names = Vec::new();
        for part in rest.split('/').filter(|p| !p.is_empty()) {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "route path '{text}': parameter '{{{name}}}' must be letters, digits and _"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("route path '{text}': parameter '{{{name}}}' appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "route path '{text}': a parameter must be a whole segment, like /orders/{{id}}"
                ));
            } else {
                segments.push(Segment::Literal(part.to_owned()));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parameters, when `path` matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        // Walked as it is split, with nothing allocated: every request tries the routes in turn.
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let mut params = Vec::new();
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    let value = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
                    params.push((name.clone(), value.into_owned()));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }

    /// Number of parameter segments: fewer means more specific.
    pub fn param_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Param(_))).count()
    }

    /// Whether the route is a path luka serves itself, where it could never be reached.
    fn shadows_builtin(&self) -> bool {
        if self.param_count() == 0 {
            return is_builtin_path(self.as_str());
        }
        matches!(self.segments.first(), Some(Segment::Literal(s)) if BUILTIN_FOLDERS.contains(&s.as_str()))
    }
}

/// Paths luka answers itself before any function: these exactly...
pub const BUILTIN_EXACT: [&str; 6] = ["/healthz", "/readyz", "/metrics", "/webhook", "/topics", "/fetch"];

/// ...and every path in these folders (`/produce` and `/produce/...`).
pub const BUILTIN_FOLDERS: [&str; 7] = [
    "produce",
    "offsets",
    "consume",
    "commit",
    "committed",
    "consumers",
    "delete-consumer",
];

/// Whether luka answers `path` itself, so no function can be served there.
pub fn is_builtin_path(path: &str) -> bool {
    BUILTIN_EXACT.contains(&path)
        || BUILTIN_FOLDERS.iter().any(|folder| {
            path.strip_prefix('/')
                .and_then(|p| p.strip_prefix(folder))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// The most Lua VMs a config may ask for.
const MAX_VMS: usize = 1024;

pub(super) fn check_lua(c: &mut Checker<'_>, lua: &LuaConfig, server: &ServerConfig, base_dir: &Path) -> LuaSettings {
    let functions_dir = base_dir.join(lua.functions.as_deref().unwrap_or(Path::new(defaults::FUNCTIONS_DIR)));
    if lua.functions.is_some() && !functions_dir.is_dir() {
        c.general(format!(
            "[lua] functions folder '{}' does not exist; create it or point `functions` at your handlers",
            functions_dir.display()
        ));
    }
    let tests_dir = lua
        .tests
        .as_deref()
        .map_or_else(|| functions_dir.clone(), |tests| base_dir.join(tests));
    // A missing tests folder is `luka test`'s to report: a deployment without its tests still serves.
    if lua.cpu_ms == 0 || lua.timeout_ms == 0 || lua.memory_mb == 0 {
        c.general("[lua] cpu_ms, timeout_ms and memory_mb must be greater than 0");
    }
    // Each VM is made at startup and looked over for a free one per request: a handful per core is plenty.
    if lua.vms > MAX_VMS {
        c.general(format!(
            "[lua] vms must be at most {MAX_VMS} (0: one per worker thread)"
        ));
    }
    if lua.timeout_ms > server.request_timeout_ms {
        c.general(format!(
            "[lua] timeout_ms ({}) is above [server] request_timeout_ms ({}); lower it so handlers stop first",
            lua.timeout_ms, server.request_timeout_ms
        ));
    }
    LuaSettings {
        functions_dir,
        tests_dir,
        cpu: Duration::from_millis(lua.cpu_ms),
        timeout: Duration::from_millis(lua.timeout_ms),
        memory_bytes: lua.memory_mb.saturating_mul(1024 * 1024),
        vms: lua.vms,
        watch: lua.watch,
    }
}

pub(super) fn check_routes(c: &mut Checker<'_>, raw: &[RawRoute], functions_dir: &Path, has_users: bool) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for route in raw {
        let path = match RoutePath::parse(route.path.get_ref()) {
            Ok(path) => path,
            Err(e) => {
                c.at(&route.path, format!("[[routes]] {e}"));
                continue;
            }
        };
        if path.shadows_builtin() {
            c.at(
                &route.path,
                format!(
                    "[[routes]] path '{}' is one luka serves itself (/produce, /healthz, /readyz, /metrics, /webhook, /topics, /offsets, /fetch, the consumer-group paths) and could never be reached; choose another path",
                    path.as_str()
                ),
            );
        }
        let function = route.function.get_ref().replace('\\', "/");
        if !is_inside(&function) || !function.ends_with(".lua") {
            c.at(
                &route.function,
                format!(
                    "[[routes]] function '{function}' must be a .lua file inside the functions folder, named as it \
                     is there (like 'hooks/github.lua': no leading '/', no '//', '.' or '..', no hidden folder or file)"
                ),
            );
        } else if function.ends_with(TEST_SUFFIX) {
            c.at(
                &route.function,
                format!(
                    "[[routes]] function '{function}' is a test file (run by `luka test`, never served); rename it"
                ),
            );
        } else if !functions_dir.join(&function).is_file() {
            c.at(
                &route.function,
                format!(
                    "[[routes]] function '{function}' not found in {}",
                    functions_dir.display()
                ),
            );
        }
        let mut methods = Vec::new();
        for method in &route.methods {
            let upper = method.get_ref().to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                methods.push(upper);
            } else {
                c.at(
                    method,
                    format!(
                        "[[routes]] method '{}' is not one of {}",
                        method.get_ref(),
                        METHODS.join(", ")
                    ),
                );
            }
        }
        if route.auth && !has_users {
            c.at(
                &route.path,
                "[[routes]] auth = true needs at least one [[users]] entry to check credentials against",
            );
        }
        c.positive_limits(
            &route.path,
            "[[routes]]",
            [
                (route.requests_per_second, "requests_per_second"),
                (route.records_per_second, "records_per_second"),
                (route.burst_seconds, "burst_seconds"),
            ],
        );
        let checked = Route {
            path,
            function,
            methods,
            auth: route.auth,
            idempotency: route.idempotency,
            env: route.env.clone(),
            requests_per_second: route.requests_per_second,
            records_per_second: route.records_per_second,
            burst_seconds: route.burst_seconds.unwrap_or(super::defaults::BURST_SECONDS),
        };
        let overlap = routes.iter().find(|r| {
            r.path == checked.path
                && (r.methods.is_empty()
                    || checked.methods.is_empty()
                    || r.methods.iter().any(|m| checked.methods.contains(m)))
        });
        if let Some(other) = overlap {
            c.at(
                &route.path,
                format!(
                    "[[routes]] path '{}' is already routed to '{}' for the same methods",
                    other.path.as_str(),
                    other.function
                ),
            );
        }
        routes.push(checked);
    }
    routes
}

/// Whether `relative` names a file inside the functions folder as luka names its files: segments joined by single
/// `/`, none empty, `.`, `..` or hidden (which the folder's scan skips). The file system would find `hooks//github.lua`
/// or `hooks/./github.lua`, but no function has that name: the route would serve nothing, and the file would be served
/// at its own path, without the route's `auth`.
fn is_inside(relative: &str) -> bool {
    relative
        .split('/')
        .all(|segment| !segment.is_empty() && !segment.starts_with('.'))
        && Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_literals_and_parameters() {
        let path = RoutePath::parse("/orders/{id}/items/{item}").unwrap();
        assert_eq!(
            path.matches("/orders/42/items/a%20b"),
            Some(vec![("id".into(), "42".into()), ("item".into(), "a b".into())])
        );
        assert_eq!(path.matches("/orders/42/things/1"), None);
        assert_eq!(path.matches("/orders/42"), None);
        assert_eq!(path.matches("/orders/42/items/1/more"), None);
        assert_eq!(
            path.matches("//orders//42/items/1/"),
            Some(vec![("id".into(), "42".into()), ("item".into(), "1".into())])
        );
        assert_eq!(RoutePath::parse("/").unwrap().matches("/"), Some(vec![]));
        assert_eq!(RoutePath::parse("/").unwrap().matches("/x"), None);
    }

    #[test]
    fn bad_paths_say_why() {
        assert!(RoutePath::parse("orders").unwrap_err().contains("start with '/'"));
        assert!(RoutePath::parse("/o/{id}x").unwrap_err().contains("whole segment"));
        assert!(RoutePath::parse("/o/{a}/{a}").unwrap_err().contains("twice"));
        assert!(RoutePath::parse("/o/{a-b}").unwrap_err().contains("letters"));
    }

    #[test]
    fn builtin_paths_are_protected() {
        assert!(RoutePath::parse("/produce/{topic}").unwrap().shadows_builtin());
        assert!(RoutePath::parse("/healthz").unwrap().shadows_builtin());
        assert!(!RoutePath::parse("/{any}").unwrap().shadows_builtin());
        assert!(!RoutePath::parse("/hooks/{name}").unwrap().shadows_builtin());
    }
}
