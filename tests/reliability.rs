//! What luka promises when brokers fail: a batch whose answer is lost is not written twice (idempotent produce),
//! a produce cut short is answered truly ("nothing was written" only when nothing was sent, "may or may not"
//! otherwise), and a request with an `Idempotency-Key` keeps its key until its real outcome is known.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{INIT_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE_NUMBER, PRODUCE};
use common::read::{high_watermark, read_records, text};
use common::{Harness, error_of, offset, sample};
use serde_json::Value;

use crate::common::kafka::Kafka;

fn config(bootstrap: &str, extra: &str) -> String {
    format!(
        r#"
[server]
request_timeout_ms = 4000

[lua]
timeout_ms = 3000

[clusters.main]
bootstrap = ["{bootstrap}"]
produce_timeout_ms = 1500
{extra}

[topics.once]
partitions = 2
"#
    ) + crate::demo_user!()
}

/// The values of `topic` `partition`, from offset 0 to the end, read by librdkafka.
async fn values(bootstrap: &str, topic: &str, partition: i32) -> Vec<String> {
    let end = high_watermark(bootstrap, topic, partition).await;
    read_records(bootstrap, topic, partition, 0, end as usize)
        .await
        .iter()
        .map(|record| text(record).1.unwrap_or_default())
        .collect()
}

/// Writes "warm" (connecting and creating the topic), then "the-one" (with a timestamp of its own) and "after" (at
/// the time it is sent) in one request while the proxy loses the broker's answer to its first produce request;
/// gives the answer to that request and what the partition holds.
async fn write_with_a_lost_answer(idempotence: bool) -> ((u16, Value), Vec<String>) {
    let extra = format!("idempotence = {idempotence}");
    let harness = Harness::on(Kafka::Apache, 1, &config("{broker0:PROXIED}", &extra)).await;
    let (status, _) = harness.post("/produce/once", r#"{"value":"warm","partition":0}"#).await;
    assert_eq!(status, 200);
    let proxy = &harness.proxies[0];
    proxy.lose_answers(PRODUCE, 1);
    let body = format!(
        r#"[{{"value":"the-one","partition":0,"timestamp":{THE_ONES_TIME}}},{{"value":"after","partition":0}}]"#
    );
    let answer = harness.post("/produce/once", &body).await;
    assert_eq!(proxy.lost(PRODUCE), 1, "the proxy lost the answer to the produce");
    let values = values(&harness.bootstrap(0), "once", 0).await;
    (answer, values)
}

/// The timestamp "the-one" is sent with: long before the other record of its batch.
const THE_ONES_TIME: i64 = 1_700_000_000_000;

/// Written once, and answered with each record's own offset and timestamp: the broker's answer to the resend it
/// finds to be a duplicate carries the batch's largest timestamp as a "log append time" even on a CreateTime topic,
/// which is no record's but the last's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_was_lost_is_written_once() {
    let ((status, answer), values) = write_with_a_lost_answer(true).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(values, ["warm", "the-one", "after"], "written once");
    assert_eq!(
        (offset(&answer[0]), offset(&answer[1])),
        (1, 2),
        "the caller got the offsets they were written at: {answer}"
    );
    assert_eq!(answer[0]["timestamp"], THE_ONES_TIME, "{answer}");
    assert_ne!(answer[1]["timestamp"], THE_ONES_TIME, "{answer}");
}

/// The same without idempotence: rskafka sends the batch again and the broker writes it twice. This is what the
/// test above would see if idempotent produce did not work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_a_batch_whose_answer_was_lost_is_written_twice() {
    let ((status, answer), values) = write_with_a_lost_answer(false).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(values, ["warm", "the-one", "after", "the-one", "after"]);
    assert_eq!(offset(&answer[0]), 3, "the caller is told of the second copy: {answer}");
}

