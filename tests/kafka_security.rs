//! Security protocols against Apache Kafka itself (`scripts/kafka` gives every node SASL_PLAINTEXT, SSL and SASL_SSL
//! listeners with a CA made at setup): luka writes and reads over each with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512;
//! every wrong setting is a quick 503 that names TLS or SASL while the log says what to change; and a TLS handshake
//! that stalls is cut by `connect_timeout_ms`, on either broker.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::read::read_records;
use common::{Harness, Kafka, error_of};
use serde_json::json;

on_both_brokers!(a_stalled_tls_handshake_is_a_503_that_says_tls);

/// How a case connects: its listener (`PLAINTEXT` or one of `common::kafka::SECURE_LISTENERS`), SASL mechanism and
/// password, and TLS.
struct Case {
    name: &'static str,
    listener: &'static str,
    sasl: Option<(&'static str, &'static str)>,
    tls: Tls,
    /// `None`: writes; else the words of the 503.
    refused: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Tls {
    Off,
    /// With the CA that signed the brokers' certificates.
    TestCa,
    /// With the public web roots only.
    WebRoots,
}

const fn case(
    name: &'static str,
    listener: &'static str,
    sasl: Option<(&'static str, &'static str)>,
    tls: Tls,
    refused: Option<&'static str>,
) -> Case {
    Case {
        name,
        listener,
        sasl,
        tls,
        refused,
    }
}

const SECRET: &str = "alice-secret";

const CASES: [Case; 15] = [
    case("sasl-plain", "SASL_PLAINTEXT", Some(("PLAIN", SECRET)), Tls::Off, None),
    case(
        "scram-256",
        "SASL_PLAINTEXT",
        Some(("SCRAM-SHA-256", SECRET)),
        Tls::Off,
        None,
    ),
    case(
        "scram-512",
        "SASL_PLAINTEXT",
        Some(("SCRAM-SHA-512", SECRET)),
        Tls::Off,
        None,
    ),
    case("ssl", "SSL", None, Tls::TestCa, None),
    case(
        "sasl-ssl-scram",
        "SASL_SSL",
        Some(("SCRAM-SHA-512", SECRET)),
        Tls::TestCa,
        None,
    ),
    case("sasl-ssl-plain", "SASL_SSL", Some(("PLAIN", SECRET)), Tls::TestCa, None),
    case(
        "wrong-password",
        "SASL_PLAINTEXT",
        Some(("SCRAM-SHA-512", "nope")),
        Tls::Off,
        Some("it refused luka's SASL authentication"),
    ),
    case(
        "wrong-plain-password",
        "SASL_PLAINTEXT",
        Some(("PLAIN", "nope")),
        Tls::Off,
        Some("it refused luka's SASL authentication"),
    ),
    case(
        "wrong-mechanism",
        "SASL_SSL",
        Some(("SCRAM-SHA-256", SECRET)),
        Tls::TestCa,
        Some("its listener does not enable luka's SASL mechanism"),
    ),
    case(
        "no-sasl-at-sasl-listener",
        "SASL_PLAINTEXT",
        None,
        Tls::Off,
        Some("closed the connection before authentication, as a SASL listener does"),
    ),
    case(
        "sasl-at-plain-listener",
        "PLAINTEXT",
        Some(("SCRAM-SHA-512", SECRET)),
        Tls::Off,
        Some("tried SASL authentication on a listener that does not use SASL"),
    ),
    case(
        "untrusted-certificate",
        "SSL",
        None,
        Tls::WebRoots,
        Some("TLS: its broker's certificate is not signed by a CA luka trusts"),
    ),
    case(
        "wrong-host-name",
        "SSL_WRONG_HOST",
        None,
        Tls::TestCa,
        Some("TLS: its broker's certificate does not name the host luka connected to"),
    ),
    case(
        "tls-at-plain-listener",
        "PLAINTEXT",
        None,
        Tls::TestCa,
        Some("the TLS handshake with its broker failed"),
    ),
    case(
        "plaintext-at-tls-listener",
        "SSL",
        None,
        Tls::Off,
        Some("as a TLS listener does with a plaintext client"),
    ),
];

/// One cluster per case, each on its listener of the same Apache Kafka node, with topic `t-<case>`.
fn config() -> String {
    let mut config = String::new();
    for case in &CASES {
        let (name, listener) = (case.name, case.listener);
        let bootstrap = match listener {
            "PLAINTEXT" => "{broker0}".to_owned(),
            other => format!("{{broker0:{other}}}"),
        };
        config.push_str(&format!(
            "[clusters.{name}]\nbootstrap = [\"{bootstrap}\"]\nproduce_timeout_ms = 5000\nconnect_timeout_ms = 2000\n"
        ));
        if let Some((mechanism, password)) = case.sasl {
            config.push_str(&format!(
                "[clusters.{name}.sasl]\nmechanism = \"{mechanism}\"\nusername = \"alice\"\npassword = \"{password}\"\n"
            ));
        }
        match case.tls {
            Tls::Off => {}
            Tls::TestCa => config.push_str(&format!("[clusters.{name}.tls]\nca_file = \"{{broker0:CA}}\"\n")),
            Tls::WebRoots => config.push_str(&format!("[clusters.{name}.tls]\n")),
        }
        config.push_str(&format!(
            "\n[topics.t-{name}]\ncluster = \"{name}\"\npartitions = 1\n\n"
        ));
    }
    config.push_str("[[users]]\nname = \"demo\"\npassword = \"demo\"\ntopics = [\"*\"]\nread_topics = [\"*\"]\n");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_security_protocol_writes_and_reads_back() {
    captured_log();
    let h = Harness::on(Kafka::Apache, 1, &config()).await;
    for case in CASES.iter().filter(|c| c.refused.is_none()) {
        let topic = format!("t-{}", case.name);
        let value = format!("over {}", case.name);
        let (status, answer) = h
            .post(&format!("/produce/{topic}"), &json!({"value": value}).to_string())
            .await;
        assert_eq!(status, 200, "{}: {answer}", case.name);
        let offset = answer[0]["offset"].as_i64().expect("offset");

        // Read back by luka over the same listener, and by librdkafka over PLAINTEXT.
        let fetch = json!({"topic": topic, "partition": 0, "offset": offset, "timeout": 1000});
        let (status, fetched) = h.post("/fetch", &fetch.to_string()).await;
        assert_eq!(status, 200, "{}: {fetched}", case.name);
        assert_eq!(fetched[0]["value"], value.as_str(), "{}", case.name);
        let records = read_records(&h.bootstrap(0), &topic, 0, offset, 1).await;
        assert_eq!(records[0].value.as_deref(), Some(value.as_bytes()), "{}", case.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_security_settings_are_a_quick_503_that_names_tls_or_sasl() {
    let log = captured_log();
    let h = Harness::on(Kafka::Apache, 1, &config()).await;
    for case in CASES.iter().filter(|c| c.refused.is_some()) {
        let words = case.refused.expect("a refused case");
        for attempt in 0..3 {
            let started = Instant::now();
            let (status, answer) = h.post(&format!("/produce/t-{}", case.name), r#"{"value":"x"}"#).await;
            let took = started.elapsed();
            assert_eq!(status, 503, "{} (attempt {attempt}): {answer}", case.name);
            let error = error_of(&answer);
            assert!(error.contains(words), "{} (attempt {attempt}): {error}", case.name);
            assert!(!error.contains("127.0.0.1"), "no addresses in answers: {error}");
            assert!(
                took < Duration::from_millis(1500),
                "{} (attempt {attempt}) took {took:?}",
                case.name
            );
        }
    }
    // The log names each cluster's problem with what to change, once for the three requests.
    let log = log.text();
    for case in CASES.iter().filter(|c| c.refused.is_some()) {
        let cluster = format!("kafka cluster '{}' is unavailable", case.name);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&cluster)).collect();
        assert_eq!(lines.len(), 1, "{}: {lines:#?}", case.name);
        let fix = format!("[clusters.{}", case.name);
        assert!(
            lines[0].contains(&fix),
            "{}: the log says what to change: {}",
            case.name,
            lines[0]
        );
    }
}

async fn a_stalled_tls_handshake_is_a_503_that_says_tls(kafka: Kafka) {
    captured_log();
    // The embedded broker's listener is plaintext: it reads a TLS ClientHello as the start of a very large request and
    // waits for the rest. A paused Apache Kafka node accepts (the kernel does) and never answers.
    let config = format!(
        "[clusters.stalled]\nbootstrap = [\"{{broker0}}\"]\nproduce_timeout_ms = 5000\nconnect_timeout_ms = 1000\n\
         [clusters.stalled.tls]\n{}\n[topics.stalled]\n\n{}",
        if kafka == Kafka::Apache {
            "ca_file = \"{broker0:CA}\""
        } else {
            ""
        },
        demo_user!()
    );
    let config = match kafka {
        Kafka::Apache | Kafka::ApacheCluster => config.replace("[\"{broker0}\"]", "[\"{broker0:SSL}\"]"),
        Kafka::Embedded => config,
    };
    let h = Harness::on(kafka, 1, &config).await;
    if kafka == Kafka::Apache {
        h.brokers[0].apache().signal("pause", 1).await;
    }
    let started = Instant::now();
    let (status, answer) = h.post("/produce/stalled", r#"{"value":"x"}"#).await;
    let took = started.elapsed();
    if kafka == Kafka::Apache {
        h.brokers[0].apache().signal("resume", 1).await;
    }
    assert_eq!(status, 503, "{answer}");
    assert!(
        error_of(&answer).contains("the TLS handshake with its broker did not finish in time"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "cut by connect_timeout_ms (1000), took {took:?}"
    );
}

/// luka's log, as text: every test of this file calls it first, so that it is installed before any harness would
/// install its own.
fn captured_log() -> &'static CapturedLog {
    static LOG: std::sync::OnceLock<CapturedLog> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = CapturedLog::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("warn,luka=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the first log subscriber of this test binary");
        buffer
    })
}

#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
