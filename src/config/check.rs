//! Whole-config checks: takes the parsed [`RawConfig`], gives the [`Config`] the rest of luka uses, or every
//! problem found (undefined clusters, bad patterns, conflicting defaults, missing files), each with its line.
//!
//! [`check`] runs every section's check; `[server]`, `[clusters]` and `[[users]]` are checked here, topics and
//! their schemas in [`super::topics`], `[lua]` and `[[routes]]` in [`super::functions`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::checked::{Cluster, Config, MetricsSettings, Topic, User};
use super::defaults;
use super::functions::{check_lua, check_routes};
use super::pattern::TopicPattern;
use super::problem::{Checker, ConfigProblem};
use super::raw::{RawCluster, RawConfig, RawUser, ServerConfig, TlsConfig};
use super::topics::check_topics;

pub(super) fn check(raw: RawConfig, text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigProblem>> {
    let mut c = Checker::new(text);
    check_server(&mut c, &raw.server);
    let default_cluster = default_cluster(&mut c, &raw.clusters);
    let topics = check_topics(&mut c, &raw.topics, &raw.clusters, default_cluster.as_deref(), base_dir);
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &raw.clusters {
        if let Some(checked) = check_cluster(&mut c, name, cluster, base_dir, &topics, &raw.server) {
            clusters.insert(name.get_ref().clone(), Arc::new(checked));
        }
    }
    // A user's topics are checked against the [topics] entries only when every entry was kept: one left out for a
    // mistake of its own would make each user naming it a second, misleading problem.
    let all_topics = (topics.len() == raw.topics.len()).then_some(topics.as_slice());
    let users = check_users(&mut c, raw.users, all_topics);
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
        max_topic_series: raw.metrics.max_topic_series,
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

/// The least `fetch_max_total_bytes` may be: what a batch of a few hundred small records takes once read (each record
/// is counted at its size in memory).
const MIN_FETCH_TOTAL_BYTES: usize = 64 * 1024;

/// The most of anything counted (connections, calls in flight, keys): far past what a server holds, far below what
/// the counters (tokio's semaphores among them) take.
const MAX_COUNT: usize = 1 << 30;

fn check_server(c: &mut Checker<'_>, server: &ServerConfig) {
    for (value, key) in [
        (server.max_body_bytes as u64, "max_body_bytes"),
        (server.request_timeout_ms, "request_timeout_ms"),
        (server.max_connections as u64, "max_connections"),
        (server.max_connections_per_address as u64, "max_connections_per_address"),
        (server.body_timeout_ms, "body_timeout_ms"),
        (server.header_timeout_ms, "header_timeout_ms"),
        (server.fetch_max_records as u64, "fetch_max_records"),
        (server.idempotency_capacity as u64, "idempotency_capacity"),
        (server.fetch_max_bytes as u64, "fetch_max_bytes"),
        (server.fetch_max_total_bytes as u64, "fetch_max_total_bytes"),
        (server.max_messages_per_request as u64, "max_messages_per_request"),
        (server.max_positions_per_request as u64, "max_positions_per_request"),
    ] {
        if value == 0 {
            c.general(format!("[server] {key} must be greater than 0"));
        }
    }
    for (value, key) in [
        (server.max_connections, "max_connections"),
        (server.max_connections_per_address, "max_connections_per_address"),
        (server.idempotency_capacity, "idempotency_capacity"),
    ] {
        if value > MAX_COUNT {
            c.general(format!("[server] {key} must be at most {MAX_COUNT}"));
        }
    }
    if server.fetch_max_total_bytes < MIN_FETCH_TOTAL_BYTES {
        c.general(format!(
            "[server] fetch_max_total_bytes must be at least {MIN_FETCH_TOTAL_BYTES}: a record batch is read whole, \
             and one read takes that much at most"
        ));
    }
    if server.idempotency_window_ms == 0 {
        c.general("[server] idempotency_window_ms must be greater than 0 (0 would remember no answer)");
    }

    for origin in &server.cors_origins {
        if !is_origin(origin) {
            c.general(format!(
                "[server] cors_origins: '{origin}' is not an origin; write it as a browser sends it, \
                 scheme://host[:port] with nothing after (e.g. \"https://app.example.com\")"
            ));
        }
    }
}

/// `scheme://host[:port]`, nothing after: how a browser writes a page's origin in its `Origin` header.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
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

fn check_cluster(
    c: &mut Checker<'_>,
    name: &Spanned<String>,
    raw: &RawCluster,
    base_dir: &Path,
    topics: &[Topic],
    server: &ServerConfig,
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
    let produce_timeout_ms = raw.produce_timeout_ms.unwrap_or(defaults::PRODUCE_TIMEOUT_MS);
    let max_batch_bytes = raw.max_batch_bytes.unwrap_or(defaults::MAX_BATCH_BYTES);
    let max_batch_records = raw.max_batch_records.unwrap_or(defaults::MAX_BATCH_RECORDS);
    let max_in_flight = raw.max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT);
    let connect_timeout_ms = raw
        .connect_timeout_ms
        .unwrap_or(defaults::CONNECT_TIMEOUT_MS.min(produce_timeout_ms));
    let delivery_timeout_ms = raw
        .delivery_timeout_ms
        .unwrap_or(defaults::DELIVERY_TIMEOUT_MS.max(produce_timeout_ms));
    if delivery_timeout_ms < produce_timeout_ms {
        c.at(
            name,
            format!(
                "[clusters.{n}] delivery_timeout_ms ({delivery_timeout_ms}) is shorter than produce_timeout_ms \
                 ({produce_timeout_ms}); a batch must be resent at least as long as its callers wait"
            ),
        );
    }
    for (value, key) in [
        (produce_timeout_ms, "produce_timeout_ms"),
        (connect_timeout_ms, "connect_timeout_ms"),
        (max_batch_bytes as u64, "max_batch_bytes"),
        (max_batch_records as u64, "max_batch_records"),
        (max_in_flight as u64, "max_in_flight"),
    ] {
        if value == 0 {
            c.at(name, format!("[clusters.{n}] {key} must be greater than 0"));
        }
    }
    if max_in_flight > MAX_COUNT {
        c.at(
            name,
            format!("[clusters.{n}] max_in_flight must be at most {MAX_COUNT}"),
        );
    }
    if raw.metadata_max_age_ms == Some(0) {
        c.at(
            name,
            format!("[clusters.{n}] metadata_max_age_ms must be greater than 0 (0 would list the cluster's topics for every produce)"),
        );
    }
    if server.request_timeout_ms <= produce_timeout_ms {
        c.at(
            name,
            format!(
                "[clusters.{n}] produce_timeout_ms ({produce_timeout_ms}) is not shorter than [server] \
                 request_timeout_ms ({}); a request would be cut before its produce could answer what became of its \
                 records: raise request_timeout_ms or lower produce_timeout_ms",
                server.request_timeout_ms
            ),
        );
    }
    let linger_ms = raw.linger_ms.unwrap_or(defaults::LINGER_MS);
    if linger_ms >= produce_timeout_ms {
        c.at(
            name,
            format!(
                "[clusters.{n}] linger_ms ({linger_ms}) is not shorter than produce_timeout_ms \
                 ({produce_timeout_ms}); every produce would time out while its batch lingers"
            ),
        );
    }
    if connect_timeout_ms > produce_timeout_ms {
        c.at(
            name,
            format!(
                "[clusters.{n}] connect_timeout_ms ({connect_timeout_ms}) is longer than produce_timeout_ms \
                 ({produce_timeout_ms}); a produce would give up before its connection does"
            ),
        );
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
        client_id: raw.client_id.clone().unwrap_or_else(|| defaults::CLIENT_ID.to_owned()),
        compression: raw.compression.unwrap_or(defaults::COMPRESSION),
        linger: Duration::from_millis(raw.linger_ms.unwrap_or(defaults::LINGER_MS)),
        produce_timeout: Duration::from_millis(produce_timeout_ms),
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        idempotence: raw.idempotence.unwrap_or(defaults::IDEMPOTENCE),
        delivery_timeout: Duration::from_millis(delivery_timeout_ms),
        max_batch_bytes,
        max_batch_records,
        max_in_flight,
        metadata_max_age: Duration::from_millis(raw.metadata_max_age_ms.unwrap_or(defaults::METADATA_MAX_AGE_MS)),
        max_created_topics: raw.max_created_topics.unwrap_or(defaults::MAX_CREATED_TOPICS),
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
    // The development broker listens in plain text and asks for no login: a client set up for TLS or SASL could
    // never talk to it.
    if raw.tls.is_some() || raw.sasl.is_some() {
        c.at(
            name,
            format!(
                "[clusters.{n}] embedded = true runs the development broker, which has no TLS or SASL; remove \
                 [clusters.{n}.tls] and [clusters.{n}.sasl], or point bootstrap at a broker that has them"
            ),
        );
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
    let files = [&resolved.ca_file, &resolved.cert_file, &resolved.key_file];
    if resolved.cert_file.is_some() != resolved.key_file.is_some() {
        c.at(
            name,
            format!("[clusters.{n}.tls] cert_file and key_file go together; set both or neither"),
        );
    } else if files.into_iter().flatten().all(|file| file.is_file())
        && let Err(problem) = resolved.client_config()
    {
        c.at(name, format!("[clusters.{n}.tls] {problem}"));
    }
    resolved
}

fn check_users(c: &mut Checker<'_>, raw: Vec<RawUser>, topics: Option<&[Topic]>) -> Vec<User> {
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
                    // `*` is everything there is, whatever that is; anything else that no [topics] entry can match
                    // is a name mistyped or a topic not defined yet, and would only ever be refused.
                    Ok(p)
                        if let Some(topics) = topics
                            && p.as_str() != "*"
                            && !topics.iter().any(|t| t.pattern.overlaps(&p)) =>
                    {
                        c.at(
                            topic,
                            format!(
                                "[[users]] '{name}' {key}: '{}' matches no [topics] entry ({}); define the topic, or \
                             correct the name",
                                p.as_str(),
                                topic_list(topics)
                            ),
                        )
                    }
                    Ok(p) => parsed.push(p),
                    Err(e) => c.at(topic, format!("[[users]] '{name}' {key}: {e}")),
                }
            }
            parsed
        };
        let topics = patterns(&user.topics, "topics");
        let read_topics = patterns(&user.read_topics, "read_topics");
        c.positive_limits(
            &user.name,
            &format!("[[users]] '{name}'"),
            [
                (user.requests_per_second, "requests_per_second"),
                (user.records_per_second, "records_per_second"),
                (user.burst_seconds, "burst_seconds"),
            ],
        );
        users.push(User {
            name,
            password: user.password,
            topics,
            read_topics,
            requests_per_second: user.requests_per_second,
            records_per_second: user.records_per_second,
            burst_seconds: user.burst_seconds.unwrap_or(defaults::BURST_SECONDS),
        });
    }
    users
}

