//! Whole-config checks: takes the parsed [`RawConfig`], gives the [`Config`] the rest of luka uses, or every
//! problem found (undefined clusters, bad patterns, conflicting defaults, missing files), each with its line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::functions::{LuaSettings, Route, check_lua, check_routes};
use super::pattern::TopicPattern;
use super::problem::{Checker, ConfigProblem};
use super::types::{
    Compression, ContentType, RawCluster, RawConfig, RawTopic, RawUser, SaslConfig, ServerConfig, TlsConfig,
};
use crate::schema::{AvroCodec, Schema};

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsSettings,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Most specific first: exact names, then patterns by literal length.
    pub topics: Vec<Topic>,
    pub users: Vec<User>,
    pub lua: LuaSettings,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub compression: Compression,
    pub linger: Duration,
    pub produce_timeout: Duration,
    pub max_batch_bytes: usize,
    pub max_batch_records: usize,
    pub max_in_flight: usize,
    pub metadata_max_age: Duration,
    /// Listen address of the in-process development broker, when `embedded = true`.
    pub embedded: Option<SocketAddr>,
    pub sasl: Option<SaslConfig>,
    /// With file paths made absolute.
    pub tls: Option<TlsConfig>,
    /// Topics to create when missing, with their partition count and replication factor.
    pub create_topics: Vec<(String, i32, i16)>,
}

#[derive(Debug, Clone)]
pub struct Topic {
    pub pattern: TopicPattern,
    pub cluster: String,
    pub partitions: Option<i32>,
    pub replication_factor: i16,
    pub value_schema: Option<Arc<Schema>>,
    pub key_schema: Option<Arc<Schema>>,
    /// REST values are checked against `value_schema`.
    pub validate: bool,
    pub content_type: ContentType,
    /// The codec of `avro/binary` topics.
    pub avro: Option<Arc<AvroCodec>>,
    /// Chance that a generated object has each optional property.
    pub optional_probability: f64,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub topics: Vec<TopicPattern>,
    pub read_topics: Vec<TopicPattern>,
}

/// The checked `[metrics]` section.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// The only user whose credentials open `/metrics`; `None`: open to anyone who can reach the server.
    pub user: Option<String>,
}

impl User {
    pub fn may_write(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches(topic))
    }

    pub fn may_read(&self, topic: &str) -> bool {
        self.read_topics.iter().any(|p| p.matches(topic))
    }
}

