//! `luka test`: the shipped functions' and the examples' test files pass through the real binary, and a failing
//! test, a file that does not load, a filter and a project without tests each give the report and exit code a CI
//! job relies on.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kafka::ApacheKafka;

const LUKA: &str = env!("CARGO_BIN_EXE_luka");

fn luka_test(config: &Path, args: &[&str]) -> (bool, String, String) {
    let Output { status, stdout, stderr } = Command::new(LUKA)
        .arg("--config")
        .arg(config)
        .arg("test")
        .args(args)
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .output()
        .expect("run luka test");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    (status.success(), stdout, stderr)
}

/// The `N passed, M failed` line's numbers.
fn counts(report: &str) -> (usize, usize) {
    let last = report.lines().last().unwrap_or_default();
    let numbers: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        last.contains(" passed, ") && last.contains(" failed"),
        "no summary line in:\n{report}"
    );
    (numbers[0], numbers[1])
}

#[test]
fn the_shipped_functions_and_the_examples_pass_their_tests() {
    for (config, at_least) in [
        ("config.toml", 12),
        ("examples/event-generator/config.toml", 3),
        ("examples/multi-cluster/config.toml", 4),
        ("examples/github-webhook/config.toml", 4),
    ] {
        let (ok, out, err) = luka_test(Path::new(config), &[]);
        assert!(ok, "{config}:\n{out}\n{err}");
        let (passed, failed) = counts(&out);
        assert_eq!(failed, 0, "{out}");
        assert!(passed >= at_least, "{config}: only {passed} tests ran:\n{out}");
    }
}

/// `luka test --config-clusters` writes to the clusters the config names: here each cluster of the shipped config
/// and the examples points at its own Apache Kafka node, and every function test passes, read-back included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_functions_and_the_examples_pass_their_tests_on_apache_kafka() {
    for (config, at_least) in [
        ("config.toml", 12),
        ("examples/event-generator/config.toml", 3),
        ("examples/multi-cluster/config.toml", 4),
        ("examples/github-webhook/config.toml", 4),
    ] {
        let text = std::fs::read_to_string(config).unwrap();
        let ports = ["127.0.0.1:9092", "127.0.0.1:9093"];
        let used: Vec<&str> = ports
            .into_iter()
            .filter(|p| text.contains(&format!("\"{p}\"")))
            .collect();
        let nodes = futures::future::join_all(used.iter().map(|_| ApacheKafka::start(1))).await;
        let mut text: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("embedded = true"))
            .map(|line| format!("{line}\n"))
            .collect();
        for (port, node) in used.iter().zip(&nodes) {
            text = text.replace(&format!("\"{port}\""), &format!("\"{}\"", node.bootstrap()));
        }
        // Beside the original, so that its relative paths (functions, schemas, tests) hold.
        let path = Path::new(config).with_file_name(format!(".apache-{}.toml", std::process::id()));
        let _remove = RemoveOnDrop(path.clone());
        std::fs::write(&path, text).unwrap();
        let (ok, out, err) = tokio::task::spawn_blocking(move || luka_test(&path, &["--config-clusters"]))
            .await
            .unwrap();
        assert!(ok, "{config} on Apache Kafka:\n{out}\n{err}");
        let (passed, failed) = counts(&out);
        assert_eq!(failed, 0, "{out}");
        assert!(passed >= at_least, "{config}: only {passed} tests ran:\n{out}");
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const CONFIG: &str = r#"
[clusters.local]
bootstrap = ["127.0.0.1:1"]   # never contacted: the run starts its own broker

[topics.notes]
partitions = 1
"#;

const NOTE: &str = r#"
return function(req)
  local r = kafka.produce{ topic = "notes", messages = { { key = "k", value = req.body } } }
  return { status = 201, json = { offset = r.offset } }
end
"#;

const NOTE_TEST: &str = r#"
test("a note is written", function()
  local res = send{ method = "POST", path = "/note", body = "hello" }
  eq(res.status, 201)
  eq(res.records[1].value, "hello")
end)

test("a wrong expectation fails with a diff", function()
  local res = send{ method = "POST", path = "/note", body = "hello" }
  eq({ status = res.status, key = res.records[1].key }, { status = 201, key = "other" })
end)
"#;

/// A folder with config.toml and `files` under functions/ (removed when the first value is dropped); gives the
/// config's path.
fn project(files: &[(&str, &str)]) -> (common::TestDir, PathBuf) {
    let dir = common::temp_dir();
    std::fs::write(dir.join("config.toml"), CONFIG).unwrap();
    for (name, source) in files {
        common::write_function(&dir, name, source);
    }
    let config = dir.join("config.toml");
    (dir, config)
}

