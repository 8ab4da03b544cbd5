//! AsyncAPI documents as the source of clusters, topics and schemas: the seed document serving a working topic,
//! and config.toml overriding it.

mod common;

use common::Harness;
use common::read::{assert_no_record, read_records};
use serde_json::Value;

/// `seeds/000_*`'s kafka.yaml, as written there.
const SEED_ASYNCAPI: &str = include_str!("fixtures/kafka.yaml");

/// The seed's kafka.js, in Lua.
const SEED_PRODUCE: &str = r#"
return function(req)
  local r = kafka.produce{ topic = "orders", messages = {
    { key = "foo-1", data = { foo = "bar-1" } },
    { key = "foo-2", value = "hello mokapi" },
    {},
  } }
  local ok, err = pcall(kafka.produce, { topic = "orders", messages = { { data = { foo = 1 } } } })
  return { json = { cluster = r.cluster, offset = r.offset, error = err } }
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_asyncapi_document_declares_a_working_topic() {
    // The document names server `mokapi` at localhost:9092; config.toml points that cluster at the test broker.
    let config = "asyncapi = \"kafka.yaml\"\n\n[clusters.mokapi]\nbootstrap = [\"{broker0}\"]\n";
    let h = Harness::start_with(
        1,
        config,
        &[("../kafka.yaml", SEED_ASYNCAPI), ("seed.lua", SEED_PRODUCE)],
    )
    .await;
    let answer: Value = h.http.get(h.url("/seed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (answer["cluster"].as_str(), answer["offset"].as_i64()),
        (Some("mokapi"), Some(0)),
        "{answer}"
    );
    assert_eq!(
        answer["error"],
        "kafka.produce: message 1 of topic 'orders' is invalid: /foo: 1 is not of type \"string\""
    );
    let records = read_records(&h.bootstrap(0), "orders", 0, 0, 3).await;
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"foo":"bar-1"}"#[..]));
    assert_eq!(records[1].value.as_deref(), Some(&b"hello mokapi"[..]));
    let random: Value = serde_json::from_slice(records[2].value.as_ref().unwrap()).unwrap();
    assert!(
        random.is_object() && random.get("foo").is_none_or(Value::is_string),
        "{random}"
    );
    assert_no_record(&h.bootstrap(0), "orders", 0, 3).await;
}

#[test]
fn asyncapi_servers_become_clusters_unless_config_defines_them() {
    let dir = common::temp_dir();
    std::fs::write(dir.join("kafka.yaml"), SEED_ASYNCAPI).unwrap();
    let config = luka::config::Config::from_toml("asyncapi = [\"kafka.yaml\"]\n", &dir, |_| None).unwrap();
    assert_eq!(config.clusters["mokapi"].bootstrap, vec!["localhost:9092".to_owned()]);
    let orders = &config.topics[0];
    assert_eq!((orders.pattern.as_str(), orders.cluster.as_str()), ("orders", "mokapi"));
    assert!(orders.value_schema.is_some());

    // config.toml wins over the document, and a broken document names the asyncapi line.
    let own = "asyncapi = \"kafka.yaml\"\n[clusters.mokapi]\nbootstrap = [\"10.0.0.1:9092\"]\n[topics.orders]\ncluster = \"mokapi\"\n";
    let config = luka::config::Config::from_toml(own, &dir, |_| None).unwrap();
    assert_eq!(config.clusters["mokapi"].bootstrap, vec!["10.0.0.1:9092".to_owned()]);
    assert!(config.topics[0].value_schema.is_none());
    std::fs::write(
        dir.join("broken.yaml"),
        "asyncapi: 2.0.0\nchannels: { a: { publish: { message: { $ref: '#/x' } } } }",
    )
    .unwrap();
    let problems = luka::config::Config::from_toml("\nasyncapi = \"broken.yaml\"\n", &dir, |_| None).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].to_string().starts_with("line 2: asyncapi: "),
        "{}",
        problems[0]
    );
    assert!(problems[0].to_string().contains("points nowhere"), "{}", problems[0]);
}