pub(super) fn check(raw: RawConfig, text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigProblem>> {
    let mut c = Checker::new(text);
    check_server(&mut c, &raw.server);
    let default_cluster = default_cluster(&mut c, &raw.clusters);
    let topics = check_topics(&mut c, &raw.topics, &raw.clusters, default_cluster.as_deref(), base_dir);
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &raw.clusters {
        if let Some(checked) = check_cluster(&mut c, name, cluster, base_dir, &topics) {
            clusters.insert(name.get_ref().clone(), Arc::new(checked));
        }
    }
    let users = check_users(&mut c, raw.users);
    let lua = check_lua(&mut c, &raw.lua, &raw.server, base_dir);
    let routes = check_routes(&mut c, &raw.routes, &lua.functions_dir, !users.is_empty());
    let metrics = MetricsSettings {
        enabled: raw.metrics.enabled,
        user: raw.metrics.user.map(|user| {
            if !users.iter().any(|u| &u.name == user.get_ref()) {
                c.at(
                    &user,
                    format!("[metrics] user '{}' is not a [[users]] name", user.get_ref()),
                );
            }
            user.into_inner()
        }),
    };
    c.finish(Config {
        server: raw.server,
        metrics,
        clusters,
        topics,
        users,
        lua,
        routes,
    })
}

fn check_server(c: &mut Checker<'_>, server: &ServerConfig) {
    for (value, key) in [
        (server.max_body_bytes as u64, "max_body_bytes"),
        (server.request_timeout_ms, "request_timeout_ms"),
        (server.max_connections as u64, "max_connections"),
        (server.max_connections_per_address as u64, "max_connections_per_address"),
        (server.body_timeout_ms, "body_timeout_ms"),
        (server.fetch_max_records as u64, "fetch_max_records"),
        (server.idempotency_capacity as u64, "idempotency_capacity"),
        (server.fetch_max_bytes as u64, "fetch_max_bytes"),
    ] {
        if value == 0 {
            c.general(format!("[server] {key} must be greater than 0"));
        }
    }
}

fn default_cluster(c: &mut Checker<'_>, clusters: &BTreeMap<Spanned<String>, RawCluster>) -> Option<String> {
    let defaults: Vec<&Spanned<String>> = clusters.iter().filter(|(_, v)| v.default).map(|(k, _)| k).collect();
    match defaults.as_slice() {
        [] if clusters.len() == 1 => clusters.keys().next().map(|k| k.get_ref().clone()),
        [] => None,
        [one] => Some(one.get_ref().clone()),
        [first, rest @ ..] => {
            let others: Vec<&str> = rest.iter().map(|k| k.get_ref().as_str()).collect();
            c.at(
                first,
                format!(
                    "more than one cluster has default = true ({} and {}); keep it on one",
                    first.get_ref(),
                    others.join(", ")
                ),
            );
            None
        }
    }
}

fn check_topics(
    c: &mut Checker<'_>,
    raw: &BTreeMap<Spanned<String>, RawTopic>,
    clusters: &BTreeMap<Spanned<String>, RawCluster>,
    default_cluster: Option<&str>,
    base_dir: &Path,
) -> Vec<Topic> {
    let defined: Vec<&str> = clusters.keys().map(|k| k.get_ref().as_str()).collect();
    let mut topics = Vec::new();
    for (name, topic) in raw {
        let pattern = match TopicPattern::parse(name.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                c.at(name, format!("[topics.\"{}\"]: {e}", name.get_ref()));
                continue;
            }
        };
        let cluster = match (&topic.cluster, default_cluster) {
            (Some(cluster), _) if !defined.contains(&cluster.get_ref().as_str()) => {
                c.at(cluster, format!(
                    "[topics.\"{}\"] names cluster '{}', which is not defined; define [clusters.{}] or use one of: {}",
                    name.get_ref(),
                    cluster.get_ref(),
                    cluster.get_ref(),
                    list_or_none(&defined)
                ));
                continue;
            }
            (Some(cluster), _) => cluster.get_ref().clone(),
            (None, Some(default)) => default.to_owned(),
            (None, None) if defined.is_empty() => {
                c.at(
                    name,
                    format!(
                        "[topics.\"{}\"] needs a cluster, and no [clusters.<name>] is defined",
                        name.get_ref()
                    ),
                );
                continue;
            }
            (None, None) => {
                c.at(
                    name,
                    format!(
                        "[topics.\"{}\"] names no cluster and no cluster is the default; add cluster = \"...\" \
                     here or default = true to one of: {}",
                        name.get_ref(),
                        defined.join(", ")
                    ),
                );
                continue;
            }
        };
        if let Some(partitions) = topic.partitions.filter(|p| *p < 1) {
            c.at(
                name,
                format!(
                    "[topics.\"{}\"] partitions = {partitions}: must be at least 1",
                    name.get_ref()
                ),
            );
        }
        if topic.replication_factor < 1 {
            c.at(
                name,
                format!("[topics.\"{}\"] replication_factor must be at least 1", name.get_ref()),
            );
        }
        let mut schema = |given: &Option<Spanned<toml::Value>>, key: &str| {
            let given = given.as_ref()?;
            compile_schema(given.get_ref(), base_dir)
                .map_err(|e| c.at(given, format!("[topics.\"{}\"] {key}: {e}", name.get_ref())))
                .ok()
                .map(Arc::new)
        };
        let (value_schema, key_schema) = match &topic.imported {
            None => (
                schema(&topic.value_schema, "value_schema"),
                schema(&topic.key_schema, "key_schema"),
            ),
            Some(imported) => {
                let mut compile = |document: &Option<serde_json::Value>, what: &str| {
                    let document = document.clone()?;
                    Schema::compile(document, None)
                        .map_err(|e| {
                            let (file, topic) = (&imported.origin, name.get_ref());
                            c.at(name, format!("asyncapi: {file}: channel '{topic}' {what}: {e}"));
                        })
                        .ok()
                        .map(Arc::new)
                };
                (
                    compile(&imported.value_schema, "payload"),
                    compile(&imported.key_schema, "key"),
                )
            }
        };
        let (content_type, avro) = check_avro(c, name, topic, base_dir);
        if !(0.0..=1.0).contains(&topic.optional_probability) {
            c.at(
                name,
                format!(
                    "[topics.\"{}\"] optional_probability must be between 0 and 1",
                    name.get_ref()
                ),
            );
        }
        if topic.validate && topic.value_schema.is_none() {
            c.at(
                name,
                format!(
                    "[topics.\"{}\"] validate = true needs a value_schema to check against",
                    name.get_ref()
                ),
            );
        }
        topics.push(Topic {
            pattern,
            cluster,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            value_schema,
            key_schema,
            validate: topic.validate,
            content_type,
            avro,
            optional_probability: topic.optional_probability,
        });
    }
    // Exact names first, then the most literal pattern: that is the order routing tries them in.
    topics.sort_by_key(|t| (!t.pattern.is_exact(), std::cmp::Reverse(t.pattern.specificity())));
    topics
}