#[test]
fn a_failing_test_fails_the_run_with_a_readable_diff() {
    let (_dir, config) = project(&[("note.lua", NOTE), ("note_test.lua", NOTE_TEST)]);
    let (ok, out, _) = luka_test(&config, &[]);
    assert!(!ok, "a failing test must fail the run:\n{out}");
    assert_eq!(counts(&out), (1, 1), "{out}");
    assert!(out.contains("  ok    a note is written"), "{out}");
    assert!(out.contains("  FAIL  a wrong expectation fails with a diff"), "{out}");
    assert!(
        out.contains("note_test.lua:10: values differ"),
        "the failure names file and line:\n{out}"
    );
    assert!(
        out.contains(r#"key: expected "other", got "k""#),
        "the diff names the path and both values:\n{out}"
    );

    // The filter runs only the matching tests.
    let (ok, out, _) = luka_test(&config, &["--filter", "is written"]);
    assert!(ok, "{out}");
    assert!(out.ends_with("1 passed, 0 failed (1 filtered out)\n"), "{out}");
}

#[test]
fn a_test_file_that_does_not_load_counts_as_a_failure() {
    let (_dir, config) = project(&[("note.lua", NOTE), ("broken_test.lua", "test('x', function() end")]);
    let (ok, out, _) = luka_test(&config, &[]);
    assert!(!ok);
    assert!(out.contains("FAIL (the file does not load)"), "{out}");
    assert_eq!(counts(&out), (0, 1));
}

#[test]
fn test_files_are_not_served_and_a_project_without_tests_fails() {
    let (_dir, config) = project(&[("note.lua", NOTE)]);
    let (ok, _, err) = luka_test(&config, &[]);
    assert!(!ok);
    assert!(err.contains("no test files (named *_test.lua)"), "{err}");

    // A test file is not a function: nothing answers at its path.
    let probe = r#"test("the test file has no route", function() eq(send("/probe_test").status, 404) end)"#;
    let (_dir, config) = project(&[("note.lua", NOTE), ("probe_test.lua", probe)]);
    let (ok, out, _) = luka_test(&config, &[]);
    assert!(ok, "{out}");
}

#[test]
fn a_test_that_runs_too_long_is_stopped_and_fails() {
    let (_dir, config) = project(&[
        ("note.lua", NOTE),
        ("slow_test.lua", r#"test("spins", function() while true do end end)"#),
    ]);
    let started = std::time::Instant::now();
    let (ok, out, _) = luka_test(&config, &["--timeout", "1"]);
    assert!(!ok);
    assert!(out.contains("FAIL  spins"), "{out}");
    assert!(out.contains("did not finish within 1 s"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn paths_must_exist_and_be_test_files_and_routes_cannot_serve_tests() {
    let (_dir, config) = project(&[("note.lua", NOTE), ("note_test.lua", NOTE_TEST)]);
    let dir = config.parent().unwrap();
    let (ok, _, err) = luka_test(&config, &[dir.join("nope_test.lua").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("nope_test.lua does not exist"), "{err}");
    let (ok, _, err) = luka_test(&config, &[dir.join("functions/note.lua").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is not a test file"), "{err}");
    let (_, out, _) = luka_test(&config, &[dir.join("functions/note_test.lua").to_str().unwrap()]);
    assert_eq!(counts(&out), (1, 1), "one file given, its two tests run:\n{out}");

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[lua]\ntests = \"missing\"\n[[routes]]\npath = \"/t\"\nfunction = \"note_test.lua\"\n");
    std::fs::write(&config, text).unwrap();
    let check = Command::new(LUKA)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(err.contains("'note_test.lua' is a test file"), "{err}");
    assert!(
        !err.contains("missing"),
        "a missing tests folder is not a serving problem: {err}"
    );
}

#[test]
fn each_test_file_has_globals_of_its_own() {
    let (_dir, config) = project(&[
        ("note.lua", NOTE),
        ("a_test.lua", r#"leaked = 1 test("a", function() eq(leaked, 1) end)"#),
        ("b_test.lua", r#"test("b", function() eq(leaked, nil) end)"#),
    ]);
    let (ok, out, _) = luka_test(&config, &[]);
    assert!(ok, "{out}");
    assert_eq!(counts(&out), (2, 0));
}

/// The `---@field`s of `class` in the shipped test API annotations.
fn annotated_fields(class: &str) -> Vec<String> {
    let text = std::fs::read_to_string("functions/.luka/types/luka_test.lua").unwrap();
    let mut fields: Vec<String> = text
        .lines()
        .skip_while(|line| *line != format!("---@class {class}"))
        .skip(1)
        .map_while(|line| line.strip_prefix("---@field "))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect();
    fields.sort();
    fields
}

#[test]
fn the_test_api_annotations_name_the_fields_send_gives() {
    let shape = r#"
local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, " ")
end
test("shape", function()
  local res = send{ method = "POST", path = "/note", body = "x" }
  print("response " .. keys(res))
  print("record " .. keys(res.records[1]))
end)
"#;
    let (_dir, config) = project(&[("note.lua", NOTE), ("shape_test.lua", shape)]);
    let (ok, out, _) = luka_test(&config, &[]);
    assert!(ok, "{out}");
    let printed = |what: &str| -> Vec<String> {
        let line = out.lines().find_map(|l| l.strip_prefix(&format!("{what} "))).unwrap();
        line.split(' ').map(str::to_owned).collect()
    };
    assert_eq!(printed("response"), annotated_fields("luka.TestResponse"));
    assert_eq!(printed("record"), annotated_fields("luka.TestRecord"));
}
