//! `/metrics` stays bounded however many topics writers name: past `[metrics] max_topic_series` topics, records are
//! counted under `topic="_other"`, but for the topics config.toml names exactly, which names callers choose cannot
//! crowd out. (Its own test binary: the metrics are the process's.)

mod common;

use common::Harness;

const CONFIG: &str = concat!(
    r#"
[metrics]
max_topic_series = 2

[clusters.local]
bootstrap = ["{broker0}"]

[topics."events.*"]
partitions = 1

[topics.orders]
partitions = 1
"#,
    demo_user!()
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_series_are_capped() {
    let h = Harness::start(1, CONFIG).await;
    for topic in ["events.a", "events.b", "events.c", "events.d"] {
        let (status, answer) = h.post(&format!("/produce/{topic}"), r#"{"value":"x"}"#).await;
        assert_eq!(status, 200, "{answer}");
    }
    let scrape = h.scrape_metrics().await;
    let ok_series: Vec<&str> = scrape
        .lines()
        .filter(|line| line.starts_with("luka_records_total{") && line.contains("result=\"ok\""))
        .collect();
    let topics: Vec<&str> = ok_series
        .iter()
        .filter_map(|line| line.split("topic=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(topics.len(), 3, "two topics and the rest: {ok_series:?}");
    assert!(topics.contains(&"_other"), "{ok_series:?}");
    let other = ok_series.iter().find(|line| line.contains("topic=\"_other\"")).unwrap();
    assert!(other.ends_with(" 2"), "the last two topics' records: {other}");

    // A configured topic written after the cap is full still has its own series.
    let (status, answer) = h.post("/produce/orders", r#"{"value":"x"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let scrape = h.scrape_metrics().await;
    assert!(
        scrape
            .lines()
            .any(|line| line.starts_with("luka_records_total{") && line.contains("topic=\"orders\"")),
        "{scrape}"
    );
}
