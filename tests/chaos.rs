//! Chaos on three Apache Kafka nodes (replication factor 3, `min.insync.replicas` 2), bounded in time, on
//! 127.0.0.1 only. Steady load through REST and a Lua function on several partitions, keyed and not, while nodes
//! fail: the leader of a busy partition is SIGKILLed and restarted, another node shut down with SIGTERM
//! (controlled shutdown) and restarted, a preferred leader election runs, and two nodes are killed at once and
//! brought back. Then every partition is read with the Java client, and: every acknowledged record is there exactly
//! once, where its answer said; no record is there twice; each writer's keyed records are in its own order; no
//! record answered with a definite failure is there; nothing is acknowledged while two nodes are down. The longest
//! gap in successful answers after the single leader kill is printed.
//!
//! `LUKA_CHAOS_ROUNDS=N cargo test --test chaos -- --nocapture` repeats the campaign N times (default 1).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Harness;
use common::kafka::Kafka;
use common::load::{Outcome, WRITE_FUNCTION, WRITERS, check_answers, load, read_all};
use common::read::{high_watermark, java_create_topic, java_elect_preferred, java_leaders};
use serde_json::Value;

const PARTITIONS: i32 = 6;

const CONFIG: &str = concat!(
    r#"
[server]
request_timeout_ms = 20000

[lua]
timeout_ms = 15000

[clusters.main]
bootstrap = ["{broker0}"]
produce_timeout_ms = 6000

[topics.chaos]
partitions = 6
replication_factor = 3

[topics.guarded]

[[routes]]
path = "/lua"
function = "write.lua"
"#,
    demo_user!()
);

/// Marks in time of the campaign, for the checks.
#[derive(Debug, Default)]
struct Marks {
    leader_killed: Option<Instant>,
    two_down: Option<(Instant, Instant)>,
}