/// The topic's content type, and its Avro codec when the type is `avro/binary` (which needs an `avro_schema`).
fn check_avro(
    c: &mut Checker<'_>,
    name: &Spanned<String>,
    topic: &RawTopic,
    base_dir: &Path,
) -> (ContentType, Option<Arc<AvroCodec>>) {
    let content_type = topic.content_type.unwrap_or(if topic.avro_schema.is_some() {
        ContentType::Avro
    } else {
        ContentType::Json
    });
    let t = name.get_ref();
    match (&topic.avro_schema, content_type) {
        (Some(given), ContentType::Avro) => {
            let document = schema_document(given.get_ref(), base_dir);
            match document.and_then(|(d, _)| AvroCodec::new(&d, topic.schema_id)) {
                Ok(codec) => (content_type, Some(Arc::new(codec))),
                Err(e) => {
                    c.at(given, format!("[topics.\"{t}\"] avro_schema: {e}"));
                    (content_type, None)
                }
            }
        }
        (None, ContentType::Avro) => {
            c.at(
                name,
                format!("[topics.\"{t}\"] content_type avro/binary needs an avro_schema"),
            );
            (content_type, None)
        }
        (Some(given), other) => {
            c.at(
                given,
                format!(
                    "[topics.\"{t}\"] avro_schema is set but content_type is {}; use avro/binary",
                    other.as_str()
                ),
            );
            (content_type, None)
        }
        (None, _) => {
            if topic.schema_id.is_some() {
                c.at(name, format!("[topics.\"{t}\"] schema_id is for avro/binary topics"));
            }
            (content_type, None)
        }
    }
}

/// A schema given inline (a TOML table, read as JSON) or as a JSON file relative to config.toml.
fn compile_schema(given: &toml::Value, base_dir: &Path) -> Result<Schema, String> {
    let (document, file) = schema_document(given, base_dir)?;
    Schema::compile(document, file.as_deref())
}

/// A schema document (JSON Schema or Avro) given inline as a TOML table, or as a JSON file relative to
/// config.toml; gives the document and, for a file, its path (where its relative references point).
fn schema_document(given: &toml::Value, base_dir: &Path) -> Result<(serde_json::Value, Option<PathBuf>), String> {
    match given {
        toml::Value::String(file) => {
            let path = base_dir.join(file);
            Ok((crate::schema::read_document(&path)?, Some(path)))
        }
        toml::Value::Table(_) => Ok((serde_json::to_value(given).map_err(|e| e.to_string())?, None)),
        other => Err(format!(
            "give a schema as an inline table or a file name, not a {}",
            other.type_str()
        )),
    }
}