/// A batch in doubt (the answer to its first send lost; the broker appended it) whose resend the broker refuses as
/// out of sequence (the proxy puts that code in the broker's answer, which was "a duplicate"): sent again under a new
/// producer id, the broker could not tell it from a new batch and would write it a second time. It ends in doubt,
/// written once, and the partition's next records get a new writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_doubt_is_not_sent_again_under_a_new_producer_id() {
    let harness = Harness::on(Kafka::Apache, 1, &config("{broker0:PROXIED}", "")).await;
    let (status, answer) = harness.post("/produce/once", r#"{"value":"warm","partition":0}"#).await;
    assert_eq!(status, 200, "{answer}");
    let proxy = &harness.proxies[0];
    let producer_ids = proxy.requests(INIT_PRODUCER_ID);
    proxy.lose_answers(PRODUCE, 1);
    proxy.recode_produce_answers(1, OUT_OF_ORDER_SEQUENCE_NUMBER);
    let (status, answer) = harness
        .post("/produce/once", r#"{"value":"the-one","partition":0}"#)
        .await;
    assert_eq!((proxy.lost(PRODUCE), proxy.recoded()), (1, 1), "{answer}");
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("may or may not"), "{answer}");
    assert_eq!(
        proxy.requests(INIT_PRODUCER_ID),
        producer_ids,
        "no new producer id was asked for the batch in doubt"
    );
    let (status, answer) = harness.post("/produce/once", r#"{"value":"next","partition":0}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        values(&harness.bootstrap(0), "once", 0).await,
        ["warm", "the-one", "next"]
    );
}