async fn campaign(h: &Harness, marks: &Mutex<Marks>) {
    let kafka = h.brokers[0].apache();
    let bootstrap = h.bootstrap(0);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The leader of writer 0's partition (the busiest: keyed writers each keep to one).
    let leaders = java_leaders(&bootstrap, "chaos").await;
    let partition = luka::produce::partitioner::partition_for_key(b"writer-0", PARTITIONS) as usize;
    let leader = leaders[partition] as usize;
    println!("chaos: SIGKILL node {leader}, leader of partition {partition} (leaders {leaders:?})");
    kafka.signal("kill", leader).await;
    marks.lock().unwrap().leader_killed = Some(Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    kafka.signal("restart", leader).await;
    tokio::time::sleep(Duration::from_secs(8)).await;

    let other = if leader == 1 { 2 } else { 1 };
    println!("chaos: SIGTERM node {other} (controlled shutdown)");
    kafka.signal("term", other).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.signal("restart", other).await;
    tokio::time::sleep(Duration::from_secs(8)).await;

    let elected = java_elect_preferred(&bootstrap, "chaos").await;
    println!("chaos: preferred leader election moved {elected} partitions");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (a, b) = (1 + leader % 3, 1 + (leader + 1) % 3);
    println!("chaos: SIGKILL nodes {a} and {b} at once");
    tokio::join!(kafka.signal("kill", a), kafka.signal("kill", b));
    let down = Instant::now();
    // Long enough for requests sent meanwhile (after one in flight at the kill has timed out) to be answered before
    // the nodes return.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let up = Instant::now();
    tokio::join!(kafka.signal("restart", a), kafka.signal("restart", b));
    marks.lock().unwrap().two_down = Some((down, up));
    tokio::time::sleep(Duration::from_secs(10)).await;
}

fn check(round: usize, outcomes: &[Outcome], found: &HashMap<String, Vec<(i32, i64)>>, marks: &Marks) {
    check_answers(outcomes, found);
    // Each keyed writer's records are in one partition, in the order it sent them.
    for writer in WRITERS.iter().filter(|w| w.keyed) {
        let prefix = writer.prefix(round);
        let mut placed: Vec<(i32, i64, &str)> = found
            .iter()
            .filter(|(value, _)| value.starts_with(&prefix))
            .map(|(value, at)| (at[0].0, at[0].1, value.as_str()))
            .collect();
        placed.sort();
        let partitions: std::collections::HashSet<i32> = placed.iter().map(|p| p.0).collect();
        assert!(partitions.len() <= 1, "writer {} spread over {partitions:?}", writer.id);
        let values: Vec<&str> = placed.iter().map(|p| p.2).collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "writer {}'s records out of order", writer.id);
    }
    // Nothing acknowledged while two of three nodes were down (sent after the kill, answered before the restart).
    if let Some((down, up)) = marks.two_down {
        let acknowledged: Vec<_> = outcomes
            .iter()
            .filter(|o| o.sent >= down && o.answered <= up && o.status == 200)
            .collect();
        assert!(
            acknowledged.is_empty(),
            "acknowledged with two nodes down: {acknowledged:?}"
        );
        let refused: HashMap<u16, usize> =
            outcomes
                .iter()
                .filter(|o| o.sent >= down && o.answered <= up)
                .fold(HashMap::new(), |mut counts, o| {
                    *counts.entry(o.status).or_default() += 1;
                    counts
                });
        println!("chaos: with two nodes down, answers by status {refused:?}");
    }
    // The longest wait for a successful answer after the leader kill.
    if let Some(killed) = marks.leader_killed {
        let mut successes: Vec<Instant> = outcomes
            .iter()
            .filter(|o| o.status == 200 && o.answered >= killed)
            .map(|o| o.answered)
            .collect();
        successes.sort();
        let window_end = killed + Duration::from_secs(14);
        let mut last = killed;
        let mut longest = Duration::ZERO;
        for at in successes.into_iter().filter(|at| *at <= window_end) {
            longest = longest.max(at - last);
            last = at;
        }
        println!("chaos: longest gap in successful answers after the leader kill: {longest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_nothing_doubled_on_three_nodes() {
    let rounds: usize = std::env::var("LUKA_CHAOS_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let h = Arc::new(Harness::on_with(Kafka::ApacheCluster, 1, CONFIG, &[WRITE_FUNCTION]).await);
    for round in 1..=rounds {
        println!("chaos: round {round} of {rounds}");
        let marks = Mutex::new(Marks::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writers = tokio::spawn(load(Arc::clone(&h), "chaos", round, Arc::clone(&stop)));
        campaign(&h, &marks).await;
        stop.store(true, Ordering::Relaxed);
        let outcomes = writers.await.expect("load");
        let found = read_all(&h.bootstrap(0), "chaos", PARTITIONS).await;
        check(round, &outcomes, &found, &marks.into_inner().unwrap());
    }
    too_few_in_sync_replicas_is_a_quick_503(&h).await;
}

/// A topic that needs all three replicas in sync (`min.insync.replicas` 3): with one node down its partition has too
/// few, the broker refuses writes with NOT_ENOUGH_REPLICAS, and luka answers at once with 503 and `Retry-After`;
/// nothing is written. A write sent as the node dies waits for its replica and is answered in doubt; its batch is
/// given up at the first refusal for too few replicas (sending it again would be refused as long as the node is
/// away), so the writes after it are refused at once rather than held behind it until the delivery timeout.
async fn too_few_in_sync_replicas_is_a_quick_503(h: &Harness) {
    let bootstrap = h.bootstrap(0);
    java_create_topic(&bootstrap, "guarded", 1, &[("min.insync.replicas", "3")]).await;
    let (status, answer) = h.post("/produce/guarded", r#"{"value":"all-in-sync"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let leader = java_leaders(&bootstrap, "guarded").await[0] as usize;
    let follower = 1 + leader % 3;
    let kafka = h.brokers[0].apache();
    kafka.signal("kill", follower).await;
    // Before the controller fences the node (the brokers' session timeout, 3 s), the leader appends and waits for it.
    let (status, answer) = h.post("/produce/guarded", r#"{"value":"in-doubt"}"#).await;
    assert!(
        status == 504 && common::error_of(&answer).contains("may or may not")
            || status == 503 && common::error_of(&answer).contains("too few in-sync replicas"),
        "{status} {answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, answer, took) = loop {
        let started = Instant::now();
        let response = h
            .http
            .post(h.url("/produce/guarded"))
            .basic_auth("demo", Some("demo"))
            .body(r#"{"value":"too-few"}"#)
            .send()
            .await
            .expect("request");
        let took = started.elapsed();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let answer: Value = response.json().await.expect("json");
        if status == 503 && common::error_of(&answer).contains("too few in-sync replicas") || Instant::now() > deadline
        {
            assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"), "{answer}");
            break (status, answer, took);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    kafka.signal("restart", follower).await;
    assert_eq!(status, 503, "{answer}");
    assert!(common::error_of(&answer).contains("nothing was written"), "{answer}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // The refused writes are not in the log; the one in doubt may be (the leader appended it).
    let written = high_watermark(&bootstrap, "guarded", 0).await;
    assert!(
        (1..=2).contains(&written),
        "the first record, and perhaps the one in doubt: {written}"
    );
}
