//! Test harness: real brokers on free ports (the embedded development broker, and Apache Kafka through [`kafka`]),
//! the real HTTP server on port 0, the configs and requests the test files share, and read-back through librdkafka
//! ([`read`]).

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod binary;
pub mod configs;
pub mod kafka;
pub mod load;
pub mod proxy;
pub mod read;
pub mod schema;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use luka::App;
use luka::config::Config;
use serde_json::Value;
use tokio::sync::oneshot;

pub use kafka::{Kafka, TestBroker};

/// The `[[users]]` entry the tests sign in as: `demo`, password `demo`, may write every topic. A macro, so that a
/// config constant can `concat!` it.
#[macro_export]
macro_rules! demo_user {
    () => {
        r#"
[[users]]
name = "demo"
password = "demo"
topics = ["*"]
"#
    };
}

/// `bytes` bytes from the system's random source as hex digits: text gzip cannot shrink below half its size (a
/// record too large for a topic once compressed, which luka cannot check in advance).
pub fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..bytes)
        .map(|i| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            format!("{:02x}", hasher.finish() as u8)
        })
        .collect()
}

pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// An embedded broker on a free port. A port free when picked can be taken before the broker binds it (by another
/// test's broker, a Kafka node, or a connection's ephemeral port, all drawn from the same range): then the broker
/// is started again on another port.
pub async fn embedded_broker() -> luka::broker::EmbeddedBroker {
    let mut failures = Vec::new();
    while failures.len() < 3 {
        match luka::broker::EmbeddedBroker::start(free_addr()).await {
            Ok(broker) => return broker,
            Err(e) => failures.push(e.to_string()),
        }
    }
    panic!("start embedded broker: {failures:?}")
}

pub struct Harness {
    pub base: String,
    /// The folder config.toml is read from; its `functions/` holds the test's handlers.
    pub dir: TestDir,
    pub app: Arc<App>,
    pub brokers: Vec<TestBroker>,
    /// For each `{brokerN:PROXIED}` in the config, the proxy in front of that Apache node's proxied listener (see
    /// [`proxy::KafkaProxy`]), in the order of N.
    pub proxies: Vec<proxy::KafkaProxy>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    /// Starts `broker_count` embedded brokers and luka on `config`, where `{broker0}`, `{broker1}`... stand for the
    /// brokers' addresses. For tests whose subject is not what reaches Kafka; those use [`Harness::on`].
    pub async fn start(broker_count: usize, config: &str) -> Self {
        Self::on_with(Kafka::Embedded, broker_count, config, &[]).await
    }

    /// Like [`Harness::start`], with `functions` (path, source) written under `functions/` beside the config.
    pub async fn start_with(broker_count: usize, config: &str, functions: &[(&str, &str)]) -> Self {
        Self::on_with(Kafka::Embedded, broker_count, config, functions).await
    }

    /// Starts `broker_count` brokers of kind `kafka` (each its own cluster) and luka on `config`, where `{broker0}`,
    /// `{broker1}`... stand for their bootstrap addresses; on Apache Kafka also `{brokerN:SASL_PLAINTEXT}` (and the
    /// other [`kafka::SECURE_LISTENERS`]) for its other listeners, and `{brokerN:CA}` for the CA file that signed
    /// their certificates, and `{brokerN:PROXIED}` for a listener reached through a proxy that can lose answers
    /// ([`Harness::proxies`]; one node).
    pub async fn on(kafka: Kafka, broker_count: usize, config: &str) -> Self {
        Self::on_with(kafka, broker_count, config, &[]).await
    }

    /// Like [`Harness::on`], with `functions` (path, source) written under `functions/` beside the config.
    pub async fn on_with(kafka: Kafka, broker_count: usize, config: &str, functions: &[(&str, &str)]) -> Self {
        // luka's log goes to the test's captured output: a failing test shows what the server said.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,luka=info")
            .with_test_writer()
            .try_init();
        let dir = temp_dir();
        for (path, source) in functions {
            write_function(&dir, path, source);
        }
        let brokers = futures::future::join_all((0..broker_count).map(|_| TestBroker::start(kafka))).await;
        let mut text = config.to_owned();
        let mut proxies = Vec::new();
        for (i, broker) in brokers.iter().enumerate() {
            text = text.replace(&format!("{{broker{i}}}"), &bootstrap_toml(&broker.bootstrap()));
            if let TestBroker::Apache(kafka) = broker {
                for protocol in kafka::SECURE_LISTENERS {
                    text = text.replace(
                        &format!("{{broker{i}:{protocol}}}"),
                        &bootstrap_toml(kafka.env(&format!("KAFKA_{protocol}"))),
                    );
                }
                text = text.replace(&format!("{{broker{i}:CA}}"), kafka.ca_file());
                let proxied = format!("{{broker{i}:PROXIED}}");
                if text.contains(&proxied) {
                    let at = kafka.env("KAFKA_PROXIED");
                    proxies.push(proxy::KafkaProxy::start_at(at, kafka.env("KAFKA_PROXIED_TARGET").to_owned()).await);
                    text = text.replace(&proxied, &bootstrap_toml(at));
                }
            }
        }
        let text = with_test_cpu_budget(text);
        let config = Config::from_toml(&text, &dir, |name| std::env::var(name).ok())
            .unwrap_or_else(|problems| panic!("test config is invalid: {problems:?}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = App::new(config).expect("functions load");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(luka::server::run(listener, Arc::clone(&app), async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        Self {
            base,
            dir,
            app,
            brokers,
            proxies,
            http,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn bootstrap(&self, broker: usize) -> String {
        self.brokers[broker].bootstrap()
    }

    /// POST `body` to `path` as user demo; gives status and JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        json_answer(
            self.http
                .post(self.url(path))
                .basic_auth("demo", Some("demo"))
                .body(body.to_owned()),
        )
        .await
    }

    /// `GET /metrics` without credentials: the Prometheus text (classic format), checked to be served as such.
    pub async fn scrape_metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        response.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        json_answer(self.http.get(self.url(path)).basic_auth("demo", Some("demo"))).await
    }