/// The `[topics]` names and patterns, for a message: the first few.
fn topic_list(topics: &[Topic]) -> String {
    const SHOWN: usize = 8;
    if topics.is_empty() {
        return "there are none".to_owned();
    }
    let mut list: Vec<&str> = topics.iter().take(SHOWN).map(|t| t.pattern.as_str()).collect();
    if topics.len() > SHOWN {
        list.push("...");
    }
    format!("they are: {}", list.join(", "))
}

fn is_host_port(s: &str) -> bool {
    // Not a listener URL ("PLAINTEXT://broker:9092", as Kafka's own settings write them): its "//broker" would pass
    // for a host.
    if s.contains("://") {
        return false;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_toml(text, std::path::Path::new("."), |_| None)
            .map_err(|ps| ps.into_iter().map(|p| p.to_string()).collect())
    }

    /// A self-signed certificate (`openssl req -x509 -newkey ec`), its key, and the key of another certificate.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----\n\
        MIIBfzCCASWgAwIBAgIUANKunmOxTJjNVyAbfHlQLYPHU4IwCgYIKoZIzj0EAwIw\n\
        FDESMBAGA1UEAwwJbHVrYS10ZXN0MCAXDTI2MTIwNzIzMDE0OFoYDzIxMjYxMTEz\n\
        MjMwMTQ4WjAUMRIwEAYDVQQDDAlsdWthLXRlc3QwWTATBgcqhkjOPQIBBggqhkjO\n\
        PQMBBwNCAAQkxWYuhpiXxu6XHd6nBntUBUqW+60fA5PQhEhz2FBpfn4oGuCHMHjh\n\
        wVtIUOEBXCi876E4BtvCehQXCWjXUM/0o1MwUTAdBgNVHQ4EFgQUK39m6opsS9FL\n\
        F6BIB/UL/gteya4wHwYDVR0jBBgwFoAUK39m6opsS9FLF6BIB/UL/gteya4wDwYD\n\
        VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBti7Odq3eHwQkEIyTyij3a\n\
        o8FY0DcVDhM6dKVA4ochUwIhANx5fu6JfKrp5RnbrbYKZtPyc5M11Qruox5ft1cC\n\
        aMzL\n\
        -----END CERTIFICATE-----\n";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQguKZ+o14cStdzhxf6\n\
        STDHQzUioZau3RET7vgO+6dUPzuhRANCAAQkxWYuhpiXxu6XHd6nBntUBUqW+60f\n\
        A5PQhEhz2FBpfn4oGuCHMHjhwVtIUOEBXCi876E4BtvCehQXCWjXUM/0\n\
        -----END PRIVATE KEY-----\n";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgf1/iZv8UNhc2Y2Vq\n\
        HozPqbE4U19upQZj4kEw/c86bjWhRANCAASc1AdqvGBGNX5dXf/oaIpzaG6dZUa9\n\
        3ydOnmxHdT06JOdzv83bd7aULxaTJNlaFTk3n/fhpwwHmWpHC+FRoMre\n\
        -----END PRIVATE KEY-----\n";

    /// TLS files that exist but hold no certificate or key (or a key that is not the certificate's) are named at
    /// startup (`luka check`), not at the first connection to the cluster.
    #[test]
    fn tls_files_without_what_they_should_hold_are_refused() {
        let dir = std::env::temp_dir().join(format!("luka-tls-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        std::fs::write(dir.join("key-as-ca.pem"), key).unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        std::fs::write(dir.join("cert.pem"), TEST_CERT).unwrap();
        std::fs::write(dir.join("key.pem"), TEST_KEY).unwrap();
        std::fs::write(dir.join("other-key.pem"), OTHER_KEY).unwrap();
        let text = r#"
[clusters.a]
bootstrap = ["broker:9093"]
[clusters.a.tls]
ca_file = "key-as-ca.pem"

[clusters.b]
bootstrap = ["broker:9093"]
[clusters.b.tls]
cert_file = "empty.pem"
key_file = "empty.pem"

[clusters.c]
bootstrap = ["broker:9093"]
[clusters.c.tls]
cert_file = "cert.pem"
key_file = "cert.pem"

[clusters.d]
bootstrap = ["broker:9093"]
[clusters.d.tls]
cert_file = "cert.pem"
key_file = "other-key.pem"

[clusters.fine]
bootstrap = ["broker:9093"]
[clusters.fine.tls]
ca_file = "cert.pem"
cert_file = "cert.pem"
key_file = "key.pem"

[topics.t]
cluster = "a"
"#;
        let problems = Config::from_toml(text, &dir, |_| None).expect_err("refused");
        let all = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        std::fs::remove_dir_all(&dir).unwrap();
        for expected in [
            "[clusters.a.tls] ",
            "key-as-ca.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----) to trust",
            "[clusters.b.tls] ",
            "empty.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----) to present",
            "[clusters.c.tls] ",
            "cert.pem holds no PEM private key",
            "[clusters.d.tls] ",
            "cert.pem and ",
            "other-key.pem: ",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert!(!all.contains("[clusters.fine"), "{all}");
    }

    #[cfg(feature = "embedded-broker")]
    #[test]
    fn the_development_broker_takes_no_tls_or_sasl() {
        let text = r#"
[clusters.dev]
embedded = true
bootstrap = ["127.0.0.1:9092"]

[clusters.dev.sasl]
mechanism = "PLAIN"
username = "u"
password = "p"
"#;
        let errors = load(text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("development broker, which has no TLS or SASL"),
            "{errors:?}"
        );
        assert!(load(&text[..text.find("[clusters.dev.sasl]").unwrap()]).is_ok());
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

    /// Values that would panic later (counters past what tokio's semaphores take), make every produce time out or
    /// every produce list the cluster, or cut requests before their produce answers, are refused at startup.
    #[test]
    fn values_that_would_break_serving_are_refused() {
        let text = r#"
[server]
max_connections = 9223372036854775807
idempotency_capacity = 9223372036854775807
request_timeout_ms = 5000
idempotency_window_ms = 0
fetch_max_total_bytes = 1000

[lua]
vms = 100000
timeout_ms = 3000

[clusters.a]
bootstrap = ["PLAINTEXT://broker:9092"]
max_in_flight = 9223372036854775807
linger_ms = 20000
metadata_max_age_ms = 0
produce_timeout_ms = 10000
"#;
        let all = load(text).unwrap_err().join("\n");
        for expected in [
            "[server] max_connections must be at most 1073741824",
            "[server] idempotency_capacity must be at most 1073741824",
            "'PLAINTEXT://broker:9092' is not host:port",
            "[clusters.a] max_in_flight must be at most 1073741824",
            "[clusters.a] linger_ms (20000) is not shorter than produce_timeout_ms (10000)",
            "[clusters.a] metadata_max_age_ms must be greater than 0",
            "[clusters.a] produce_timeout_ms (10000) is not shorter than [server] request_timeout_ms (5000)",
            "[server] idempotency_window_ms must be greater than 0",
            "[server] fetch_max_total_bytes must be at least 65536",
            "[lua] vms must be at most 1024",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn a_rate_limit_of_zero_is_refused_where_it_is_written() {
        let text = r#"
[[users]]
name = "u"
password = "p"
topics = ["t"]
records_per_second = 0

[[routes]]
path = "/hook"
function = "hook.lua"
burst_seconds = 0
requests_per_second = 5
"#;
        let errors = load(text).unwrap_err();
        let all = errors.join("\n");
        for expected in [
            "line 3: [[users]] 'u' records_per_second must be greater than 0 (leave it out for no limit)",
            "line 9: [[routes]] burst_seconds must be greater than 0 (leave it out for no limit)",
        ] {
            assert!(errors.iter().any(|e| e == expected), "missing {expected:?} in:\n{all}");
        }
        assert!(!all.contains("requests_per_second"), "{all}");
    }

    /// A user's topic name or pattern that no `[topics]` entry can match would only ever be refused: a typo, or a
    /// topic not defined. `*` is not one (it is everything there is).
    #[test]
    fn user_topics_that_no_topic_entry_matches_are_refused() {
        let text = r#"
[clusters.a]
bootstrap = ["broker:9092"]

[topics.orders]
[topics."events.*"]

[[users]]
name = "u"
password = "p"
topics = ["orders", "order", "events.click", "*.created", "logs.*", "*"]
read_topics = ["ordres"]
"#;
        let errors = load(text).unwrap_err();
        let all = errors.join("\n");
        assert_eq!(errors.len(), 3, "{all}");
        for expected in [
            "line 11: [[users]] 'u' topics: 'order' matches no [topics] entry (they are: orders, events.*); define \
             the topic, or correct the name",
            "line 11: [[users]] 'u' topics: 'logs.*' matches no [topics] entry",
            "line 12: [[users]] 'u' read_topics: 'ordres' matches no [topics] entry",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in:\n{all}"
            );
        }
    }

    #[test]
    fn unset_environment_variables_are_errors() {
        let errors = load("[[users]]\nname = \"u\"\npassword = \"${LUKA_TEST_UNSET}\"\ntopics = []\n").unwrap_err();
        assert!(errors[0].contains("LUKA_TEST_UNSET is not set"), "{errors:?}");
    }

    #[test]
    fn cors_origins_are_written_as_browsers_send_them() {
        let config = load("[server]\ncors_origins = [\"https://app.example.com\", \"http://127.0.0.1:3000\"]\n");
        assert!(config.is_ok(), "{config:?}");
        for bad in ["app.example.com", "https://app.example.com/", "ftp://x", "https://"] {
            let errors = load(&format!("[server]\ncors_origins = [\"{bad}\"]\n")).unwrap_err();
            assert!(errors[0].contains("is not an origin"), "{bad}: {errors:?}");
        }
    }
}