fn check_cluster(
    c: &mut Checker<'_>,
    name: &Spanned<String>,
    raw: &RawCluster,
    base_dir: &Path,
    topics: &[Topic],
) -> Option<Cluster> {
    let n = name.get_ref();
    let before = c.found();
    if raw.bootstrap.is_empty() {
        c.at(
            name,
            format!("[clusters.{n}] bootstrap is empty; list at least one \"host:port\""),
        );
    }
    for broker in &raw.bootstrap {
        if !is_host_port(broker) {
            c.at(
                name,
                format!("[clusters.{n}] bootstrap entry '{broker}' is not host:port"),
            );
        }
    }
    for (value, key) in [
        (raw.produce_timeout_ms, "produce_timeout_ms"),
        (raw.max_batch_bytes as u64, "max_batch_bytes"),
        (raw.max_batch_records as u64, "max_batch_records"),
        (raw.max_in_flight as u64, "max_in_flight"),
    ] {
        if value == 0 {
            c.at(name, format!("[clusters.{n}] {key} must be greater than 0"));
        }
    }
    let embedded = if raw.embedded {
        embedded_address(c, name, raw)
    } else {
        None
    };
    let tls = raw.tls.as_ref().map(|tls| resolve_tls(c, name, tls, base_dir));
    if c.found() > before {
        return None;
    }
    let create_topics = topics
        .iter()
        .filter(|t| t.cluster == *n && t.pattern.is_exact())
        .filter_map(|t| {
            t.partitions
                .map(|p| (t.pattern.as_str().to_owned(), p, t.replication_factor))
        })
        .collect();
    Some(Cluster {
        name: n.clone(),
        bootstrap: raw.bootstrap.clone(),
        client_id: raw.client_id.clone(),
        compression: raw.compression,
        linger: Duration::from_millis(raw.linger_ms),
        produce_timeout: Duration::from_millis(raw.produce_timeout_ms),
        max_batch_bytes: raw.max_batch_bytes,
        max_batch_records: raw.max_batch_records,
        max_in_flight: raw.max_in_flight,
        metadata_max_age: Duration::from_millis(raw.metadata_max_age_ms),
        embedded,
        sasl: raw.sasl.clone(),
        tls,
        create_topics,
    })
}

fn embedded_address(c: &mut Checker<'_>, name: &Spanned<String>, raw: &RawCluster) -> Option<SocketAddr> {
    let n = name.get_ref();
    if !cfg!(feature = "embedded-broker") {
        c.at(
            name,
            format!(
                "[clusters.{n}] embedded = true, but this luka was built without the embedded-broker feature; \
             rebuild with default features or point bootstrap at a running broker"
            ),
        );
        return None;
    }
    match raw.bootstrap.as_slice() {
        [one] => match one.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.at(
                    name,
                    format!("[clusters.{n}] embedded = true needs bootstrap = [\"IP:PORT\"] to listen on, got '{one}'"),
                );
                None
            }
        },
        _ => {
            c.at(
                name,
                format!("[clusters.{n}] embedded = true needs exactly one bootstrap address to listen on"),
            );
            None
        }
    }
}

fn resolve_tls(c: &mut Checker<'_>, name: &Spanned<String>, tls: &TlsConfig, base_dir: &Path) -> TlsConfig {
    let n = name.get_ref();
    let mut resolve = |key: &str, path: &Option<std::path::PathBuf>| {
        path.as_ref().map(|p| {
            let full = base_dir.join(p);
            if !full.is_file() {
                c.at(
                    name,
                    format!("[clusters.{n}.tls] {key} '{}' does not exist", full.display()),
                );
            }
            full
        })
    };
    let resolved = TlsConfig {
        ca_file: resolve("ca_file", &tls.ca_file),
        cert_file: resolve("cert_file", &tls.cert_file),
        key_file: resolve("key_file", &tls.key_file),
    };
    if resolved.cert_file.is_some() != resolved.key_file.is_some() {
        c.at(
            name,
            format!("[clusters.{n}.tls] cert_file and key_file go together; set both or neither"),
        );
    }
    resolved
}