    /// POST `body` to `path` with `headers` and no credentials (as a webhook arrives); gives status and JSON answer.
    pub async fn send(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        json_answer(request).await
    }

    /// Runs the `kafka.produce` call `call` through the test's `/call` function ([`PRODUCE_FUNCTION`] or
    /// [`PRODUCE_OFFSET_FUNCTION`]): what the call gave back, or 400 and the error it raised.
    pub async fn produce(&self, call: Value) -> (u16, Value) {
        self.send("/call", &[], &call.to_string()).await
    }
}

/// The `[lua] cpu_ms` a test config gets when it sets none. An unoptimised test build runs handlers many times
/// slower than a release build: the default 50 ms can run out in a handler that does nothing wrong. Tests of the limit
/// set their own.
pub const TEST_CPU_MS: u64 = 1000;

fn with_test_cpu_budget(config: String) -> String {
    if config.contains("cpu_ms") {
        config
    } else if config.contains("[lua]\n") {
        config.replacen("[lua]\n", &format!("[lua]\ncpu_ms = {TEST_CPU_MS}\n"), 1)
    } else {
        format!("{config}\n[lua]\ncpu_ms = {TEST_CPU_MS}\n")
    }
}

/// A bootstrap list `a,b,c` as the inside of a TOML string list (`{brokerN}` stands between quotes in configs).
fn bootstrap_toml(list: &str) -> String {
    list.replace(',', "\", \"")
}

/// The `/call` function [`Harness::produce`] talks to: runs kafka.produce with the call in the request body (JSON)
/// and answers what it returns, or 400 and its error.
pub const PRODUCE_FUNCTION: (&str, &str) = (
    "call.lua",
    r#"
return function(req)
  local call = req:json()
  local ok, result = pcall(kafka.produce, call)
  if not ok then return { status = 400, json = { error = tostring(result) } } end
  return { json = result }
end
"#,
);

/// A `/call` function like [`PRODUCE_FUNCTION`] that answers only the offset of the (first) write: for topics whose
/// values are not text, which a JSON answer cannot carry.
pub const PRODUCE_OFFSET_FUNCTION: (&str, &str) = (
    "call.lua",
    r#"
return function(req)
  local ok, result = pcall(kafka.produce, req:json())
  if not ok then return { status = 400, json = { error = result } } end
  return { json = { offset = result.offset } }
end
"#,
);

/// Sends `request`; gives the status and the JSON answer.
pub async fn json_answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// The `error` text of an error answer.
pub fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().expect("an error answer has an error text")
}

/// The offset in a produce answer's metadata.
pub fn offset(metadata: &Value) -> i64 {
    metadata["offset"].as_i64().expect("offset")
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh folder for one test's config and functions (with an empty `functions/`), removed when dropped, so a
/// run leaves nothing behind in the temporary folder.
pub struct TestDir(std::path::PathBuf);

impl std::ops::Deref for TestDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TestDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new [`TestDir`].
pub fn temp_dir() -> TestDir {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("luka-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("functions")).expect("create test folder");
    TestDir(dir)
}

/// Writes `functions/<path>` under `dir`.
pub fn write_function(dir: &std::path::Path, path: &str, source: &str) {
    let file = dir.join("functions").join(path);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("create function folder");
    std::fs::write(file, source).expect("write function");
}

/// The value of the first sample line of `/metrics` text that starts with `name{` (or `name `) and holds every label
/// in `labels`; 0 when there is none.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// `/metrics` text as Prometheus's own Python client parses it (`prometheus_client`, installed by `scripts/test`
/// into `$LUKA_PYTHON_PATH`, default `~/.cache/luka-python`), in `format` "classic" (text 0.0.4) or "openmetrics":
/// each family's name, type and sample count, or the parser's error.
pub fn parse_metrics(text: &str, format: &str) -> Result<Vec<(String, String, usize)>, String> {
    const PARSE: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
try:
    families = [[f.name, f.type, len(f.samples)] for f in text_string_to_metric_families(sys.stdin.read())]
except Exception as e:
    print(json.dumps({"error": str(e)}))
else:
    print(json.dumps(families))
"#;
    let python_path = std::env::var("LUKA_PYTHON_PATH")
        .unwrap_or_else(|_| format!("{}/.cache/luka-python", std::env::var("HOME").unwrap_or_default()));
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSE, format])
        .env("PYTHONPATH", &python_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write metrics");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "prometheus_client is not importable from {python_path} (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    if let Some(error) = answer.get("error") {
        return Err(error.as_str().unwrap_or_default().to_owned());
    }
    Ok(answer
        .as_array()
        .expect("families")
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_owned(),
                f[1].as_str().unwrap().to_owned(),
                f[2].as_u64().unwrap() as usize,
            )
        })
        .collect())
}
