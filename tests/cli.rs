//! The `luka` binary itself: `check`, `--help`, and serving a config with an embedded broker.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::read::{read_records, text};

const LUKA: &str = env!("CARGO_BIN_EXE_luka");

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(LUKA)
        .args(["check", "--config", "config.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_lists_every_problem_with_its_line() {
    let dir = common::temp_dir();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[clusters.a]\nbootstrap = [\"h:1\"]\n\n[topics.t]\ncluster = \"b\"\n\n[topics.\"x y\"]\n\n[[users]]\nname = \"u\"\npassword = \"${LUKA_SURELY_UNSET}\"\ntopics = []\n",
    )
    .unwrap();
    let stderr = failed_check(&path);
    assert!(
        stderr.contains("bad.toml:line 11: environment variable LUKA_SURELY_UNSET is not set"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "[clusters.a]\nbootstrap = [\"h:1\"]\n\n[topics.t]\ncluster = \"b\"\n\n[topics.\"x y\"]\n",
    )
    .unwrap();
    let stderr = failed_check(&path);
    assert!(stderr.starts_with("2 problems in"), "{stderr}");
    assert!(
        stderr.contains("line 5: [topics.\"t\"] names cluster 'b', which is not defined"),
        "{stderr}"
    );
    assert!(stderr.contains("line 7: [topics.\"x y\"]"), "{stderr}");

    let stderr = failed_check(std::path::Path::new("/nonexistent/luka.toml"));
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[test]
fn check_reports_every_problem_of_every_kind_in_one_run() {
    let dir = common::temp_dir();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nmax_conections = 5\nmax_body_bytes = \"big\"\nmax_connections = 0\n\
         [clusters.a]\nbootstrap = [\"h:1\"]\nlinger_ms = -1\n\
         [topics.t]\npartitions = 3\ncolour = \"red\"\n\
         [[users]]\nname = \"u\"\npassword = \"${LUKA_SURELY_UNSET}\"\ntopics = []\n",
    )
    .unwrap();
    let stderr = failed_check(&path);
    assert!(stderr.starts_with("6 problems in"), "{stderr}");
    for expected in [
        "line 2: unknown field `max_conections`",
        "line 3: invalid type: string \"big\"",
        "[server] max_connections must be greater than 0",
        "line 7: invalid value: integer `-1`",
        "line 10: unknown field `colour`",
        "line 13: environment variable LUKA_SURELY_UNSET is not set",
    ] {
        assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
    }
}

#[test]
fn check_compiles_every_function_and_checks_routes() {
    let dir = common::temp_dir();
    std::fs::create_dir_all(dir.join("functions/hooks")).unwrap();
    std::fs::write(dir.join("functions/ok.lua"), "return function() return 'ok' end").unwrap();
    std::fs::write(
        dir.join("functions/hooks/broken.lua"),
        "return function(req)\n  if then\nend",
    )
    .unwrap();
    let path = dir.join("luka.toml");
    std::fs::write(&path, "[[routes]]\npath = \"/x\"\nfunction = \"ok.lua\"\n").unwrap();
    let stderr = failed_check(&path);
    assert!(stderr.contains("functions/hooks/broken.lua:2:"), "{stderr}");

    std::fs::remove_file(dir.join("functions/hooks/broken.lua")).unwrap();
    let out = Command::new(LUKA)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 functions, 1 routes"));

    std::fs::write(&path, "[[routes]]\npath = \"/x\"\nfunction = \"missing.lua\"\n").unwrap();
    let stderr = failed_check(&path);
    assert!(
        stderr.contains("line 3: [[routes]] function 'missing.lua' not found"),
        "{stderr}"
    );

    // Names the file system finds but no function has: the route would serve nothing, and the file would be served
    // at its own path without the route's auth.
    std::fs::write(
        dir.join("functions/hooks/github.lua"),
        "return function() return 'ok' end",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("functions/.hidden")).unwrap();
    std::fs::write(
        dir.join("functions/.hidden/github.lua"),
        "return function() return 'ok' end",
    )
    .unwrap();
    for name in ["hooks//github.lua", "hooks/./github.lua", ".hidden/github.lua"] {
        let route = format!("[[routes]]\npath = \"/x\"\nfunction = \"{name}\"\n");
        std::fs::write(&path, route).unwrap();
        let stderr = failed_check(&path);
        assert!(stderr.contains("named as it is there"), "{name}: {stderr}");
    }
    // A file behind a symlinked folder, which the folder's scan does not follow.
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    std::fs::write(dir.join("elsewhere/a.lua"), "return function() return 'ok' end").unwrap();
    std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join("functions/linked")).unwrap();
    std::fs::write(&path, "[[routes]]\npath = \"/x\"\nfunction = \"linked/a.lua\"\n").unwrap();
    let stderr = failed_check(&path);
    assert!(
        stderr.contains("path '/x' names linked/a.lua, which is not among the functions"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_examples() {
    for example in ["multi-cluster", "event-generator", "github-webhook"] {
        let config = format!("examples/{example}/config.toml");
        let out = Command::new(LUKA)
            .args(["check", "--config", &config])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_generator_example_writes_schema_valid_events() {
    let dir = common::temp_dir();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/event-generator");
    for sub in ["schemas", "functions"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(example.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    let example_config = std::fs::read_to_string(example.join("config.toml")).unwrap();
    let luka = Binary::serve(&dir, |http, broker| {
        example_config
            .replace("127.0.0.1:8080", &http.to_string())
            .replace("127.0.0.1:9092", &broker.to_string())
    })
    .await;
    let (http, broker) = (luka.http, luka.broker);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer: serde_json::Value = loop {
        let response = client
            .get(format!("http://{http}/generate?topic=orders&n=5"))
            .send()
            .await;
        if let Some(response) = response.ok().filter(|r| r.status() == 200) {
            break response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the example did not serve /generate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The README's largest request: 1,000 events in one call fits the example's CPU budget.
    let readings = client
        .get(format!("http://{http}/generate?topic=readings&n=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(readings.status(), 200, "{:?}", readings.text().await);
    let schema = luka::schema::Schema::load(&dir.join("schemas/order.json")).unwrap();
    assert!(schema.violations(&answer["sample"]).is_empty(), "{answer}");
    // Read each partition from its start (a fetch from the middle of a batch finds nothing on the embedded broker).
    let written = answer["written"].as_array().unwrap();
    for partition in 0..4 {
        let on_partition: Vec<&serde_json::Value> = written.iter().filter(|w| w["partition"] == partition).collect();
        let records = read_records(&broker.to_string(), "orders", partition, 0, on_partition.len()).await;
        for (record, reported) in records.iter().zip(on_partition) {
            let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
            assert_eq!(reported["key"], key.as_str());
            assert!(key.starts_with("ord-") && key.len() == 10, "{key}");
            let value: serde_json::Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
            assert_eq!(schema.violations(&value), Vec::<String>::new(), "{value}");
        }
    }
}

#[test]
fn help_explains_each_command() {
    let out = Command::new(LUKA).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "check", "broker", "--config", "--listen"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_config_with_an_embedded_broker() {
    let dir = common::temp_dir();
    let shipped = std::fs::read_to_string("config.toml").unwrap();
    let functions = concat!(env!("CARGO_MANIFEST_DIR"), "/functions");
    let luka = Binary::serve(&dir, |http, broker| {
        shipped
            .replace("127.0.0.1:8080", &http.to_string())
            .replace("127.0.0.1:9092", &broker.to_string())
            .replace("functions = \"functions\"", &format!("functions = \"{functions}\""))
    })
    .await;
    let (http, broker) = (luka.http, luka.broker);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("http://{http}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "luka did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client
        .post(format!("http://{http}/produce/cities"))
        .basic_auth("demo", Some("demo"))
        .body(r#"{"partition": 1, "key": "city", "value": "Istanbul"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    let records = read_records(
        &broker.to_string(),
        "cities",
        1,
        answer[0]["offset"].as_i64().unwrap(),
        1,
    )
    .await;
    assert_eq!(text(&records[0]), (Some("city".into()), Some("Istanbul".into())));

    // The shipped random event generator, at its largest request.
    let events = client
        .get(format!("http://{http}/events/random?n=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(
        events
            .json::<serde_json::Value>()
            .await
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(100)
    );

    // The shipped order function: data written as JSON, keyed by the order id.
    let response = client
        .post(format!("http://{http}/orders"))
        .body(r#"{"id": "o-1", "item": "book", "quantity": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["id"], "o-1");
    let partition = answer["partition"].as_i64().unwrap() as i32;
    let records = read_records(
        &broker.to_string(),
        "orders",
        partition,
        answer["offset"].as_i64().unwrap(),
        1,
    )
    .await;
    let order: serde_json::Value = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(records[0].key.as_deref(), Some(&b"o-1"[..]));
    assert_eq!(
        (order["item"].as_str(), order["quantity"].as_i64()),
        (Some("book"), Some(2))
    );
    // Valid JSON that is not an order object is the client's mistake, not a server error.
    for body in ["null", "5", "\"text\"", "[1]"] {
        let response = client
            .post(format!("http://{http}/orders"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
    }
    // The embedded broker's log grows in this process: its memory is kept off huge pages (see the next test).
    assert!(
        !luka.huge_pages_enabled(),
        "luka serving an embedded broker runs with transparent huge pages"
    );
    // Requests that went as they should leave no error in the log, the development broker's included (it logged
    // one for every topic luka asked the configs of, until luka stopped naming them).
    let logged = luka.stop_and_read_log().await;
    let errors: Vec<&str> = logged.lines().filter(|line| line.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors in the log:\n{}", errors.join("\n"));
}

/// `luka broker` keeps its log in memory, growing with every record; on transparent huge pages each step of that
/// growth zeroed 2 MiB inside a produce request (bursts of 2-5 ms, the webhook benchmark's p99: bench/README.md,
/// point 27). The host here allows them (`madvise`, which mimalloc uses), so the process must turn them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_broker_runs_without_transparent_huge_pages() {
    let dir = common::temp_dir();
    let broker = Binary::broker(&dir).await;
    assert!(!broker.huge_pages_enabled(), "luka broker:\n{}", broker.log());
}

/// Runs `luka check` on a config that must fail; gives what it printed on stderr.
fn failed_check(path: &std::path::Path) -> String {
    let out = Command::new(LUKA)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "luka check accepted {}", path.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