fn check_users(c: &mut Checker<'_>, raw: Vec<RawUser>) -> Vec<User> {
    let mut seen = BTreeSet::new();
    let mut users = Vec::new();
    for user in raw {
        let name = user.name.get_ref().clone();
        if name.is_empty() || name.contains(':') {
            c.at(
                &user.name,
                format!("[[users]] name '{name}' must be non-empty and contain no ':'"),
            );
        }
        if !seen.insert(name.clone()) {
            c.at(&user.name, format!("[[users]] name '{name}' is defined twice"));
        }
        if user.password.is_empty() {
            c.at(&user.name, format!("[[users]] '{name}' has an empty password"));
        }
        let mut patterns = |list: &[Spanned<String>], key: &str| {
            let mut parsed = Vec::new();
            for topic in list {
                match TopicPattern::parse(topic.get_ref()) {
                    Ok(p) => parsed.push(p),
                    Err(e) => c.at(topic, format!("[[users]] '{name}' {key}: {e}")),
                }
            }
            parsed
        };
        let topics = patterns(&user.topics, "topics");
        let read_topics = patterns(&user.read_topics, "read_topics");
        users.push(User {
            name,
            password: user.password,
            topics,
            read_topics,
        });
    }
    users
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "(none defined)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_toml(text, std::path::Path::new("."), |_| None)
            .map_err(|ps| ps.into_iter().map(|p| p.to_string()).collect())
    }

    const TWO_CLUSTERS: &str = r#"
[clusters.a]
bootstrap = ["127.0.0.1:9092"]
default = true

[clusters.b]
bootstrap = ["127.0.0.1:9093"]

[topics.orders]
[topics."events.*"]
cluster = "b"
[topics."*"]
cluster = "b"
"#;

    #[test]
    fn topics_take_the_default_cluster_and_sort_most_specific_first() {
        let config = load(TWO_CLUSTERS).unwrap();
        let order: Vec<(&str, &str)> = config
            .topics
            .iter()
            .map(|t| (t.pattern.as_str(), t.cluster.as_str()))
            .collect();
        assert_eq!(order, [("orders", "a"), ("events.*", "b"), ("*", "b")]);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let errors = load("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 3:"), "{errors:?}");
        assert!(errors[0].contains("listn"), "{errors:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[clusters.a]
bootstrap = []
default = true

[clusters.b]
bootstrap = ["nohostport"]
default = true

[topics.x]
cluster = "missing"

[topics."bad name"]

[[users]]
name = "u"
password = ""
topics = ["ok", "no/slash"]
"#;
        let errors = load(text).unwrap_err();
        let all = errors.join("\n");
        for expected in [
            "bootstrap is empty",
            "'nohostport' is not host:port",
            "more than one cluster has default = true",
            "names cluster 'missing', which is not defined",
            "'bad name' contains ' '",
            "empty password",
            "'no/slash' contains '/'",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert!(errors.iter().any(|e| e.starts_with("line 11:")), "{all}");
    }

    #[test]
    fn topic_without_cluster_needs_a_default_when_several_exist() {
        let errors =
            load("[clusters.a]\nbootstrap = [\"h:1\"]\n[clusters.b]\nbootstrap = [\"h:2\"]\n[topics.t]\n").unwrap_err();
        assert!(errors[0].contains("no cluster is the default"), "{errors:?}");
    }

    #[test]
    fn unset_environment_variables_are_errors() {
        let errors = load("[[users]]\nname = \"u\"\npassword = \"${LUKA_TEST_UNSET}\"\ntopics = []\n").unwrap_err();
        assert!(errors[0].contains("LUKA_TEST_UNSET is not set"), "{errors:?}");
    }
}