/// A request whose client leaves while its record is being sent again (the answer to the first send lost): the record
/// is written all the same, and counted as written in `luka_records_total`, by the partition's writer since the
/// request is gone (it was counted nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_after_its_client_left_is_counted() {
    use tokio::io::AsyncWriteExt;

    let harness = Harness::on(Kafka::Apache, 1, &config("{broker0:PROXIED}", "")).await;
    let (status, answer) = harness.post("/produce/once", r#"{"value":"warm","partition":0}"#).await;
    assert_eq!(status, 200, "{answer}");
    let written = ["topic=\"once\"", "result=\"ok\""];
    let before = sample(&harness.scrape_metrics().await, "luka_records_total", &written);
    harness.proxies[0].lose_answers(PRODUCE, 1);
    let body = r#"{"value":"left","partition":0}"#;
    let mut socket =
        tokio::net::TcpStream::connect(harness.url("/").trim_start_matches("http://").trim_end_matches('/'))
            .await
            .expect("connect");
    let request = format!(
        "POST /produce/once HTTP/1.1\r\nHost: luka\r\nAuthorization: Basic ZGVtbzpkZW1v\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    // Gone once the first send's answer is lost, before the resend (0.1 s later) is answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while harness.proxies[0].lost(PRODUCE) == 0 {
        assert!(Instant::now() < deadline, "the first send's answer was not lost");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = sample(&harness.scrape_metrics().await, "luka_records_total", &written);
        if after == before + 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "written, but counted {} more",
            after - before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(values(&harness.bootstrap(0), "once", 0).await, ["warm", "left"]);
}

/// A broker may say for a moment that it does not know a partition (after the partition's leader moved, before the
/// new leader has the metadata). The request it refuses is answered so, nothing of it written, and the partition
/// keeps its writer while that has records queued: the requests queued behind the refused one, and those after, are
/// written by the same producer, in order. A second writer (another producer id) started beside the first while the
/// first still had records queued would write the partition at the same time, and their records could interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_said_to_be_unknown_keeps_its_busy_writer() {
    let harness = Harness::on(Kafka::Apache, 1, &config("{broker0:PROXIED}", "")).await;
    let (status, _) = harness.post("/produce/once", r#"{"value":"warm","partition":0}"#).await;
    assert_eq!(status, 200);
    let proxy = &harness.proxies[0];
    // The writer's producer id (asked again while Kafka answers that its producer-id block is loading).
    let asked = proxy.requests(INIT_PRODUCER_ID);
    assert!(asked >= 1, "the partition's writer has a producer id");
    // The refused produce is held at the proxy while three more requests queue up behind it in the writer.
    proxy.misdirect_produces(1, Duration::from_millis(700));
    let refused = harness.post("/produce/once", r#"{"value":"refused","partition":0}"#);
    let queued = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bodies: Vec<String> = (1..=3)
            .map(|i| format!(r#"{{"value":"queued-{i}","partition":0}}"#))
            .collect();
        tokio::join!(
            harness.post("/produce/once", &bodies[0]),
            harness.post("/produce/once", &bodies[1]),
            harness.post("/produce/once", &bodies[2])
        )
    };
    let ((status, answer), queued) = tokio::join!(refused, queued);
    assert_eq!(
        proxy.misdirected(),
        1,
        "the broker was asked for a partition it does not have"
    );
    assert_eq!(status, 404, "{answer}");
    for (status, answer) in [queued.0, queued.1, queued.2] {
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = harness
        .post("/produce/once", r#"{"value":"after","partition":0}"#)
        .await;
    assert_eq!(status, 200, "{answer}");
    let values = values(&harness.bootstrap(0), "once", 0).await;
    assert_eq!(values.len(), 5, "{values:?}");
    assert_eq!(
        (values[0].as_str(), values[4].as_str()),
        ("warm", "after"),
        "{values:?}"
    );
    assert!(!values.contains(&"refused".to_owned()), "{values:?}");
    assert_eq!(
        proxy.requests(INIT_PRODUCER_ID),
        asked,
        "the same writer, under the same producer id, wrote on"
    );
}

/// A paused broker. Records sent and not acknowledged in time are answered 504 "may or may not"; records queued
/// behind them are withdrawn and answered "nothing was written", which stays true. A request with an
/// Idempotency-Key is answered 504 when its time runs out but keeps its key (a retry meanwhile is 409); once the
/// broker is back a retry gets the real outcome: the success, replayed. Every record sent is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_request_timed_out_replays_the_real_outcome() {
    let harness = Harness::on(Kafka::Apache, 1, &config("{broker0}", "")).await;
    for partition in [0, 1] {
        let (status, _) = harness
            .post(
                "/produce/once",
                &format!(r#"{{"value":"warm","partition":{partition}}}"#),
            )
            .await;
        assert_eq!(status, 200);
    }
    harness.brokers[0].apache().signal("pause", 1).await;
    let keyed = || {
        harness
            .http
            .post(harness.url("/produce/once"))
            .basic_auth("demo", Some("demo"))
            .header("idempotency-key", "order-17")
            .body(r#"{"value":"keyed","partition":1}"#)
    };
    let sent = harness.post("/produce/once", r#"{"value":"sent","partition":0}"#);
    let ((status, answer), keyed_answer) = tokio::join!(sent, common::json_answer(keyed()));
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("may or may not"), "{answer}");
    assert_eq!(keyed_answer.0, 504, "{}", keyed_answer.1);
    assert!(
        error_of(&keyed_answer.1).contains("Idempotency-Key"),
        "{}",
        keyed_answer.1
    );
    let (status, answer) = common::json_answer(keyed()).await;
    assert_eq!(status, 409, "the key is held while the outcome is unknown: {answer}");
    let (status, answer) = harness
        .post("/produce/once", r#"{"value":"queued","partition":0}"#)
        .await;
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("nothing was written"), "{answer}");

    harness.brokers[0].apache().signal("resume", 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let replayed = loop {
        let response = keyed().send().await.expect("retry");
        if response.status() == 200 {
            break response;
        }
        assert!(Instant::now() < deadline, "no outcome 30 s after the broker came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let answer: Value = replayed.json().await.expect("json");
    assert_eq!(offset(&answer[0]), 1, "{answer}");
    // The in-doubt record is resent until the broker answers: in once, like the keyed one; the withdrawn one never.
    let bootstrap = harness.bootstrap(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while high_watermark(&bootstrap, "once", 0).await < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(values(&bootstrap, "once", 0).await, ["warm", "sent"]);
    assert_eq!(values(&bootstrap, "once", 1).await, ["warm", "keyed"]);
}

/// A request with an `Idempotency-Key` whose records are still in doubt when the cluster's `delivery_timeout_ms`
/// runs out (every answer to its produce lost: the broker has the record, luka never learns it). Its outcome will
/// never be known, so its answer (504, "may or may not") is remembered for the key: the retry gets it replayed, and
/// is not run again under a new producer id, which the broker could not tell from a new record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_outcome_stays_unknown_replays_the_doubt() {
    let harness = Harness::on(
        Kafka::Apache,
        1,
        &config("{broker0:PROXIED}", "delivery_timeout_ms = 2500"),
    )
    .await;
    let (status, _) = harness.post("/produce/once", r#"{"value":"warm","partition":1}"#).await;
    assert_eq!(status, 200);
    let proxy = &harness.proxies[0];
    proxy.lose_answers(PRODUCE, usize::MAX / 2);
    let keyed = || {
        harness
            .http
            .post(harness.url("/produce/once"))
            .basic_auth("demo", Some("demo"))
            .header("idempotency-key", "lost-17")
            .body(r#"{"value":"keyed","partition":1}"#)
    };
    let (status, first) = common::json_answer(keyed()).await;
    assert_eq!(status, 504, "{first}");
    assert!(error_of(&first).contains("may or may not"), "{first}");
    assert!(
        error_of(&first).contains("kept for the request's Idempotency-Key: a retry with it gets this answer again"),
        "{first}"
    );
    assert!(proxy.lost(PRODUCE) >= 1);
    proxy.stop_losing(PRODUCE);
    let again = keyed().send().await.expect("retry");
    assert_eq!(again.status(), 504);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    assert_eq!(values(&harness.bootstrap(0), "once", 1).await, ["warm", "keyed"]);
}

/// A handler on a route with `idempotency = true` that fails after its produce was acknowledged: its 500 says a record
/// was written, and a retry with the key gets that answer again instead of running the handler (and writing) again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_function_that_failed_after_writing_replays_its_failure() {
    const WROTE: (&str, &str) = (
        "wrote.lua",
        r#"return function(req)
  kafka.produce{ topic = "once", messages = { { value = req.body, partition = 0 } } }
  error("failed after writing")
end"#,
    );
    let config =
        config("{broker0}", "") + "\n[[routes]]\npath = \"/wrote\"\nfunction = \"wrote.lua\"\nidempotency = true\n";
    let harness = Harness::on_with(Kafka::Apache, 1, &config, &[WROTE]).await;
    let send = || {
        harness
            .http
            .post(harness.url("/wrote"))
            .header("idempotency-key", "hook-11")
            .body("wrote")
            .send()
    };
    let first = send().await.expect("answer");
    assert_eq!(first.status(), 500);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["records_written"], 1, "{first}");
    // Kept for the key, the answer does not say that sending the request again writes the record again.
    let error = first["error"].as_str().unwrap_or_default();
    assert!(
        error.ends_with(
            "1 record of this request was written before it failed; a retry with its Idempotency-Key \
                         writes nothing again"
        ),
        "{error}"
    );
    let again = send().await.expect("retry");
    assert_eq!(again.status(), 500);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    assert_eq!(values(&harness.bootstrap(0), "once", 0).await, ["wrote"]);
}

/// A shared batch that the broker refuses for one caller's record (too large once compressed, which luka cannot
/// check in advance), and whose answer is lost: the batch is in doubt, and its resend is refused the same way. Kafka
/// checks a batch's size before it looks for it among the producer's last batches, so the first send was refused
/// too: the batch is split among its callers as when the answer comes (the others written and answered 200, the
/// offending caller 413), not sent again until its time runs out with every caller answered "may or may not".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_whose_answer_was_lost_fails_only_its_offending_caller() {
    let config = concat!(
        r#"
[server]
max_body_bytes = 2097152
request_timeout_ms = 20000

[clusters.zipped]
bootstrap = ["{broker0:PROXIED}"]
compression = "gzip"
produce_timeout_ms = 8000
# Requests that arrive within 200 ms share a produce request.
linger_ms = 200

[topics.zipped]
"#,
        demo_user!()
    );
    let harness = Harness::on(Kafka::Apache, 1, config).await;
    let bootstrap = harness.bootstrap(0);
    common::read::java_create_topic(&bootstrap, "zipped", 1, &[("max.message.bytes", "50000")]).await;
    let (status, answer) = harness.post("/produce/zipped", r#"{"value":"warm"}"#).await;
    assert_eq!(status, 200, "{answer}");
    harness.proxies[0].lose_answers(PRODUCE, 1);
    let bodies: Vec<String> = (0..10)
        .map(|i| serde_json::json!({ "key": format!("k{i}"), "value": format!("valid-{i}") }).to_string())
        .collect();
    let valid = bodies.iter().map(|body| harness.post("/produce/zipped", body));
    // 150 KB of hex digits of random bytes: about 75 KB gzipped, over the topic's 50,000.
    let bad_body = serde_json::json!({ "key": "k", "value": common::random_hex(75_000) }).to_string();
    let bad = harness.post("/produce/zipped", &bad_body);
    let (answers, (status, answer)) = tokio::join!(futures::future::join_all(valid), bad);
    assert_eq!(
        harness.proxies[0].lost(PRODUCE),
        1,
        "the proxy lost the answer to the shared batch"
    );
    // The warm-up, the shared batch (its answer lost), its resend (refused), then one request per caller: the lost
    // answer was the shared batch's, not that of a batch of valid records only (which its resend would have settled).
    assert!(
        harness.proxies[0].requests(PRODUCE) >= 14,
        "{} produce requests: the batch was not shared and split",
        harness.proxies[0].requests(PRODUCE)
    );
    // The refused shared batch is counted, besides the offending caller's own batch refused after the split.
    let metrics = harness.scrape_metrics().await;
    let refused = ["topic=\"zipped\"", "result=\"rejected\""];
    assert_eq!(
        sample(&metrics, "luka_produce_requests_total", &refused),
        2.0,
        "{metrics}"
    );
    for (i, (status, answer)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "valid request {i} failed with another's record: {answer}");
    }
    assert_eq!(status, 413, "{answer}");
    let written = values(&bootstrap, "zipped", 0).await;
    assert_eq!(
        written.len(),
        11,
        "warm and the ten valid records, once each: {written:?}"
    );
}

/// A batch in doubt (the answers to its first sends lost) whose later send the broker refuses because its timestamp
/// has since left the topic's window (`message.timestamp.before.max.ms`): sending it again cannot change that, and
/// the first send may have been appended. It ends in doubt at once, rather than be sent again until the delivery
/// timeout while the partition's later records wait behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_doubt_refused_for_its_age_ends_at_once() {
    let config = config("{broker0:PROXIED}", "delivery_timeout_ms = 30000")
        .replace("produce_timeout_ms = 1500", "produce_timeout_ms = 6000")
        .replace("request_timeout_ms = 4000", "request_timeout_ms = 10000")
        + "\n[topics.aging]\n";
    let harness = Harness::on(Kafka::Apache, 1, &config).await;
    let bootstrap = harness.bootstrap(0);
    common::read::java_create_topic(&bootstrap, "aging", 1, &[("message.timestamp.before.max.ms", "3000")]).await;
    let (status, answer) = harness.post("/produce/aging", r#"{"value":"warm"}"#).await;
    assert_eq!(status, 200, "{answer}");
    // Sent 1.5 s old (as much to spare), every answer lost until it is past the window; then the broker's answer
    // to the next send comes through: the refusal.
    let proxy = &harness.proxies[0];
    proxy.lose_answers(PRODUCE, usize::MAX / 2);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let body = format!(r#"{{"value":"old","timestamp":{}}}"#, now_ms - 1500);
    let old = harness.post("/produce/aging", &body);
    let answers_again = async {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        proxy.stop_losing(PRODUCE);
    };
    let ((status, answer), ()) = tokio::join!(old, answers_again);
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("may or may not"), "{answer}");
    assert!(proxy.lost(PRODUCE) >= 1);
    let (status, answer) = harness.post("/produce/aging", r#"{"value":"next"}"#).await;
    assert_eq!(
        status, 200,
        "the partition is not held behind the refused batch: {answer}"
    );
    assert_eq!(values(&bootstrap, "aging", 0).await, ["warm", "old", "next"]);
}

/// A handler that catches an in-doubt produce (paused broker) and then fails on a cluster that is down is not
/// answered 503, which says nothing was written and invites a retry: its answer says records may have been.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_fails_after_a_produce_in_doubt_says_so() {
    const DOUBT: (&str, &str) = (
        "doubt.lua",
        r#"return function(req)
  local ok, err = pcall(kafka.produce, { topic = "once", messages = { { value = "doubt", partition = 0 } } })
  assert(not ok and string.find(err, "did not acknowledge", 1, true), tostring(err))
  kafka.produce{ cluster = "down", topic = "gone", messages = { { value = "x" } } }
  return { json = { unreachable = true } }
end"#,
    );
    let config = config("{broker0}", "default = true")
        .replace("timeout_ms = 3000", "timeout_ms = 10000")
        .replace("request_timeout_ms = 4000", "request_timeout_ms = 15000")
        + "\n[clusters.down]\nbootstrap = [\"127.0.0.1:1\"]\n[topics.gone]\ncluster = \"down\"\n"
        + "\n[[routes]]\npath = \"/doubt\"\nfunction = \"doubt.lua\"\n";
    let harness = Harness::on_with(Kafka::Apache, 1, &config, &[DOUBT]).await;
    let (status, _) = harness.post("/produce/once", r#"{"value":"warm","partition":0}"#).await;
    assert_eq!(status, 200);
    harness.brokers[0].apache().signal("pause", 1).await;
    let response = harness
        .http
        .post(harness.url("/doubt"))
        .body("{}")
        .send()
        .await
        .expect("answer");
    harness.brokers[0].apache().signal("resume", 1).await;
    let status = response.status();
    assert!(response.headers().get("retry-after").is_none());
    let answer: Value = response.json().await.expect("json");
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["records_in_doubt"], true, "{answer}");
    assert!(
        error_of(&answer).contains("may or may not have been written"),
        "{answer}"
    );
}

/// A keyed webhook: writes its body to `once` partition 1 and answers the offset.
const KEYED: (&str, &str) = (
    "keyed.lua",
    r#"return function(req)
  local r = kafka.produce{ topic = "once", messages = { { value = req.body, partition = 1 } } }
  return { json = { offset = r.offset } }
end"#,
);

/// A Lua function on a route with `idempotency = true`, paused broker: its handler's time limit (`[lua] timeout_ms`)
/// passes while its produce waits for the real outcome. The produce is not dropped nor the key given up there (a
/// retry would run the handler again and write a second copy): the request runs on, the key stays taken (409), and
/// once the broker is back the handler answers with its offset, which a retry gets replayed. The record is in the
/// log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_function_past_its_time_limit_keeps_its_key_until_the_outcome() {
    let config =
        config("{broker0}", "") + "\n[[routes]]\npath = \"/keyed\"\nfunction = \"keyed.lua\"\nidempotency = true\n";
    let harness = Harness::on_with(Kafka::Apache, 1, &config, &[KEYED]).await;
    let (status, _) = harness.post("/produce/once", r#"{"value":"warm","partition":1}"#).await;
    assert_eq!(status, 200);
    let keyed = || {
        harness
            .http
            .post(harness.url("/keyed"))
            .header("idempotency-key", "hook-9")
            .body("keyed")
    };
    harness.brokers[0].apache().signal("pause", 1).await;
    let (status, answer) = common::json_answer(keyed()).await;
    assert_eq!(status, 504, "{answer}");
    assert!(
        error_of(&answer).contains("Idempotency-Key"),
        "the request's own time ran out, not the handler's: {answer}"
    );
    let (status, answer) = common::json_answer(keyed()).await;
    assert_eq!(status, 409, "the key is held while the outcome is unknown: {answer}");

    harness.brokers[0].apache().signal("resume", 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let replayed = loop {
        let response = keyed().send().await.expect("retry");
        if response.status() != 409 {
            break response;
        }
        assert!(Instant::now() < deadline, "no outcome 30 s after the broker came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let answer: Value = replayed.json().await.expect("json");
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_eq!(values(&harness.bootstrap(0), "once", 1).await, ["warm", "keyed"]);
}

/// The same past the time limit with the produce already finished: the keyed handler's VM (one) is held by another
/// request's long turn when its produce's outcome comes in and when its time limit passes. The outcome is still handed
/// to the handler, which answers 200; the key is not given up with the record written.
// Four workers: the busy turn blocks one, and the tasks that finish the produce must run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_function_whose_produce_finished_while_its_vm_was_busy_answers_it() {
    const BUSY: (&str, &str) = (
        "busy.lua",
        "return function(req) local t = os.clock() while os.clock() - t < 2.5 do end return { json = { ok = true } } end",
    );
    let config = config("{broker0}", "")
        .replace("timeout_ms = 3000", "timeout_ms = 1500\nvms = 1\ncpu_ms = 5000")
        .replace("request_timeout_ms = 4000", "request_timeout_ms = 10000")
        + "\n[[routes]]\npath = \"/keyed\"\nfunction = \"keyed.lua\"\nidempotency = true\n"
        + "\n[[routes]]\npath = \"/busy\"\nfunction = \"busy.lua\"\n";
    let harness = Harness::on_with(Kafka::Apache, 1, &config, &[KEYED, BUSY]).await;
    let (status, _) = harness.post("/produce/once", r#"{"value":"warm","partition":1}"#).await;
    assert_eq!(status, 200);
    let kafka = harness.brokers[0].apache();
    kafka.signal("pause", 1).await;
    let keyed = harness
        .http
        .post(harness.url("/keyed"))
        .header("idempotency-key", "hook-10")
        .body("keyed")
        .send();
    let busy_then_resume = async {
        // The keyed handler parks on its produce; then the VM's one turn runs for 2.5 s, and the broker resumes
        // during it: the produce finishes while the VM is held, past the keyed handler's 1.5 s.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let busy = harness.http.post(harness.url("/busy")).body("{}").send();
        let resume = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            kafka.signal("resume", 1).await;
        };
        let (busy, ()) = tokio::join!(busy, resume);
        busy.expect("busy answer").status()
    };
    let (keyed, busy) = tokio::join!(keyed, busy_then_resume);
    assert_eq!(busy, 200);
    let keyed = keyed.expect("keyed answer");
    let status = keyed.status();
    let answer: Value = keyed.json().await.expect("json");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_eq!(values(&harness.bootstrap(0), "once", 1).await, ["warm", "keyed"]);
}

/// The broker paused (SIGSTOP) for six seconds under steady load and resumed: every answer stays true. Records
/// answered 200 are in the log once, records answered with a definite failure (503, 504 "nothing was written") are
/// not in it, and none is there twice; records in doubt may be either.
///
/// Why six: a request waits at most about 2.3 s here (`produce_timeout_ms` and the writer's look at its deadline).
/// The requests in flight when the pause begins are answered in doubt; the next ones wait behind their batch, unsent,
/// and are told nothing was written, but only if the pause outlasts them: two such rounds must fit in it wherever it
/// begins (with four seconds, a run whose second round ended just after the resume saw no definite failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_under_load_gets_only_true_answers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use common::load::{WRITE_FUNCTION, check_answers, load, read_all};

    let config = config("{broker0}", "") + "\n[[routes]]\npath = \"/lua\"\nfunction = \"write.lua\"\n";
    let harness = Arc::new(Harness::on_with(Kafka::Apache, 1, &config, &[WRITE_FUNCTION]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn(load(Arc::clone(&harness), "once", 1, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kafka = harness.brokers[0].apache();
    kafka.signal("pause", 1).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    kafka.signal("resume", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = writers.await.expect("load");
    // In-doubt batches are resent until the broker answers them: give them time to land before reading.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let found = read_all(&harness.bootstrap(0), "once", 2).await;
    assert!(
        outcomes.iter().any(|o| o.is_definite_failure()),
        "the pause was long enough for some requests to be told nothing was written"
    );
    check_answers(&outcomes, &found);
}
