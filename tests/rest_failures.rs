//! How the REST produce API fails: statuses and messages that say what to fix, and answers from clusters that
//! are down, silent, saturated or speak another protocol.

mod common;

use std::time::{Duration, Instant};

use common::configs::REST;
use common::proxy::KafkaProxy;
use common::read::{assert_no_record, high_watermark, java_create_topic, java_grow_topic, read_records, text};
use common::{Harness, Kafka, error_of, offset, sample};
use serde_json::Value;

on_both_brokers!(
    errors_have_the_right_status_and_say_what_to_fix,
    broker_outage_is_a_503_and_recovery_needs_no_restart
);

async fn errors_have_the_right_status_and_say_what_to_fix(kafka: Kafka) {
    let h = Harness::on(kafka, 1, REST).await;
    let cases: [(&str, &str, u16, &str); 9] = [
        (
            "/produce/greetings",
            r#"{"value":"a","timestamp":-5}"#,
            400,
            "timestamp -5 is out of range; give milliseconds since 1970-01-01, from 0 to 8210266876799999",
        ),
        (
            "/produce/greetings",
            r#"[{"value":"a","timestamp":-5},{"value":"b"},{"value":"c","timestamp":-6}]"#,
            400,
            "2 of 3 messages are invalid (nothing was written): message 1: timestamp -5 is out of range; \
             give milliseconds since 1970-01-01, from 0 to 8210266876799999; message 3: timestamp -6",
        ),
        (
            "/produce/greetings",
            r#"{"value": "x""#,
            400,
            "the body is not JSON: it ends too early",
        ),
        (
            "/produce/greetings",
            r#"[{"value":"a"},{"key":"k"}]"#,
            400,
            "message 2: a message needs \"value\"",
        ),
        ("/produce", r#"{"value":"a"}"#, 400, "a message needs \"topic\""),
        (
            "/produce/greetings",
            r#"{"value":"x","partition":2147483648}"#,
            400,
            "partition must be an integer from 0 to 2147483647, got 2147483648",
        ),
        ("/produce/nope", r#"{"value":"a"}"#, 404, "kafka topic 'nope' not found"),
        (
            "/produce/cities",
            r#"[{"value":"a"},{"partition":9,"value":"b"}]"#,
            404,
            "message 2: kafka topic 'cities' has no partition 9",
        ),
        (
            "/produce/events.unseen",
            r#"{"partition":5,"value":"a"}"#,
            404,
            "has no partition 5",
        ),
    ];
    for (path, body, status, message) in cases {
        let started = Instant::now();
        let (got, answer) = h.post(path, body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert_eq!(answer["status"], status);
        let error = error_of(&answer);
        assert!(
            error.contains(message),
            "{path} {body}: expected {message:?} in {error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} answered in {:?}",
            started.elapsed()
        );
    }

    // 401 without credentials or with a wrong password, with a challenge.
    let response = h
        .http
        .post(h.url("/produce/greetings"))
        .body(r#"{"value":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"luka\"");
    let response = h
        .http
        .post(h.url("/produce/greetings"))
        .basic_auth("demo", Some("nope"))
        .body(r#"{"value":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // 403: greeter may write greetings only, and a mixed request is refused whole.
    let response = h
        .http
        .post(h.url("/produce"))
        .basic_auth("greeter", Some("hello"))
        .body(r#"[{"topic":"greetings","value":"ok"},{"topic":"cities","value":"no"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["error"],
        "message 2: user 'greeter' may not write to topic 'cities'"
    );

    // 413 for a body over max_body_bytes.
    let big = format!(r#"{{"value":"{}"}}"#, "x".repeat(5000));
    let (status, answer) = h.post("/produce/greetings", &big).await;
    assert_eq!(status, 413, "{answer}");

    // 405 and 404 for other methods and paths.
    let response = h.http.delete(h.url("/produce/greetings")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let response = h.http.get(h.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], 404);

    // None of the refused requests wrote anything: the next record of greetings is at offset 0.
    let (status, answer) = h.post("/produce/greetings", r#"{"value":"first"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(offset(&answer[0]), 0, "refused requests wrote nothing");
    for partition in 0..4 {
        assert_no_record(&h.bootstrap(0), "cities", partition, 0).await;
    }
}

async fn broker_outage_is_a_503_and_recovery_needs_no_restart(kafka: Kafka) {
    let h = Harness::on(
        kafka,
        1,
        &REST.replace("produce_timeout_ms = 3000", "produce_timeout_ms = 2000"),
    )
    .await;
    let (status, _) = h.post("/produce/greetings", r#"{"value":"before"}"#).await;
    assert_eq!(status, 200);
    let (status, _) = h.get("/readyz").await;
    assert_eq!(status, 200);
    let unavailable = ["cluster=\"local\"", "topic=\"greetings\"", "result=\"unavailable\""];
    let before = sample(&h.scrape_metrics().await, "luka_records_total", &unavailable);

    h.brokers[0].stop().await;
    for attempt in 0..3 {
        let started = Instant::now();
        let (status, answer) = h
            .post("/produce/greetings", &format!(r#"{{"value":"during-{attempt}"}}"#))
            .await;
        assert_eq!(status, 503, "attempt {attempt}: {answer}");
        assert!(
            error_of(&answer).contains("kafka cluster 'local' is unavailable"),
            "{answer}"
        );
        assert!(!error_of(&answer).contains("127.0.0.1"), "no internals leak: {answer}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "503 well under the produce timeout, took {:?}",
            started.elapsed()
        );
    }
    let (status, _) = h.get("/readyz").await;
    assert_eq!(status, 503);
    // At least: the counters are the process's, and this test's other broker may be refusing records meanwhile.
    let after = h.scrape_metrics().await;
    assert!(
        sample(&after, "luka_records_total", &unavailable) - before >= 3.0,
        "every refused record is counted as unavailable: {after}"
    );

    h.brokers[0].resume().await;
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let (status, answer) = h.post("/produce/greetings", r#"{"value":"after"}"#).await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            Instant::now() < deadline,
            "luka did not recover after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "writes resumed {:?} after the broker came back",
        back.elapsed()
    );
    let records = read_records(&h.bootstrap(0), "greetings", 0, offset(&answer[0]), 1).await;
    assert_eq!(text(&records[0]).1.as_deref(), Some("after"));
    let (status, _) = h.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_accepts_but_never_answers_is_a_504() {
    // A "broker" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = format!(
        "[clusters.slow]\nbootstrap = [\"{silent_addr}\"]\nproduce_timeout_ms = 1000\n[topics.t]\n{}",
        demo_user!()
    );
    let h = Harness::start(0, &config).await;
    let started = Instant::now();
    let (status, answer) = h.post("/produce/t", r#"[{"value":"a"},{"value":"b"}]"#).await;
    assert_eq!(status, 504, "{answer}");
    // Nothing was sent: the broker never answered the metadata request that comes first.
    assert!(
        error_of(&answer).contains("did not answer in time; nothing was written"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // Refused while being placed, both records are counted as the writers count theirs, with no bytes (not made).
    let metrics = h.scrape_metrics().await;
    let timed_out = ["cluster=\"slow\"", "topic=\"t\"", "result=\"timeout\""];
    assert_eq!(sample(&metrics, "luka_records_total", &timed_out), 2.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "luka_record_bytes_total", &timed_out),
        0.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_cap_records_are_refused_and_a_part_written_is_a_500_that_lists_it() {
    // A cap of one produce at a time: a request writing two partitions at once finds the cap taken by itself.
    let h = Harness::start(
        1,
        &REST.replace(
            "produce_timeout_ms = 3000",
            "produce_timeout_ms = 3000\nmax_in_flight = 1",
        ),
    )
    .await;
    let (status, _) = h.post("/produce/cities", r#"{"partition":0,"value":"warm"}"#).await;
    assert_eq!(status, 200);
    let busy = ["topic=\"cities\"", "result=\"busy\""];
    let before = sample(&h.scrape_metrics().await, "luka_records_total", &busy);
    let send = |key: Option<&'static str>| {
        let mut request = h
            .http
            .post(h.url("/produce/cities"))
            .basic_auth("demo", Some("demo"))
            .body(r#"[{"partition":1,"value":"a"},{"partition":2,"value":"b"}]"#);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    // Partition 1's group takes the cap and is written; partition 2's is refused. "Nothing was written" (503, with
    // Retry-After) would be untrue, and its retry would write "a" again: a 500 that lists what was written.
    let response = send(None).await.unwrap();
    assert_eq!(response.status().as_u16(), 500);
    assert!(response.headers().get("retry-after").is_none());
    let answer: Value = response.json().await.unwrap();
    assert!(
        error_of(&answer).contains(
            "kafka cluster 'local' has 1 produce calls waiting already; retry shortly; nothing was written unless \
             listed in results"
        ),
        "{answer}"
    );
    assert_eq!(answer["results"][0]["partition"], 1, "{answer}");
    assert!(answer["results"][1].is_null(), "{answer}");
    let after = h.scrape_metrics().await;
    assert_eq!(
        sample(&after, "luka_records_total", &busy) - before,
        1.0,
        "the refused record is counted: {after}"
    );
    // Under a key, that answer is remembered: its repeat is told it again rather than write "a" a second time.
    let bootstrap = h.bootstrap(0);
    let written = high_watermark(&bootstrap, "cities", 1).await;
    let first = send(Some("partly")).await.unwrap();
    assert_eq!(first.status().as_u16(), 500);
    let first: Value = first.json().await.unwrap();
    let again = send(Some("partly")).await.unwrap();
    assert_eq!(again.status().as_u16(), 500);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(
        high_watermark(&bootstrap, "cities", 1).await,
        written + 1,
        "one more \"a\", from the first keyed request only"
    );
}

/// Partitions added to a topic are written to at once: a partition past the cached count is looked up again before
/// the answer is a 404 (which would otherwise last until the cache's `metadata_max_age_ms`, 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_a_topic_can_be_written_at_once() {
    let h = Harness::on(Kafka::Apache, 1, REST).await;
    let bootstrap = h.bootstrap(0);
    java_create_topic(&bootstrap, "events.grown", 2, &[]).await;
    let (status, answer) = h.post("/produce/events.grown", r#"{"value":"a","partition":1}"#).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = h.post("/produce/events.grown", r#"{"value":"b","partition":3}"#).await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        error_of(&answer).contains("has no partition 3 (it has 2: 0 to 1)"),
        "{answer}"
    );
    java_grow_topic(&bootstrap, "events.grown", 4).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, answer) = h.post("/produce/events.grown", r#"{"value":"c","partition":3}"#).await;
        if status == 200 {
            assert_eq!(answer[0]["partition"], 3, "{answer}");
            break;
        }
        assert_eq!(status, 404, "{answer}");
        assert!(Instant::now() < deadline, "partition 3 still unknown: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The connection luka's metadata requests go over stops answering without breaking (the broker stalled, or the
/// connection's state lost on the way). rskafka replaces it only when it breaks, so every later look-up (new
/// topics, `/readyz`, new leaders after a failover) waited on it. Once a look-up over it is given up, it is
/// forgotten and the next connects afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_connection_that_stops_answering_is_replaced() {
    let broker = common::embedded_broker().await;
    let proxy = KafkaProxy::start(broker.addr().to_string()).await;
    let config = format!(
        "[clusters.local]\nbootstrap = [\"{}\"]\nproduce_timeout_ms = 1000\n\n[topics.greetings]\npartitions = 1\n\
         [topics.\"made.*\"]\npartitions = 1\n\n{}",
        proxy.addr,
        demo_user!()
    );
    let h = Harness::start(0, &config).await;
    let (status, answer) = h.post("/produce/greetings", r#"{"value":"warm"}"#).await;
    assert_eq!(status, 200, "{answer}");
    proxy.stall_open_connections();
    let (status, answer) = h.post("/produce/made.1", r#"{"value":"x"}"#).await;
    assert_eq!(status, 504, "the look-up waited on the stalled connection: {answer}");
    let started = Instant::now();
    let (status, answer) = h.post("/produce/made.2", r#"{"value":"x"}"#).await;
    assert_eq!(status, 200, "a fresh connection: {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(h.http.get(h.url("/readyz")).send().await.unwrap().status(), 200);
}

/// Look-ups of new topics queued behind one another on a broker that answers nothing (stopped): each ends within
/// its own time (`produce_timeout_ms`), not after the time of every look-up before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_ups_waiting_for_their_turn_end_within_their_own_time() {
    let broker = common::binary::Binary::broker(&common::temp_dir()).await;
    let config = format!(
        "[clusters.local]\nbootstrap = [\"{}\"]\nproduce_timeout_ms = 1000\n\n[topics.greetings]\npartitions = 1\n\
         [topics.\"made.*\"]\npartitions = 1\n\n{}",
        broker.broker,
        demo_user!()
    );
    let h = Harness::start(0, &config).await;
    let (status, answer) = h.post("/produce/greetings", r#"{"value":"warm"}"#).await;
    assert_eq!(status, 200, "{answer}");
    broker.pause();
    // Past the second for which a listing is reused: each look-up asks the cluster.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        h.post("/produce/made.1", r#"{"value":"x"}"#),
        h.post("/produce/made.2", r#"{"value":"x"}"#),
        h.post("/produce/made.3", r#"{"value":"x"}"#)
    );
    let took = started.elapsed();
    broker.resume();
    for (status, answer) in [a, b, c] {
        assert_eq!(status, 504, "{answer}");
    }
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plaintext_broker_is_a_quick_503_that_says_tls() {
    // A plaintext Kafka listener reads a TLS ClientHello as an oversized request and closes the connection.
    let plaintext = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plaintext.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = plaintext.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut hello = [0u8; 512];
                let _ = socket.read(&mut hello).await;
            });
        }
    });
    let config = format!(
        "[clusters.local]\nbootstrap = [\"{addr}\"]\nproduce_timeout_ms = 3000\n[clusters.local.tls]\n\n\
         [topics.greetings]\n{}",
        demo_user!()
    );
    let h = Harness::start(0, &config).await;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, answer) = h.post("/produce/greetings", r#"{"value":"x"}"#).await;
        assert_eq!(status, 503, "{answer}");
        assert!(
            error_of(&answer).contains("the TLS handshake with its broker failed"),
            "{answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    let metrics = h.scrape_metrics().await;
    let tls = ["cluster=\"local\"", "topic=\"greetings\"", "result=\"tls\""];
    assert_eq!(sample(&metrics, "luka_records_total", &tls), 3.0, "{metrics}");
}

/// A cluster found down by `/readyz` alone (no produce or read meanwhile, which would probe it) is reported down by
/// `luka_kafka_cluster_reachable` too: it stayed 1 while `/readyz` answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_found_down_by_readyz_alone_is_unreachable_in_the_metrics() {
    let h = Harness::on(Kafka::Embedded, 1, REST).await;
    let (status, _) = h.post("/produce/greetings", r#"{"value":"before"}"#).await;
    assert_eq!(status, 200);
    h.brokers[0].stop().await;
    // A readiness answer is reused for a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.get("/readyz").await.0 != 503 {
        assert!(Instant::now() < deadline, "/readyz never saw the broker gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = h.scrape_metrics().await;
    assert_eq!(
        sample(&metrics, "luka_kafka_cluster_reachable", &["cluster=\"local\""]),
        0.0,
        "{metrics}"
    );
}
