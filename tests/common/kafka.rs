//! Apache Kafka for tests: nodes started by `scripts/kafka` (fetched from Maven Central on first use) under a fresh
//! folder, one cluster per test, stopped by pid when the test drops it (and by the script's watcher if the test
//! process dies first). Also the two brokers a Kafka-facing test runs against ([`Kafka`]), and the macro that runs
//! such a test on both ([`on_both_brokers!`](crate::on_both_brokers)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use luka::broker::EmbeddedBroker;

/// Which broker a test writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kafka {
    /// luka's in-process development broker (tansu).
    Embedded,
    /// Apache Kafka itself, one KRaft node per cluster, started by `scripts/kafka`.
    Apache,
    /// Apache Kafka, three KRaft nodes per cluster (replication factor 3, `min.insync.replicas` 2).
    ApacheCluster,
}

/// Runs each named `async fn(Kafka)` as two tests, `<name>::embedded` and `<name>::apache`, so that every Kafka-facing
/// check holds on the development broker and on Apache Kafka alike.
#[macro_export]
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::common::kafka::Kafka::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apache() {
                super::$name($crate::common::kafka::Kafka::Apache).await
            }
        }
    )*};
}

/// One broker (cluster) of a test.
pub enum TestBroker {
    Embedded(EmbeddedBroker),
    Apache(ApacheKafka),
}

impl TestBroker {
    pub async fn start(kind: Kafka) -> Self {
        match kind {
            Kafka::Embedded => Self::Embedded(super::embedded_broker().await),
            Kafka::Apache => Self::Apache(ApacheKafka::start(1).await),
            Kafka::ApacheCluster => Self::Apache(ApacheKafka::start(3).await),
        }
    }

    /// The bootstrap address (list) of its plaintext listener.
    pub fn bootstrap(&self) -> String {
        match self {
            Self::Embedded(broker) => broker.addr().to_string(),
            Self::Apache(kafka) => kafka.bootstrap(),
        }
    }

    /// Takes the broker away as a crash would: the embedded broker stops listening and drops its connections (once
    /// connecting is refused, and a moment for its connection tasks to unwind), Apache Kafka is killed.
    pub async fn stop(&self) {
        match self {
            Self::Embedded(broker) => {
                broker.stop();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while tokio::net::TcpStream::connect(broker.addr()).await.is_ok() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the embedded broker still accepts connections"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Self::Apache(kafka) => kafka.signal("kill", 1).await,
        }
    }

    /// Brings a stopped broker back on the same address, with what it had stored.
    pub async fn resume(&self) {
        match self {
            Self::Embedded(broker) => broker.resume().await.expect("resume embedded broker"),
            Self::Apache(kafka) => kafka.signal("restart", 1).await,
        }
    }

    pub fn apache(&self) -> &ApacheKafka {
        match self {
            Self::Apache(kafka) => kafka,
            Self::Embedded(_) => panic!("this test needs Apache Kafka"),
        }
    }
}

/// The listeners besides PLAINTEXT that `scripts/kafka` gives every node: SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256,
/// SCRAM-SHA-512), SSL, SASL_SSL (PLAIN, SCRAM-SHA-512), and SSL_WRONG_HOST, whose certificate names another host.
/// The SASL user is `alice`, password `alice-secret`.
pub const SECURE_LISTENERS: [&str; 4] = ["SASL_PLAINTEXT", "SASL_SSL", "SSL_WRONG_HOST", "SSL"];

/// An Apache Kafka cluster started by `scripts/kafka` for one test.
pub struct ApacheKafka {
    dir: PathBuf,
    env: HashMap<String, String>,
    /// Holds `dir`; removed (after the cluster is stopped) when the cluster is dropped.
    _root: super::TestDir,
}

impl ApacheKafka {
    /// Starts a cluster of `nodes` (1 or 3) and waits until every node serves.
    pub async fn start(nodes: usize) -> Self {
        let root = super::temp_dir();
        let dir = root.join("kafka");
        let owner = std::process::id().to_string();
        let args = [
            "start",
            path_str(&dir),
            "--nodes",
            &nodes.to_string(),
            "--owner",
            &owner,
        ]
        .map(str::to_owned);
        let out = script(args.to_vec()).await;
        let env = out
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { dir, env, _root: root }
    }

    /// A value of the cluster's `kafka.env` (see `scripts/kafka`).
    pub fn env(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("scripts/kafka did not report {name}"))
    }

    /// The plaintext listeners, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.env("KAFKA_PLAINTEXT").to_owned()
    }

    /// The CA file that signed the brokers' certificates.
    pub fn ca_file(&self) -> &str {
        self.env("KAFKA_CA")
    }

    /// `kill`, `term`, `pause`, `resume` or `restart` node `node` (from 1), waiting as the script does.
    pub async fn signal(&self, what: &str, node: usize) {
        script(vec![what.to_owned(), path_str(&self.dir).to_owned(), node.to_string()]).await;
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        let _ = Command::new(script_path()).arg("stop").arg(&self.dir).status();
    }
}

/// `scripts/kafka` of this checkout.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test folders have UTF-8 paths")
}

/// Runs `scripts/kafka ARGS` off the async threads; its standard output, or a panic with what it said.
pub async fn script(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(script_path())
            .args(&args)
            .output()
            .expect("run scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("scripts/kafka prints text")
    })
    .await
    .expect("scripts/kafka thread")
}
